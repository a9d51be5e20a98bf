#include "calibrate.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <numeric>
#include <sstream>
#include <thread>

#include "check.h"
#include "dispatch_layout.h"
#include "expert_ffn.h"
#include "gate.h"
#include "rng.h"
#include "sample_stats.h"
#include "schedule.h"
#include "timer.h"
#include "token_rows.h"

namespace expar {

namespace {

// Fixed, scattered values in [−6, 6] × scale for the measurements' inputs and weights: finite, and varied
// enough that the router's top-k differs from token to token.
std::vector<float> filled(int64_t size, float scale) {
    std::vector<float> v(size);
    for (int64_t i = 0; i < size; ++i) v[i] = scale * static_cast<float>((i * 7919) % 13 - 6);
    return v;
}

// A barrier that sleeps instead of spinning: ranks outnumber cores when nodes are emulated, and a
// spinning bystander would steal the core of a rank being timed.
void quiet_barrier(MPI_Comm comm) {
    MPI_Request request;
    MPI_CHECK(MPI_Ibarrier(comm, &request));
    int done = 0;
    for (;;) {
        MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
        if (done) return;
        std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
}

// The timed repetitions of a compute measurement start together on every rank of `start` (after each
// rank's untimed warm-up; MPI_COMM_NULL: this rank alone), and a rank's rate is its work over the time
// from that common start to its own end. Not the median repetition: where ranks outnumber cores the
// operating system runs short work whole, one rank after another, so a rank's repetitions, even all of
// them, can each see a core to itself; what it waited for its turn lies between them or before them.
class CommonStartClock {
   public:
    explicit CommonStartClock(MPI_Comm start) : start_(start) {}
    void begin() {
        if (start_ != MPI_COMM_NULL) quiet_barrier(start_);
        begin_s_ = now_s();
    }
    double elapsed_s() const { return now_s() - begin_s_; }

   private:
    MPI_Comm start_;
    double begin_s_ = 0;
};

std::vector<int64_t> size_sweep(int64_t min_bytes, int64_t max_bytes, int64_t factor) {
    std::vector<int64_t> sizes;
    for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= factor) {
        sizes.push_back(bytes);
        if (bytes > max_bytes / factor) break;
    }
    return sizes;
}

// Rank `a` and rank `b` exchange messages of each size; every other rank waits quietly. Rank a's
// result holds the one-way times (half the round trip), median over repetitions.
std::vector<PingPongPoint> pingpong(
    MPI_Comm comm, int me, int a, int b, const CalibrateOptions& o, std::vector<char>& buffer) {
    std::vector<PingPongPoint> points;
    std::vector<double> rep_s(o.repetitions);
    for (int64_t bytes : size_sweep(o.min_bytes, o.max_bytes, o.step_factor)) {
        const int count = static_cast<int>(bytes);
        if (me == a || me == b) {
            const int peer = me == a ? b : a;
            auto round_trip = [&]() {
                if (me == a) {
                    MPI_CHECK(MPI_Send(buffer.data(), count, MPI_BYTE, peer, 7, comm));
                    MPI_CHECK(MPI_Recv(buffer.data(), count, MPI_BYTE, peer, 7, comm, MPI_STATUS_IGNORE));
                } else {
                    MPI_CHECK(MPI_Recv(buffer.data(), count, MPI_BYTE, peer, 7, comm, MPI_STATUS_IGNORE));
                    MPI_CHECK(MPI_Send(buffer.data(), count, MPI_BYTE, peer, 7, comm));
                }
            };
            for (int i = 0; i < 2; ++i) round_trip();  // warm-up: connection set-up, page faults
            for (int64_t rep = 0; rep < o.repetitions; ++rep) {
                const double t0 = now_s();
                for (int64_t i = 0; i < o.pingpong_iters; ++i) round_trip();
                rep_s[rep] = (now_s() - t0) / (2.0 * static_cast<double>(o.pingpong_iters));
            }
            points.push_back({static_cast<double>(bytes), median(rep_s) * 1e6});
        }
        quiet_barrier(comm);
    }
    return points;
}

// One pass of a rank's expert work as the layer runs it: a block of rows (gemm_tokens unless given) through
// each local expert's forward and backward, copied out of the receive buffer first (weights and
// activations apart).
class ExpertBlocks {
   public:
    ExpertBlocks(const CalibrateOptions& o, int64_t num_local_experts)
        : ExpertBlocks(o, num_local_experts, o.gemm_tokens) {}
    ExpertBlocks(const CalibrateOptions& o, int64_t num_local_experts, int64_t rows_per_expert)
        : n_(rows_per_expert),
          d_(o.d_model),
          gated_(has_gate_matrix(o.activation)),
          shape_{o.d_model, o.d_ff, o.activation},
          experts_(num_local_experts) {
        const int64_t n = n_, d = d_, f = o.d_ff;
        for (Expert& e : experts_) {
            e.w1 = filled(d * f, 0.01f), e.w2 = filled(f * d, 0.01f),
            e.w3 = filled(gated_ ? d * f : 0, 0.01f);
            e.in = filled(n * d, 0.1f), e.x.resize(n * d), e.dy = filled(n * d, 0.1f), e.y.resize(n * d),
            e.dx.resize(n * d);
            e.b1 = filled(f, 0.01f), e.b2 = filled(d, 0.01f), e.db1.resize(f), e.db2.resize(d);
            e.h.resize(n * f), e.g.resize(gated_ ? n * f : 0), e.a.resize(n * f), e.dh.resize(n * f);
            e.dw1.resize(d * f), e.dw2.resize(f * d), e.dw3.resize(gated_ ? d * f : 0);
        }
    }
    double flops() const {  // forward + backward (3x the forward) of one pass
        return 3.0 * static_cast<double>(experts_.size()) * expert_ffn_forward_flops(n_, shape_);
    }
    void pass() {
        for (Expert& e : experts_) {
            // The layer's experts have biases, and its blocks first copy their rows out of the receive
            // buffer (kept for the backward): both are in a block's time.
            const ExpertWeights weights{e.w1.data(), e.b1.data(), e.w2.data(), e.b2.data(),
                                        gated_ ? e.w3.data() : nullptr};
            const ExpertGrads grads{e.dw1.data(), e.db1.data(), e.dw2.data(), e.db2.data(),
                                    gated_ ? e.dw3.data() : nullptr};
            const ExpertActivations acts{e.h.data(), gated_ ? e.g.data() : nullptr, e.a.data(), e.dh.data()};
            std::memcpy(e.x.data(), e.in.data(), sizeof(float) * n_ * d_);
            expert_ffn_forward(e.y.data(), acts, e.x.data(), weights, n_, shape_);
            expert_ffn_backward(e.dx.data(), grads, e.dy.data(), e.x.data(), acts, weights, n_, shape_);
        }
    }

