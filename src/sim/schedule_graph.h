// One MoE layer step (forward, optionally backward) as a task graph with the dependency structure of
// the real code (docs/simulator.md "Schedules"): moe_layer.cpp's route → count exchange → dispatch →
// expert → combine, and its backward, through the plain, pairwise (FasterMoE smart schedule) and
// hierarchical (2DH) exchanges of schedule_*.cpp, plus shadow broadcasts and gradient reduces.
// predict_layer() simulates it and reports per-rank phases, the bound and the efficiency.
#pragma once

#include <cstdint>
#include <vector>

#include "bound.h"
#include "config.h"
#include "enum_names.h"
#include "network.h"
#include "phase.h"
#include "task_graph.h"

namespace expar {

// What one step moves and computes, as decided by the real routing code (gates, capacity, shadowing).
struct LayerWork {
    int num_ranks = 0;
    // [P, P] token rows src → dst of the dispatch exchange (DispatchLayout::rows: kept rows, shadowed
    // experts' rows excluded). Combine returns the same rows (the reverse exchange), and the backward
    // pass repeats both. Must outlive build_layer_graph().
    const int64_t* rows = nullptr;
    // Or the same matrix as int32 (half the memory: 1 GiB instead of 2 at 16,384 ranks). Exactly one of
    // rows and rows32 is set.
    const int32_t* rows32 = nullptr;
    double bytes_per_row = 0;  // d_model × bytes per element
    double flops_per_row = 0;  // expert forward FLOPs per row: expert_ffn_forward_flops(1, shape)
    // Optional [P (expert rank), P (source rank)] forward FLOPs of the block of rows `source` sends to
    // `rank`; null = rows × flops_per_row. Backward data and weight gradients cost the same again each.
    const double* block_flops = nullptr;
    double route_flops = 0;   // per rank, forward (router GEMM, top-k); the backward costs twice that
    double router_flops = 0;  // of which the router's (2·T·d·E): timed at Network::router_flops_per_s()
    double count_bytes = 0;   // per rank in the count all-gather (P·E int64 counts: E·8)
    // Shadowing: the owner rank of each shadowed expert, one expert's parameter bytes (broadcast before,
    // its gradient reduced to the owner after), and the rows each rank computes itself on them [P].
    std::vector<int> shadow_owner;
    double expert_param_bytes = 0;
    const int64_t* shadow_rows = nullptr;
    bool backward = true;
};

// none: one message per (source, destination) pair per exchange stage: exact, O(P²) flows.
// node_pair: inter-node messages of one exchange (stage) between two nodes become one bundle flow with
// per-link shares (task_graph.h); pairwise stages are followed per group instead of per rank.
// automatic: none up to 64 ranks, node_pair above.
enum class Aggregation { automatic, none, node_pair };
inline const auto& enum_names(Aggregation) {
    static constexpr EnumName<Aggregation> names[] = {
        {Aggregation::automatic, "auto", "node-pair bundles above 64 ranks"},
        {Aggregation::none, "none", "every message a flow: exact"},
        {Aggregation::node_pair, "node-pair"}};
    return names;
}

struct ScheduleSpec {
    ScheduleKind kind = ScheduleKind::plain;
    int group_size = 1;  // pairwise: ranks per group (moe_layer's --group-size)
    Aggregation aggregation = Aggregation::automatic;
};

// The graph and, per rank, the tasks that mark its phase boundaries.
struct LayerGraph {
    TaskGraph graph;
    bool aggregated = false;
    int num_ranks = 0;
    // [P] per rank: gate done (after the count exchange), end of the forward exchange–compute–exchange,
    // start and end of the backward one, weight gradients (and shadow reduces) done, the rank's end.
    std::vector<int32_t> fwd_route_end, fwd_run_end, bwd_run_begin, bwd_run_end, bwd_weights_end, rank_end;
    // [P] the last expert compute of each run (a group's compute under aggregated pairwise).
    std::vector<int32_t> fwd_last_compute, bwd_last_compute;
    // [P] expert compute FLOPs inside each run (for per-rank compute time when pairwise is aggregated).
    std::vector<double> fwd_expert_flops, bwd_expert_flops;
    std::vector<double> rank_flops;  // [P] every FLOP of the step on each rank (the bound's compute term)
};

// Throws (all ranks) on inconsistent work (null rows, wrong sizes, negative rows) or a bad group size.
LayerGraph build_layer_graph(const Network& network, const LayerWork& work, const ScheduleSpec& spec);

struct LayerPrediction {
    double step_s = 0;                       // the last rank's end
    std::vector<double> rank_end_s;          // [P]
    std::vector<double> phase_s;             // [P, kNumSimPhases] seconds per rank and phase (sum = rank end)
    double max_phase_s[kNumSimPhases] = {};  // over ranks
    LowerBound bound;
    double efficiency = 0;  // bound.total_s / step_s
    bool aggregated = false;
    int64_t num_tasks = 0;
    SimResult sim;
};

LayerPrediction predict_layer(const Network& network,
                              const LayerWork& work,
                              const ScheduleSpec& spec,
                              const SimOptions& options = {});

}  // namespace expar
