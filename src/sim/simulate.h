// Steps of one simulated MoE layer, end to end: each step's decisions by the real routing code
// (routing.h: the gate and the layer's plan_counts) become the timing engine's LayerWork and are predicted on
// the topology's network (schedule_graph.h). Owns the per-step results as arrays over steps; no I/O
// (`expar simulate` in src/apps/simulate_command.cpp prints and logs them; docs/simulator.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "network.h"
#include "routing.h"
#include "schedule_graph.h"
#include "topology.h"
#include "workload.h"

namespace expar {

struct SimulateSpec {
    Topology topology;               // its devices_per_node is the simulated ranks per node
    int num_ranks = 0;               // P simulated ranks
    std::string precision = "fp32";  // which dense rate of the topology computes
    NicModel nic_model = NicModel::per_port;
    Aggregation aggregation = Aggregation::automatic;
    SimOptions sim;
    // E, k, d, f, activation, T, gate, capacity, schedule, group size, routing constraints, shadowing.
    LayerConfig layer;
    Workload workload;  // the model (shared experts, layer counts) and dtype bytes; make_workload()
    RoutingSpec routing;
    int64_t num_steps = 1;
    bool backward = true;
    // Per-rank arrays (phases, counts) are kept when P <= this: they cost O(S·P·(phases + E)).
    int rank_detail_limit = 64;
};

// The bound's terms (bound.h), in this order in SimulateRun::bound_terms_s.
enum BoundTerm {
    kBoundNicSend,
    kBoundNicRecv,
    kBoundIntra,
    kBoundCore,
    kBoundCompute,
    kBoundLatency,
    kNumBoundTerms
};
inline const auto& enum_names(BoundTerm) {
    static constexpr EnumName<BoundTerm> names[] = {{kBoundNicSend, "nic_send"}, {kBoundNicRecv, "nic_recv"},
                                                    {kBoundIntra, "intra"},      {kBoundCore, "core"},
                                                    {kBoundCompute, "compute"},  {kBoundLatency, "latency"}};
    return names;
}

// Results of S simulated steps. Times in seconds; "assignments" = (token, expert) pairs.
struct SimulateRun {
    int num_ranks = 0;
    int64_t num_experts = 0;
    int64_t num_steps = 0;
    bool has_rank_detail = false;             // P <= rank_detail_limit
    bool aggregated = false;                  // some step ran as node-pair bundles (schedule_graph.h)
    std::vector<int64_t> step;                // [S]
    std::vector<double> phase_s;              // [S, kNumSimPhases] max over ranks
    std::vector<int64_t> phase_rank;          // [S, kNumSimPhases] the lowest rank attaining that max
    std::vector<double> step_s;               // [S] the last rank's end (predict_layer's step)
    std::vector<double> bound_s;              // [S] lower_bound().total_s
    std::vector<double> efficiency;           // [S] bound / step
    std::vector<double> bound_terms_s;        // [S, kNumBoundTerms]
    std::vector<int64_t> requested;           // [S] assignments routed, before capacity
    std::vector<int64_t> dropped;             // [S] of those, dropped by capacity
    std::vector<int64_t> redirected;          // [S] moved on-node by the topology gate
    std::vector<int64_t> shadowed;            // [S] experts shadowed
    std::vector<int64_t> capacity;            // [S] tokens per expert per scope group
    std::vector<double> link_bytes;           // [S, kNumLinkClasses] bytes the links of each class carried
    std::vector<int64_t> busiest_link_class;  // [S] LinkClass of the busiest link
    std::vector<double> busiest_link_utilisation;  // [S] its bytes / (capacity × step)
    std::vector<int64_t> num_events;               // [S] events of the flow simulation
    std::vector<double> sim_wall_s;                // [S] wall time of routing + prediction
    // When has_rank_detail:
    std::vector<double> rank_phase_s;       // [S, P, kNumSimPhases] (sum over phases = rank_end_s)
    std::vector<double> rank_end_s;         // [S, P]
    std::vector<int64_t> requested_counts;  // [S, P, E] routed by source rank to expert
    std::vector<int64_t> allowed_counts;    // [S, P, E] kept by capacity
    // Cost of the simulation itself.
    double wall_s = 0;
    int64_t peak_rss_bytes = 0;
};

// The engine's work for one step of decisions: rows, the shadow owners and rows (shadow_rows [P] is
// filled and pointed to), FLOPs and bytes from the workload. Every routed expert has the same shape, so
// a block's FLOPs are its rows × expert_forward_flops_per_token (block_flops stays null).
void layer_work_from_routing(LayerWork* work,
                             std::vector<int64_t>* shadow_rows,
                             const RoutingStep& decisions,
                             const Workload& workload,
                             bool backward);

// Simulates spec.num_steps steps in order (the router bias, if on, moves from step to step).
// Deterministic: the same spec gives the same bits (wall-time fields aside). Throws an all-ranks
// expar::Error on inconsistent input (ranks not filling nodes, E not divisible by P, ...).
SimulateRun simulate_layer_steps(const SimulateSpec& spec);

}  // namespace expar