    // Leaves the caches as the layer's expert phase does: its weights and inputs read, its activations,
    // outputs and gradients written (dirty lines, which whatever runs next must write back). Clobbers
    // those buffers: for the step stand-in (step_footprint), never before a timed pass.
    void touch() {
        float sum = 0;
        for (Expert& e : experts_) {
            for (const std::vector<float>* v : {&e.w1, &e.b1, &e.w2, &e.b2, &e.w3, &e.in, &e.dy})
                for (float value : *v) sum += value;
            for (std::vector<float>* v :
                 {&e.x, &e.y, &e.dx, &e.h, &e.g, &e.a, &e.dh, &e.dw1, &e.db1, &e.dw2, &e.db2, &e.dw3})
                std::fill(v->begin(), v->end(), 0.0f);
        }
        sink_ = sink_ + sum;
    }

   private:
    struct Expert {
        std::vector<float> w1, b1, w2, b2, w3, in, x, dy, y, dx, h, g, a, dh, dw1, db1, dw2, db2, dw3;
    };
    volatile float sink_ = 0;
    int64_t n_, d_;
    bool gated_;
    ExpertShape shape_;
    std::vector<Expert> experts_;
};

}  // namespace

StepFootprintShape step_footprint_shape(const CalibrateOptions& o, int64_t num_local_experts) {
    EXPAR_REQUIRE(num_local_experts >= 1, "step_footprint_shape: no local experts");
    constexpr int64_t kMaxBytes = int64_t{256} << 20, kFloat = sizeof(float);
    const int64_t d = o.d_model, f = o.d_ff, weight_matrices = has_gate_matrix(o.activation) ? 3 : 2;
    // ExpertBlocks' buffers: per row in, x, dy, y, dx (d each) and h, a, dh (+ g) (f each); per expert the
    // weight matrices and biases and their gradients.
    const int64_t row_bytes = kFloat * (5 * d + (weight_matrices + 1) * f);
    const int64_t expert_bytes = kFloat * 2 * (weight_matrices * d * f + f + d);
    StepFootprintShape shape;
    shape.num_experts = std::clamp<int64_t>(kMaxBytes / 2 / expert_bytes, 1, num_local_experts);
    const int64_t step_rows = o.gate_tokens * o.top_k;
    const int64_t max_rows = std::max<int64_t>(0, kMaxBytes - shape.num_experts * expert_bytes) / row_bytes;
    shape.rows_per_expert =
        std::max<int64_t>(1, step_rows <= max_rows ? (step_rows + shape.num_experts - 1) / shape.num_experts
                                                   : max_rows / shape.num_experts);
    return shape;
}

namespace {

// The step stand-in: what a layer step's other phases leave in the caches (touch()), the expert phase's
// buffers for every row a rank receives in a step. From warm caches the router ran 1.5-2.1x and the
// all-to-all 1.4-1.7x faster than in `expar layer` (docs/simulator.md, Calibration).
ExpertBlocks step_footprint(const CalibrateOptions& o, int64_t num_local_experts) {
    const StepFootprintShape shape = step_footprint_shape(o, num_local_experts);
    return ExpertBlocks(o, shape.num_experts, shape.rows_per_expert);
}

// Each timed all-to-all starts as the layer's do: the caches left by the rest of a step (step_footprint) and
// the send buffer just written (by the pack or the expert blocks).
std::vector<AlltoallPoint> alltoall_sweep(MpiComm& comm,
                                          const NodeMap& map,
                                          const CalibrateOptions& o,
                                          int64_t num_local_experts) {
    const int P = comm.size();
    constexpr int64_t kRowFloats = 64;  // 256-byte rows, so the smallest sizes are whole rows
    const int64_t row_bytes = kRowFloats * 4;
    const std::vector<int64_t> sizes = size_sweep(o.a2a_min_bytes, o.a2a_max_bytes, o.step_factor);
    const int64_t max_rows_per_peer = (sizes.back() + row_bytes - 1) / row_bytes;
    TokenExchange exchange(ScheduleKind::plain, comm, map, 1, P * max_rows_per_peer, P * max_rows_per_peer,
                           kRowFloats);
    std::vector<float> send(P * max_rows_per_peer * kRowFloats, 1.0f), recv(send.size(), 0.0f);
    std::vector<int64_t> rows(P * P);
    std::vector<double> iteration_s(o.a2a_iters);
    std::vector<AlltoallPoint> points;
    ExpertBlocks footprint = step_footprint(o, num_local_experts);
    for (int64_t bytes : sizes) {
        const int64_t rows_per_peer = std::max<int64_t>(1, bytes / row_bytes);
        std::fill(rows.begin(), rows.end(), rows_per_peer);
        for (int i = 0; i < 2; ++i) exchange.alltoallv(send.data(), recv.data(), rows.data(), false);
        for (int64_t i = 0; i < o.a2a_iters; ++i) {
            footprint.touch();
            std::fill(send.begin(), send.begin() + P * rows_per_peer * kRowFloats, static_cast<float>(i));
            comm.barrier();
            const double t0 = now_s();
            exchange.alltoallv(send.data(), recv.data(), rows.data(), false);
            iteration_s[i] = now_s() - t0;
        }
        comm.allreduce_max_f64(iteration_s.data(), o.a2a_iters);
        AlltoallPoint point;
        point.bytes_per_peer = static_cast<double>(rows_per_peer * row_bytes);
        point.time_us = median(iteration_s) * 1e6;
        point.busbw_GBps = (P - 1) * point.bytes_per_peer / (point.time_us * 1e-6) / 1e9;
        points.push_back(point);
    }
    return points;
}

// The expert FFN forward + backward on the real shapes (ExpertBlocks). Returns GFLOP/s.
double gemm_rate(const CalibrateOptions& o, int64_t num_local_experts, MPI_Comm start) {
    ExpertBlocks blocks(o, num_local_experts);
    CommonStartClock clock(start);
    for (int64_t rep = -1; rep < o.repetitions; ++rep) {  // rep -1: untimed warm-up
        if (rep == 0) clock.begin();
        blocks.pass();
    }
    return blocks.flops() * static_cast<double>(o.repetitions) / clock.elapsed_s() / 1e9;
}

// The layer's rows per peer in exchange_wait_us's all-to-all: gate_tokens · top_k / P, at least 1.
int64_t exchange_wait_rows_per_peer(const CalibrateOptions& o, int num_ranks) {
    return std::max<int64_t>(1, o.gate_tokens * o.top_k / num_ranks);
}

// What an exchange that follows compute costs beyond the same exchange after a barrier, as in a layer
// step: every rank runs its expert phase (one ExpertBlocks pass per source rank) and then a plain
// all-to-all of the layer's rows (gate_tokens · top_k / P per peer, d_model floats each). Where ranks
// outnumber cores they finish their compute late and in turns, and the exchange waits for them to be run
// again. Returns max(0, median over iterations of (slowest rank's compute + exchange − slowest rank's
// compute) − median of the exchange alone) [us]; about 0 where every rank has a core.
double exchange_wait_us(MpiComm& comm, const NodeMap& map, const CalibrateOptions& o, int64_t num_local) {
    const int P = comm.size();
    ExpertBlocks blocks(o, num_local);
    const int64_t d = o.d_model;
    const int64_t rows_per_peer = exchange_wait_rows_per_peer(o, P);
    TokenExchange exchange(ScheduleKind::plain, comm, map, 1, P * rows_per_peer, P * rows_per_peer, d);
    std::vector<float> send(P * rows_per_peer * d, 1.0f), recv(send.size(), 0.0f);
    std::vector<int64_t> rows(static_cast<size_t>(P) * P, rows_per_peer);
    constexpr int kIters = 6;
    std::vector<double> after_compute_s, alone_s;
    // Both exchanges start from a step's caches with their send buffer just written (as alltoall_sweep's),
    // so the difference is the waiting alone. After the compute the send buffer is written as the layer's
    // expert blocks write their outputs, in place in the buffer the exchange sends: part of the compute.
    ExpertBlocks footprint = step_footprint(o, num_local);
    auto write_send = [&](int i) { std::fill(send.begin(), send.end(), static_cast<float>(i)); };
    for (int i = -1; i < kIters; ++i) {  // i -1: untimed warm-up
        footprint.touch();
        quiet_barrier(comm.handle());
        const double t0 = now_s();
        for (int src = 0; src < P; ++src) blocks.pass();
        write_send(i);
        double times[2] = {now_s() - t0, 0};  // compute, compute + exchange
        exchange.alltoallv(send.data(), recv.data(), rows.data(), false);
        times[1] = now_s() - t0;
        comm.allreduce_max_f64(times, 2);
        footprint.touch();
        write_send(i);
        quiet_barrier(comm.handle());
        const double t1 = now_s();
        exchange.alltoallv(send.data(), recv.data(), rows.data(), false);
        double alone = now_s() - t1;
        comm.allreduce_max_f64(&alone, 1);
        if (i >= 0) {
            after_compute_s.push_back(times[1] - times[0]);
            alone_s.push_back(alone);
        }
    }
    return std::max(0.0, median(after_compute_s) - median(alone_s)) * 1e6;
}

// The layer's router on the real shapes: its route (input check, gate_forward) and gate_backward of the
// top-k gate on gate_tokens tokens. Returns the router FLOP rates {forward, backward} [GFLOP/s] (2·T·d·E and
// 4·T·d·E FLOPs): with few experts the softmax, top-k and loss terms, not the thin GEMM, set the time.
// In a layer step other work pushes the router's data out of the caches between its calls (the expert phase
// before the backward gate; the backward phases, the update and the next inputs before the next route), so
// each half starts after a stand-in for a step's caches (step_footprint, untimed): back to back, the halves
// ran 1.5-2.1x faster than in `expar layer` at 1 rank (docs/simulator.md).
std::pair<double, double> router_rates(const CalibrateOptions& o, int64_t num_local_experts, MPI_Comm start) {
    const int64_t T = o.gate_tokens, d = o.d_model, E = o.num_experts, k = o.top_k;
    LayerConfig config;
    config.num_experts = E;
    config.top_k = static_cast<int>(k);
    config.d_model = d;
    config.d_ff = o.d_ff;
    config.activation = o.activation;
    config.tokens_per_rank = T;
    std::vector<float> x = filled(T * d, 0.1f), router_w = filled(d * E, 0.02f), bias(E, 0.0f);
    std::vector<float> logits(T * E), probs(T * E), lse(T), selection(T * E), weight(T * k),
        node_scratch(1 + E);
    std::vector<float> dweight = filled(T * k, 0.01f), dx(T * d), d_router_w(d * E), dlogits(T * E),
                       dscratch(T * E);
    std::vector<int32_t> expert(T * k);
    std::vector<uint8_t> routed(T * k);
    std::vector<int64_t> order(T * k), requested(E);
    std::vector<double> prob_sum(E), aux_dprob(E, config.aux_loss_coef / T);
    const GateState state{logits.data(),    probs.data(),  lse.data(),         nullptr,
                          nullptr,          expert.data(), weight.data(),      routed.data(),
                          selection.data(), order.data(),  node_scratch.data()};
    GateInputs in{};
    in.x = x.data();
    in.router_w = router_w.data();
    in.router_bias = bias.data();
    in.num_tokens = T;
    in.seed = 1;
    const GateLossGrads loss{aux_dprob.data(), config.z_loss_coef * 2.0 / static_cast<double>(T)};
    ExpertBlocks footprint = step_footprint(o, num_local_experts);
    // The rank's own time in each half and in the stand-ins, to split the common-start time.
    double forward_s = 0, backward_s = 0, other_s = 0;
    CommonStartClock clock(start);
    for (int64_t rep = -1; rep < o.repetitions; ++rep) {  // rep -1: untimed warm-up
        if (rep == 0) clock.begin();
        std::fill(prob_sum.begin(), prob_sum.end(), 0.0);
        std::fill(requested.begin(), requested.end(), 0);
        GatePartialSums sums{prob_sum.data(), requested.data()};
        const double t_touch0 = now_s();
        footprint.touch();
        const double t0 = now_s();
        int64_t num_nonfinite = 0;  // the layer's route checks its input first (moe_layer.cpp)
        for (int64_t i = 0; i < T * d; ++i) num_nonfinite += !std::isfinite(x[i]);
        EXPAR_ASSERT(num_nonfinite == 0);
        gate_forward(state, &sums, in, config);
        const double t1 = now_s();
        footprint.touch();
        const double t2 = now_s();
        gate_backward(dx.data(), d_router_w.data(), nullptr, dlogits.data(), dscratch.data(), dweight.data(),
                      state, in, loss, config);
        if (rep >= 0) {
            forward_s += t1 - t0;
            backward_s += now_s() - t2;
            other_s += (t0 - t_touch0) + (t2 - t1);
        }
    }
    const double elapsed_s = clock.elapsed_s(), own_s = forward_s + backward_s + other_s;
    const double router_flops = 2.0 * static_cast<double>(T * d * E) * static_cast<double>(o.repetitions);
    return {router_flops / (elapsed_s * forward_s / own_s) / 1e9,
            2 * router_flops / (elapsed_s * backward_s / own_s) / 1e9};
}

}  // namespace

int64_t row_work_rows(const CalibrateOptions& o) {
    // The layer's rows of a step (T·k), even (k = 2 rows a token): on gemm_tokens rows (one block's) the
    // buffers sat in the L2 cache and the rate came out 2.2x that on the layer's 8,192 rows (T 4,096, k 2,
    // d 256, 1 rank).
    const int64_t rows = o.gate_tokens * o.top_k;
    return std::max<int64_t>(2, rows - rows % 2);
}

namespace {

// A step's rows as the layer lays them out, by its own planner (dispatch_layout.h): T tokens, each sent
// to k = 2 distinct experts of E drawn at random, nothing dropped, on one rank. Rows are expert-major, so
// the pack reads x and the combine reads the returned rows in the scattered order a step does.
DispatchLayout row_work_layout(const CalibrateOptions& o, int64_t T) {
    const int k = 2;
    const int64_t E = std::max<int64_t>(o.num_experts, k);
    std::vector<int32_t> expert(T * k);
    std::vector<float> weight(T * k, 0.5f);
    std::vector<uint8_t> routed(T * k, 1);
    for (int64_t t = 0; t < T; ++t) {
        const int64_t first = static_cast<int64_t>(rng_bits(1, kStreamCalibrateRouting, 2 * t) % E);
        const int64_t other = static_cast<int64_t>(rng_bits(1, kStreamCalibrateRouting, 2 * t + 1) % (E - 1));
        expert[t * k] = static_cast<int32_t>(first);
        expert[t * k + 1] = static_cast<int32_t>((first + 1 + other) % E);
    }
    LayerConfig config;
    config.num_experts = E;
    config.top_k = k;
    config.tokens_per_rank = T;
    config.capacity_factor = 0;  // dropless: every slot is a row
    DispatchLayout layout;
    layout.resize(1, E, 0, T, k);
    for (int32_t e : expert) ++layout.requested[e];
    const SlotRouting routing{expert.data(), weight.data(), routed.data(), T, k};
    plan_expert_order(&layout, routing);
    plan_counts(&layout, config, nullptr);
    plan_rows(&layout, routing, config.drop_policy);
    return layout;
}

// The layer's own row loops (token_rows.h) on that layout: pack (gather rows into the send buffer),
// combine (a weighted sum of k returned rows per token), combine backward (dot product with dy, write
// w·dy) and the pack's backward (sum of k returned rows). Returns bytes read + written per second, 9 row
// passes per row. In a step each loop runs between other phases, so each starts after a stand-in for a
// step's caches (step_footprint), untimed: its time is taken out by the rank's own-time share, as in
// router_rates.
double row_work_rate(const CalibrateOptions& o, int64_t num_local_experts, MPI_Comm start) {
    const int64_t n = row_work_rows(o), d = o.d_model, k = 2, T = n / k;
    std::vector<float> x(T * d, 0.5f), send(n * d), recv(n * d, 0.25f), y(T * d), dy(T * d, 0.1f);
    std::vector<float> weight(n, 0.5f), dweight(n);
    const DispatchLayout layout = row_work_layout(o, T);
    const int64_t* send_slot = layout.send_slot.data();
    const int64_t* slot_row = layout.slot_row.data();
    ExpertBlocks footprint = step_footprint(o, num_local_experts);
    volatile double sink = 0;
    volatile float read_sink = 0;    // keeps the untimed read of just_read
    double work_s = 0, other_s = 0;  // this rank's own time in the loops and in the stand-ins
    double loop_start_s = 0;
    // Untimed, before each loop: the step stand-in, then what the step's phase just before the loop leaves
    // in the caches: the route reads x before the pack; the return exchange writes the rows that the
    // combine (recv) and dx (send) read; the combine backward reads dy and the forward's rows, both cold.
    auto stand_in = [&](std::vector<float>* just_read, std::vector<float>* just_written) {
        const double t0 = now_s();
        footprint.touch();
        if (just_read) read_sink = read_sink + std::accumulate(just_read->begin(), just_read->end(), 0.0f);
        if (just_written) std::fill(just_written->begin(), just_written->end(), 0.25f);
        loop_start_s = now_s();
        other_s += loop_start_s - t0;
    };
    auto end_timed_loop = [&] { work_s += now_s() - loop_start_s; };
    CommonStartClock clock(start);
    for (int64_t rep = -1; rep < o.repetitions; ++rep) {  // rep -1: untimed warm-up
        if (rep == 0) {
            clock.begin();
            work_s = other_s = 0;
        }
        stand_in(&x, nullptr);
        dispatch_pack(send.data(), x.data(), send_slot, n, k, d);
        end_timed_loop();
        stand_in(nullptr, &recv);
        combine_forward(y.data(), recv.data(), slot_row, weight.data(), T, k, d);
        end_timed_loop();
        stand_in(nullptr, nullptr);
        combine_backward(send.data(), dweight.data(), dy.data(), recv.data(), slot_row, weight.data(), T, k,
                         d);
        end_timed_loop();
        stand_in(nullptr, &send);
        dispatch_pack_backward(y.data(), send.data(), slot_row, T, k, d);
        end_timed_loop();
        sink = sink + dweight[0] + y[0];
    }
    const double work_elapsed_s = clock.elapsed_s() * work_s / (work_s + other_s);
    return 9.0 * n * d * sizeof(float) * o.repetitions / work_elapsed_s / 1e9;
}

// Spins for `seconds` (a compute phase that makes no MPI call).
void busy_wait(double seconds) {
    const double end = now_s() + seconds;
    volatile double x = 1;
    while (now_s() < end)
        for (int i = 0; i < 1000; ++i) x = x * 1.0000001;
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return text;
}

std::string host_name() {
    char name[256] = {0};
    if (gethostname(name, sizeof name - 1) != 0) return "unknown-host";
    return name;
}

std::string fmt(const char* format, double value) {
    char text[64];
    std::snprintf(text, sizeof text, format, value);
    return text;
}

// A YAML double-quoted scalar.
std::string quoted(const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

std::string size_text(double bytes) {
    return fmt("%.0f", bytes) + " B";
}

std::string link_yaml(const AlphaBetaFit& fit) {
    return "{bandwidth: " + fmt("%.6g", fit.bandwidth_GBps) +
           " GB/s, latency: " + fmt("%.6g", fit.latency_us) + " us}";
}

std::string fit_comment(const std::vector<PingPongPoint>& points,
                        const AlphaBetaFit& fit,
                        int peer,
                        bool same_node) {
    std::ostringstream out;
    out << "# ping-pong rank 0 <-> rank " << peer << (same_node ? " (same node)" : " (other node)") << ", "
        << points.size() << " sizes " << size_text(points.front().bytes) << " .. "
        << size_text(points.back().bytes) << ": R^2 " << fmt("%.4f", fit.r_squared) << ", max residual "
        << fmt("%.1f", 100 * fit.max_rel_residual) << "%";
    return out.str();
}

}  // namespace

AlphaBetaFit fit_alpha_beta(const std::vector<PingPongPoint>& points) {
    EXPAR_ASSERT(points.size() >= 2);
    // Weighted least squares with w = 1/t²: minimises Σ w (t − α − βm)².
    double sw = 0, sm = 0, st = 0, smm = 0, smt = 0;
    for (const PingPongPoint& p : points) {
        const double w = 1.0 / (p.time_us * p.time_us);
        sw += w;
        sm += w * p.bytes;
        st += w * p.time_us;
        smm += w * p.bytes * p.bytes;
        smt += w * p.bytes * p.time_us;
    }
    const double det = sw * smm - sm * sm;
    double beta = det > 0 ? (sw * smt - sm * st) / det : 0;  // us per byte
    double alpha = det > 0 ? (st - beta * sm) / sw : 0;
    if (alpha < 0) {  // refit through the origin: a latency cannot be negative
        alpha = 0;
        beta = smt / smm;
    }
    if (!(beta > 0)) {
        // Times that do not grow with size (noise above the transfer time, short sweeps): the data bound
        // the bandwidth from below only. Take that bound, the largest message's size over its time, and
        // the latency that best fits the rest.
        const PingPongPoint& largest = *std::max_element(
            points.begin(), points.end(),
            [](const PingPongPoint& a, const PingPongPoint& b) { return a.bytes < b.bytes; });
        beta = largest.time_us / largest.bytes;
        alpha = std::max(0.0, (st - beta * sm) / sw);
    }
    AlphaBetaFit fit;
    fit.latency_us = alpha;
    fit.bandwidth_GBps = beta > 0 ? 1.0 / beta / 1e3 : 0;  // bytes/us → GB/s
    const double mean = st / sw;
    double ss_res = 0, ss_tot = 0;
    for (const PingPongPoint& p : points) {
        const double w = 1.0 / (p.time_us * p.time_us);
        const double predicted = alpha + beta * p.bytes;
        ss_res += w * (p.time_us - predicted) * (p.time_us - predicted);
        ss_tot += w * (p.time_us - mean) * (p.time_us - mean);
        fit.max_rel_residual = std::max(fit.max_rel_residual, std::fabs(p.time_us - predicted) / p.time_us);
    }
    fit.r_squared = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 1.0;
    return fit;
}

CalibrationResult calibrate_measure(MpiComm& comm, const NodeMap& map, const CalibrateOptions& o) {
    const int P = comm.size(), me = comm.rank();
    const int64_t num_local = std::max<int64_t>(1, o.num_experts / P);  // the layer's experts per rank
    CalibrationResult result;
    result.options = o;
    result.when = utc_now();
    result.host = host_name();
    result.num_ranks = P;
    result.num_nodes = map.num_nodes;
    result.ranks_per_node = map.ranks_per_node;
    result.emulated = map.emulated;
    result.peak_gflops = o.peak_gflops;
    {
        // The ranks on rank 0's host (shared memory, not the emulated nodes) and the cores they may run on.
        MPI_Comm host;
        MPI_CHECK(MPI_Comm_split_type(comm.handle(), MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &host));
        MPI_CHECK(MPI_Comm_size(host, &result.ranks_per_host));
        MPI_CHECK(MPI_Comm_free(&host));
        cpu_set_t cpus;
        CPU_ZERO(&cpus);
        result.cores_per_host = sched_getaffinity(0, sizeof cpus, &cpus) == 0
                                    ? CPU_COUNT(&cpus)
                                    : static_cast<int>(std::thread::hardware_concurrency());
    }

    // Point-to-point: rank 0 with a rank of its own node, then with the first rank of node 1.
    std::vector<char> buffer(std::max<int64_t>(o.max_bytes, 1), 1);
    if (map.ranks_per_node > 1) {
        result.intra_peer = map.rank_at(map.node_of_rank[0], 1);
        result.intra_points = pingpong(comm.handle(), me, 0, result.intra_peer, o, buffer);
        if (me == 0) result.intra = fit_alpha_beta(result.intra_points);
    }
    if (map.num_nodes > 1) {
        result.inter_peer = map.rank_at(map.node_of_rank[0] == 0 ? 1 : 0, 0);
        result.inter_points = pingpong(comm.handle(), me, 0, result.inter_peer, o, buffer);
        if (me == 0) result.inter = fit_alpha_beta(result.inter_points);
    }

    // All-to-all efficiency against the slower link class it crosses (as fitted on rank 0).
    if (P > 1) {
        double reference = 0;
        if (me == 0) {
            reference = result.intra ? result.intra->bandwidth_GBps : 1e300;
            if (result.inter) reference = std::min(reference, result.inter->bandwidth_GBps);
        }
        result.alltoall = alltoall_sweep(comm, map, o, num_local);
        result.alltoall_reference_GBps = reference;
        if (me == 0)
            for (AlltoallPoint& point : result.alltoall) point.efficiency = point.busbw_GBps / reference;
    }

    // Async progress: a large message posted, then waited for at once (the transfer time here) or after a
    // compute phase of twice that (what is left to wait: about all of it without async progress).
    const int peer = map.ranks_per_node > 1 ? result.intra_peer : result.inter_peer;  // set on every rank
    if (P > 1) {
        std::vector<double> transfers, waits;
        for (int64_t rep = 0; rep < 2 * o.repetitions; ++rep) {
            quiet_barrier(comm.handle());
            if (me != 0 && me != peer) continue;
            const bool compute = rep % 2 == 1;
            MPI_Request request;
            const double t0 = now_s();
            if (me == 0)
                MPI_CHECK(MPI_Isend(buffer.data(), static_cast<int>(o.max_bytes), MPI_CHAR, peer, 7,
                                    comm.handle(), &request));
            else
                MPI_CHECK(MPI_Irecv(buffer.data(), static_cast<int>(o.max_bytes), MPI_CHAR, 0, 7,
                                    comm.handle(), &request));
            if (compute) busy_wait(2 * median(transfers));
            const double t1 = now_s();
            MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE));
            (compute ? waits : transfers).push_back(now_s() - (compute ? t1 : t0));
        }
        quiet_barrier(comm.handle());
        if (me == 0) {
            result.progress_transfer_us = median(transfers) * 1e6;
            result.progress_wait_us = median(waits) * 1e6;
            result.async_progress = result.progress_wait_us < 0.5 * result.progress_transfer_us;
        }
    }

