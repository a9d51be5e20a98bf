// The distributed layer against the plain-loop reference: outputs, routing, drops, losses and every
// gradient, across gates, activations, capacity factors, scopes, drop policies and rank counts.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <sstream>

#include "layer_harness.h"

namespace expar::test {
namespace {

constexpr int64_t kGlobalTokens = 32;
constexpr double kTolerance = 1e-5;

struct Case {
    const char* name;
    int64_t experts;
    int top_k;
    GateKind gate;
    bool renormalize;
    double cf;
    CapacityScope scope;
    DropPolicy policy;
    Activation activation;
    bool bias;
    double skew;
};

LayerConfig make_config(const Case& c, int num_ranks) {
    LayerConfig config;
    config.num_experts = c.experts;
    config.top_k = c.top_k;
    config.gate = c.gate;
    config.renormalize = c.renormalize;
    config.capacity_factor = c.cf;
    config.capacity_scope = c.scope;
    config.drop_policy = c.policy;
    config.activation = c.activation;
    config.expert_bias = c.bias;
    config.skew = c.skew;
    config.d_model = 16;
    config.d_ff = 24;
    config.tokens_per_rank = kGlobalTokens / num_ranks;
    config.aux_loss_coef = 0.3;  // large, so errors in the loss gradients would show
    config.z_loss_coef = 0.2;
    return config;
}

class LayerVsReference : public ::testing::TestWithParam<Case> {};

TEST_P(LayerVsReference, MatchesReference) {
    int P = 1, rank = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    const Case& c = GetParam();
    const LayerConfig config = make_config(c, P);
    const uint64_t seed = 7;
    const int64_t step = 3;
    const GlobalResult got = run_distributed(config, MPI_COMM_WORLD, seed, step);
    if (rank != 0) return;

    std::vector<float> x, dy;
    make_global_inputs(config, kGlobalTokens, seed, step, &x, &dy);
    const ReferenceParams<float> params = reference_params_init<float>(config, seed);
    ReferenceResult<float> ref;
    reference_layer(config, P, seed, step, x, dy, params, &ref);

    const int64_t k = config.top_k;
    int64_t num_dropped = 0;
    for (int64_t s = 0; s < kGlobalTokens * k; ++s) {
        const int32_t want = ref.kept[s] ? static_cast<int32_t>(ref.expert[s]) : -1;
        ASSERT_EQ(got.expert[s], want) << "slot " << s;
        num_dropped += ref.routed[s] && !ref.kept[s];
    }
    for (int64_t e = 0; e < config.num_experts; ++e) {
        EXPECT_EQ(got.requested[e], ref.requested[e]) << "expert " << e;
        EXPECT_EQ(got.received[e], ref.received[e]) << "expert " << e;
    }
    EXPECT_LT(relative_error(got.weight, ref.weight), kTolerance);
    EXPECT_NEAR(got.aux, ref.aux, kTolerance * std::fabs(ref.aux));
    EXPECT_NEAR(got.z, ref.z, kTolerance * std::fabs(ref.z));
    EXPECT_LT(relative_error(got.y, ref.y), kTolerance);
    EXPECT_LT(relative_error(got.dx, ref.dx), kTolerance);
    EXPECT_LT(relative_error(got.grad.router_w, ref.grad.router_w), kTolerance);
    EXPECT_LT(relative_error(got.grad.router_noise_w, ref.grad.router_noise_w), kTolerance);
    EXPECT_LT(relative_error(got.grad.w1, ref.grad.w1), kTolerance);
    EXPECT_LT(relative_error(got.grad.w2, ref.grad.w2), kTolerance);
    EXPECT_LT(relative_error(got.grad.b1, ref.grad.b1), kTolerance);
    EXPECT_LT(relative_error(got.grad.b2, ref.grad.b2), kTolerance);
    EXPECT_LT(relative_error(got.grad.w3, ref.grad.w3), kTolerance);
    // The cases with cf <= 1 and a skewed router exist to exercise dropping: make sure they do.
    if (c.cf > 0 && c.cf <= 1.0 && c.skew >= 1.0) EXPECT_GT(num_dropped, 0);
    if (c.cf == 0) EXPECT_EQ(num_dropped, 0);
}

using G = GateKind;
using A = Activation;
constexpr CapacityScope kLocal = CapacityScope::local, kGlobal = CapacityScope::global;
constexpr DropPolicy kPos = DropPolicy::position, kProbs = DropPolicy::probs;

const Case kCases[] = {
    {"topk2_dropless_gelu", 8, 2, G::topk, false, 0.0, kLocal, kPos, A::gelu, true, 0.0},
    {"topk2_cf1_local_position", 8, 2, G::topk, false, 1.0, kLocal, kPos, A::gelu, true, 1.0},
    {"topk2_cf1_local_probs", 8, 2, G::topk, false, 1.0, kLocal, kProbs, A::relu, true, 1.0},
    {"topk2_cf1_global_position", 8, 2, G::topk, true, 1.0, kGlobal, kPos, A::silu, false, 1.0},
    {"topk2_cf1_global_probs", 8, 2, G::topk, true, 1.0, kGlobal, kProbs, A::swiglu, true, 1.0},
    {"topk3_cf05_global_probs", 4, 3, G::topk, false, 0.5, kGlobal, kProbs, A::gelu, false, 0.5},
    {"topk1_cf125_local", 4, 1, G::topk, false, 1.25, kLocal, kPos, A::swiglu, false, 1.5},
    {"switch_cf1_global", 8, 1, G::switch_top1, false, 1.0, kGlobal, kPos, A::gelu, true, 1.0},
    {"switch_dropless_global", 4, 1, G::switch_top1, false, 0.0, kGlobal, kProbs, A::relu, true, 0.0},
    {"gshard_cf1_local", 8, 2, G::gshard, false, 1.0, kLocal, kPos, A::gelu, true, 1.0},
    {"gshard_cf125_global_probs", 4, 2, G::gshard, false, 1.25, kGlobal, kProbs, A::silu, true, 0.5},
    {"noisy_topk2_cf1_local", 8, 2, G::noisy_topk, false, 1.0, kLocal, kProbs, A::gelu, true, 1.0},
    {"noisy_topk2_dropless", 4, 2, G::noisy_topk, false, 0.0, kGlobal, kPos, A::swiglu, true, 0.0},
    {"topk2_cf2_local", 8, 2, G::topk, false, 2.0, kLocal, kPos, A::gelu, true, 0.0},
};

INSTANTIATE_TEST_SUITE_P(Configs,
                         LayerVsReference,
                         ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                             return std::string(info.param.name);
                         });

}  // namespace
}  // namespace expar::test
