// The trainer as a whole: gradients of the whole MoE language model against central finite differences
// of its own global loss (LM + aux + z, at 1 and 2 ranks), the loss trace of 20 steps at P = 1, 2, 4 side by
// side on sub-communicators (the same global batch), and no heap allocation in steady-state steps.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "allocation_counter.h"
#include "data.h"
#include "mpi_world.h"
#include "trainer.h"

namespace expar::test {
namespace {

// A tiny model with an MoE block (block 1 of 2), a shared expert and a dense branch.
TrainConfig tiny_config(int64_t global_batch, int P) {
    TrainConfig c;
    c.model.vocab_size = 32;
    c.model.seq_len = 8;
    c.model.d_model = 16;
    c.model.num_heads = 2;
    c.model.num_layers = 2;
    c.model.d_ff_dense = 32;
    c.model.moe_every = 2;
    c.model.init_std = 0.2f;  // larger than GPT-2's 0.02, so every path carries a visible gradient
    c.moe.layer.num_experts = 4;
    c.moe.layer.top_k = 2;
    c.moe.layer.d_ff = 16;
    c.moe.layer.capacity_factor = 0.0;  // dropless: no routing decision depends on P
    c.moe.layer.aux_loss_coef = 0.1;    // large coefficients, so their gradients show in the check
    c.moe.layer.z_loss_coef = 0.01;
    c.moe.shared_experts = 1;
    c.moe.dense_branch_ff = 8;
    c.batch_size = global_batch / P;
    c.steps = 20;
    c.warmup_steps = 2;
    c.learning_rate = 3e-3f;
    c.seed = 7;
    return c;
}

DataOptions tiny_data() {
    DataOptions d;
    d.synthetic.vocab_size = 32;
    d.synthetic.num_sources = 2;
    d.synthetic.branching = 4;
    return d;
}

// Central differences of the global total loss for a few entries of every tensor, against the
// all-reduced analytic gradient. Expert entries are perturbed on their owner only.
//
// Tolerance: the forward runs in float, so the loss carries rounding noise of ~1e-7 relative (loss ~3.5,
// summed in double over float rows); with h = 1e-2 that adds a few 1e-6 to a difference quotient, and the
// O(h²) truncation term is of the same order for weights of size ~0.2. Measured: largest error 2.8e-5
// over ~100 entries at P = 1 and 2 (EXPAR_PRINT_ERRORS=1 prints them). The bound 1e-4 + 1e-3·|g| keeps a
// margin of 3x and fails a missing 1/P (errors ~|g|), an un-reduced router gradient or a missing aux/z
// term (coefficients 0.1 and 0.01 on O(0.1) gradients).
void check_gradients(MPI_Comm sub, int64_t global_batch) {
    MpiComm comm(sub);
    const int P = comm.size(), rank = comm.rank();
    Trainer t(tiny_config(global_batch, P), comm, nullptr);
    trainer_init_params(t);
    TokenData data(tiny_data(), t.config.model.seq_len, t.config.batch_size, rank, P, 5);
    const int64_t N = t.model.num_rows;
    std::vector<int32_t> inputs(N), targets(N);
    data.train_batch(0, inputs.data(), targets.data());
    StepResult r;
    trainer_compute_grads(t, 0, inputs.data(), targets.data(), &r);
    ASSERT_TRUE(std::isfinite(r.total_loss));
    EXPECT_GT(r.aux_loss, 0.0);
    EXPECT_GT(r.z_loss, 0.0);

    struct Probe {
        std::string name;
        float* param;
        double grad;
        bool here;  // this rank holds (and perturbs) the entry
    };
    std::vector<Probe> probes;
    for (const ParamTensor& p : t.replicated)
        for (int64_t i : {int64_t{0}, p.count / 2, p.count - 1})
            probes.push_back(Probe{p.name + "[" + std::to_string(i) + "]", p.param + i, p.grad[i], true});
    // Expert entries: every global expert's first and last entry, perturbed by its owner.
    for (const ExpertTensor& e : t.experts)
        for (int64_t g = 0; g < e.num_global; ++g)
            for (int64_t i : {int64_t{0}, e.item_count - 1}) {
                const bool here = g >= e.first_expert && g < e.first_expert + e.num_local;
                float* p = here ? e.param + (g - e.first_expert) * e.item_count + i : nullptr;
                const double grad = here ? e.grad[(g - e.first_expert) * e.item_count + i] : 0.0;
                probes.push_back(
                    Probe{e.name + "[" + std::to_string(g) + "][" + std::to_string(i) + "]", p, grad, here});
            }
    const float h = 1e-2f;
    int64_t num_checked = 0;
    double worst = 0;
    for (Probe& probe : probes) {
        auto loss_at = [&](float delta) {
            float saved = 0;
            if (probe.here) {
                saved = *probe.param;
                *probe.param = saved + delta;
            }
            StepResult s;
            trainer_compute_grads(t, 0, inputs.data(), targets.data(), &s);
            if (probe.here) *probe.param = saved;
            return s.total_loss;
        };
        const double fd = (loss_at(h) - loss_at(-h)) / (2.0 * h);
        // The analytic value lives on its owner: a max over ranks with -inf elsewhere hands it to all.
        double g = probe.here ? probe.grad : -HUGE_VAL;
        comm.allreduce_max_f64(&g, 1);
        const double error = std::fabs(fd - g);
        worst = std::max(worst, error / (1e-4 + 1e-3 * std::fabs(g)));
        if (std::getenv("EXPAR_PRINT_ERRORS") && world_rank() == 0)
            std::printf("P=%d %-28s g % .6e fd % .6e err %.2e\n", P, probe.name.c_str(), g, fd, error);
        EXPECT_LE(error, 1e-4 + 1e-3 * std::fabs(g)) << probe.name << " at P = " << P;
        ++num_checked;
    }
    EXPECT_GT(num_checked, 40);
    if (std::getenv("EXPAR_PRINT_ERRORS") && world_rank() == 0)
        std::printf("P=%d worst error / tolerance = %.3f\n", P, worst);
}

TEST(Gradients, WholeModelMatchesFiniteDifferences) {
    const int W = world_size(), rank = world_rank();
    for (int P : {1, 2}) {
        if (W % P != 0) continue;
        MPI_Comm sub;
        MPI_Comm_split(MPI_COMM_WORLD, rank / P, rank, &sub);
        check_gradients(sub, 4);
        MPI_Comm_free(&sub);
    }
}

// The loss trace of `steps` training steps on the same global batch.
std::vector<double> loss_trace(MPI_Comm sub, TrainConfig config, int64_t global_batch, int64_t steps) {
    MpiComm comm(sub);
    const int P = comm.size();
    config.batch_size = global_batch / P;
    Trainer t(config, comm, nullptr);
    trainer_init_params(t);
    TokenData data(tiny_data(), config.model.seq_len, config.batch_size, comm.rank(), P, 5);
    std::vector<int32_t> inputs(t.model.num_rows), targets(t.model.num_rows);
    std::vector<double> trace;
    for (int64_t step = 0; step < steps; ++step) {
        data.train_batch(step, inputs.data(), targets.data());
        const StepResult r = trainer_step(t, step, inputs.data(), targets.data());
        trace.push_back(r.total_loss);
    }
    return trace;
}

// Global capacity scope (drops decided on the global count matrix, in global token order) and dropless
// are independent of P; the trace may differ only by float summation order in the all-reduce.
TEST(RankCountInvariance, LossTraceOfTwentyStepsAgreesAtOneTwoAndFourRanks) {
    const int W = world_size(), rank = world_rank();
    for (double cf : {0.0, 1.0}) {
        TrainConfig c = tiny_config(8, 1);
        c.moe.layer.capacity_factor = cf;
        c.moe.layer.capacity_scope = CapacityScope::global;
        std::vector<double> baseline;
        for (int P = 1; P <= W && P <= 4; P *= 2) {
            if (W % P != 0) continue;
            MPI_Comm sub;
            MPI_Comm_split(MPI_COMM_WORLD, rank / P, rank, &sub);
            const std::vector<double> trace = loss_trace(sub, c, 8, 20);
            MPI_Comm_free(&sub);
            if (rank != 0) continue;
            if (baseline.empty()) {
                baseline = trace;
                EXPECT_LT(trace.back(), trace.front()) << "training should reduce the loss";
                continue;
            }
            for (size_t i = 0; i < trace.size(); ++i)
                EXPECT_NEAR(trace[i], baseline[i], 1e-4 * std::fabs(baseline[i]))
                    << "step " << i << " at P = " << P << ", cf " << cf;
        }
    }
}

TEST(Determinism, SameSeedGivesBitwiseIdenticalTraces) {
    TrainConfig c = tiny_config(4 * world_size(), world_size());
    c.moe.layer.capacity_factor = 1.25;  // local scope, with drops
    const std::vector<double> a = loss_trace(MPI_COMM_WORLD, c, 4 * world_size(), 5);
    const std::vector<double> b = loss_trace(MPI_COMM_WORLD, c, 4 * world_size(), 5);
    EXPECT_EQ(a, b);
}

TEST(SteadyState, NoHeapAllocationInTrainingSteps) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size();
    TrainConfig c = tiny_config(4 * P, P);
    c.moe.layer.capacity_factor = 1.0;
    c.moe.layer.capacity_scope = CapacityScope::global;
    c.moe.layer.drop_policy = DropPolicy::probs;  // the key exchange too
    c.allreduce_bucket_bytes = 1024;              // several buckets
    Trainer t(c, comm, nullptr);
    trainer_init_params(t);
    TokenData data(tiny_data(), c.model.seq_len, c.batch_size, comm.rank(), P, 5);
    std::vector<int32_t> inputs(t.model.num_rows), targets(t.model.num_rows);
    for (int64_t step = 0; step < 6; ++step) {
        data.train_batch(step, inputs.data(), targets.data());
        const AllocationCounter counter;
        trainer_step(t, step, inputs.data(), targets.data());
        if (step >= 3) EXPECT_EQ(counter.count(), 0) << "step " << step;
    }
}

}  // namespace
}  // namespace expar::test