    // Row work: every rank at once, as in a layer step; the slowest rank.
    quiet_barrier(comm.handle());
    const double my_row_rate = row_work_rate(o, num_local, comm.handle());
    std::vector<double> row_rates(P);
    comm.gather_f64(&my_row_rate, row_rates.data(), 1, 0);
    if (me == 0) result.row_work_GBps = *std::min_element(row_rates.begin(), row_rates.end());

    // The router, every rank at once, slowest rank.
    quiet_barrier(comm.handle());
    const std::pair<double, double> my_router = router_rates(o, num_local, comm.handle());
    std::vector<double> router_fwd(P), router_bwd(P);
    comm.gather_f64(&my_router.first, router_fwd.data(), 1, 0);
    comm.gather_f64(&my_router.second, router_bwd.data(), 1, 0);
    if (me == 0) {
        result.router_forward_gflops = *std::min_element(router_fwd.begin(), router_fwd.end());
        result.router_backward_gflops = *std::min_element(router_bwd.begin(), router_bwd.end());
    }

    // GEMM: every rank at once; the slowest rank's rate is what a layer step sees.
    quiet_barrier(comm.handle());
    const double mine = gemm_rate(o, num_local, comm.handle());
    std::vector<double> rates(P);
    comm.gather_f64(&mine, rates.data(), 1, 0);
    if (me == 0) {
        result.gemm_gflops = *std::min_element(rates.begin(), rates.end());
        result.gemm_gflops_median_rank = median(rates);
    }
    // The same GEMM on rank 0 alone, the others asleep in a barrier: what a rank gets while the rest of its
    // host waits (a whole core, the host's memory bandwidth and cache to itself).
    if (P > 1) {
        quiet_barrier(comm.handle());
        if (me == 0) result.gemm_alone_gflops = gemm_rate(o, num_local, MPI_COMM_NULL);
        quiet_barrier(comm.handle());
        result.exchange_wait_us = exchange_wait_us(comm, map, o, num_local);
    }
    return result;
}

std::string calibration_yaml(const CalibrationResult& r, const std::string& measured_topology) {
    std::ostringstream out;
    out << "calibration:  # measured by expar calibrate (docs/simulator.md, \"Calibration\")\n";
    out << "  when: " << r.when << "\n";
    out << "  how: " << quoted(r.how) << "\n";
    out << "  topology: " << quoted(measured_topology) << "\n";
    if (r.intra || r.inter) {
        out << "  links:  # one-way time(m) = latency + m / bandwidth, fitted to minimise relative "
               "residuals\n";
        auto link = [&](const char* key, const AlphaBetaFit& fit, const std::vector<PingPongPoint>& points,
                        int peer, bool same_node) {
            out << "    " << fit_comment(points, fit, peer, same_node) << "\n";
            for (const PingPongPoint& p : points)
                out << "    #   " << size_text(p.bytes) << ": " << fmt("%.3f", p.time_us) << " us\n";
            out << "    " << key << ": " << link_yaml(fit) << "\n";
        };
        if (r.intra) link("intra", *r.intra, r.intra_points, r.intra_peer, true);
        if (r.inter) link("nic", *r.inter, r.inter_points, r.inter_peer, false);
    }
    if (!r.alltoall.empty()) {
        out << "  # all-to-all: MPI_Alltoallv (TokenExchange plain) over " << r.num_ranks
            << " ranks, uniform; efficiency = busbw ((P-1)*size/time) / "
            << fmt("%.4g", r.alltoall_reference_GBps)
            << " GB/s (the slower fitted link class), clamped to (0, 1]\n";
        out << "  alltoall_efficiency:  # [bytes per peer, efficiency]\n";
        for (const AlltoallPoint& p : r.alltoall) {
            const double clamped = std::min(1.0, std::max(1e-6, p.efficiency));
            out << "    - [" << size_text(p.bytes_per_peer) << ", " << fmt("%.4g", clamped) << "]  # "
                << fmt("%.2f", p.time_us) << " us, busbw " << fmt("%.4g", p.busbw_GBps) << " GB/s"
                << (p.efficiency > 1 ? ", measured efficiency " + fmt("%.3g", p.efficiency) : "") << "\n";
        }
    }
    if (r.gemm_gflops > 0) {
        const CalibrateOptions& o = r.options;
        if (r.peak_gflops > 0) {
            const double efficiency = r.gemm_gflops / r.peak_gflops;
            // Above 1 the nominal rate is not this machine's peak; written as measured, so that the
            // simulator computes at the rate it saw rather than at the nominal one.
            out << "  gemm_efficiency: " << fmt("%.4g", efficiency) << "  # " << fmt("%.4g", r.gemm_gflops)
                << " of " << fmt("%.4g", r.peak_gflops) << " GFLOP/s nominal (dense_rate.fp32)"
                << (efficiency > 1 ? ": measured above the nominal rate" : "") << "\n";
        }
        out << "  # expert FFN forward + backward (3x the forward FLOPs), d_model " << o.d_model << ", d_ff "
            << o.d_ff << ", " << to_string(o.activation) << ", " << o.gemm_tokens << " rows for each of "
            << std::max<int64_t>(1, o.num_experts / r.num_ranks)
            << " local experts, fp32 BLAS; every rank at "
            << "once, slowest of " << r.num_ranks << " (median over ranks "
            << fmt("%.4g", r.gemm_gflops_median_rank) << ")\n";
        out << "  gemm_rate: " << fmt("%.6g", r.gemm_gflops) << " GFLOP/s\n";
        if (r.gemm_alone_gflops > 0)
            out << "  # the same on rank 0 alone, the other ranks asleep\n"
                << "  gemm_rate_alone: " << fmt("%.6g", r.gemm_alone_gflops) << " GFLOP/s\n";
    }
    if (r.row_work_GBps > 0)
        out << "  # the layer's row work (pack, combine and their backward, 9 row passes per kept "
               "assignment), "
            << row_work_rows(r.options) << " rows of " << r.options.d_model
            << " floats, every rank at once, slowest\n"
            << "  row_work_bandwidth: " << fmt("%.4g", r.row_work_GBps) << " GB/s\n";
    if (r.router_forward_gflops > 0)
        out << "  # the layer's router (top-k gate: x Wr, softmax, top-k, loss terms; forward 2 T d E, "
               "backward "
               "4 T d E FLOPs), "
            << r.options.gate_tokens << " tokens, d_model " << r.options.d_model << ", E "
            << r.options.num_experts << ", k " << r.options.top_k << ", every rank at once, slowest\n"
            << "  router_rate: {forward: " << fmt("%.4g", r.router_forward_gflops)
            << " GFLOP/s, backward: " << fmt("%.4g", r.router_backward_gflops) << " GFLOP/s}\n";
    if (r.ranks_per_host > 0 && r.cores_per_host > 0)
        out << "  # ranks on rank 0's host (MPI shared-memory split) and the cores they may run on "
               "(sched_getaffinity)\n"
            << "  shared_cores: {ranks_per_host: " << r.ranks_per_host
            << ", cores_per_host: " << r.cores_per_host << "}\n";
    if (r.exchange_wait_us >= 0)
        out << "  # the expert phase (" << r.options.gemm_tokens
            << " rows per local expert per source rank), "
            << "then a plain all-to-all of " << exchange_wait_rows_per_peer(r.options, r.num_ranks)
            << " rows per peer: the exchange's time beyond the same all-to-all after a barrier\n"
            << "  exchange_wait: " << fmt("%.4g", r.exchange_wait_us) << " us\n";
    if (r.progress_wait_us >= 0)
        out << "  # a " << size_text(static_cast<double>(r.options.max_bytes)) << " message posted before "
            << fmt("%.0f", 2 * r.progress_transfer_us)
            << " us of compute: " << fmt("%.0f", r.progress_wait_us) << " us left to wait after it ("
            << fmt("%.0f", r.progress_transfer_us) << " us without compute)\n"
            << "  async_progress: " << (r.async_progress ? "true" : "false") << "\n";
    return out.str();
}

std::string topology_yaml_from_measurement(const CalibrationResult& r, const std::string& name) {
    EXPAR_REQUIRE(
        r.intra || r.inter,
        "expar calibrate measured no link (1 rank): run at least 2 ranks, or give --base FILE.yaml");
    const AlphaBetaFit intra = r.intra ? *r.intra : *r.inter;
    const AlphaBetaFit nic = r.inter ? *r.inter : *r.intra;
    std::ostringstream out;
    out << "# Written by expar calibrate on " << r.host << ", " << r.when
        << ". Every figure was measured: the\n"
        << "# nominal links are the fitted ones, and dense_rate is "
        << (r.peak_gflops > 0 ? "the --peak-gflops given" : "the measured GEMM rate (no nominal peak known)")
        << ".\n";
    out << "name: " << quoted(name) << "\n";
    out << "description: "
        << quoted("measured by expar calibrate on " + r.host + ": " + std::to_string(r.num_nodes) +
                  " node(s) x " + std::to_string(r.ranks_per_node) + " ranks" +
                  (r.emulated ? " (emulated by --ranks-per-node)" : ""))
        << "\n";
    out << "nodes: " << r.num_nodes << "\n";
    out << "devices_per_node: " << r.ranks_per_node << "\n";
    out << "nics_per_node: " << r.ranks_per_node << "  # shared memory: each rank copies for itself\n";
    out << "fabric: {intra: shared_memory, inter: single_switch}\n";
    out << "links:\n";
    out << "  intra: " << link_yaml(intra)
        << (r.intra ? "" : "  # not measured (1 rank per node): the nic fit") << "\n";
    out << "  nic: " << link_yaml(nic) << (r.inter ? "" : "  # not measured (1 node): the intra fit") << "\n";
    out << "dense_rate: {fp32: " << fmt("%.6g", r.peak_gflops > 0 ? r.peak_gflops : r.gemm_gflops)
        << " GFLOP/s}\n";
    out << calibration_yaml(r, name);
    return out.str();
}

std::string topology_yaml_with_base(const std::string& base_text,
                                    const Topology& base,
                                    const CalibrationResult& r) {
    // Drop an existing top-level calibration block: its line and the indented, blank or comment lines after
    // it.
    std::istringstream in(base_text);
    std::ostringstream out;
    std::string line;
    bool skipping = false;
    while (std::getline(in, line)) {
        if (line.rfind("calibration:", 0) == 0) {
            skipping = true;
            continue;
        }
        if (skipping && (line.empty() || line[0] == ' ' || line[0] == '#' || line[0] == '\t')) continue;
        skipping = false;
        out << line << "\n";
    }
    return out.str() + calibration_yaml(r, base.name);
}

}  // namespace expar
