// The expert-parallel MoE layer over a Comm: route → count exchange → layout → dispatch → expert
// compute → combine, and the exact backward. Owns its parameters, gradients and every step buffer
// (one allocation each, sized from the layout at construction: no allocation in the step).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm.h"
#include "config.h"
#include "expert_ffn.h"
#include "gate.h"
#include "node_map.h"
#include "schedule.h"
#include "shadow_policy.h"
#include "topology.h"

namespace expar {

// Named views into one allocation; the same struct serves parameters and gradients.
// E_local = E / P experts live on this rank: global experts [rank·E_local, (rank+1)·E_local).
struct LayerTensors {
    float* router_w;        // [d, E]        replicated
    float* router_noise_w;  // [d, E]        replicated, noisy-topk only (else null)
    float* w1;              // [E_local, d, f]
    float* b1;              // [E_local, f]  (null without bias)
    float* w2;              // [E_local, f, d]
    float* b2;              // [E_local, d]  (null without bias)
    float* w3;              // [E_local, d, f] (swiglu only, else null)
};

enum Phase : int {
    kFwdRoute,
    kFwdCountExchange,
    kFwdLayout,
    kFwdDispatch,
    kFwdExpert,
    kFwdCombine,
    kBwdCombine,
    kBwdExpert,
    kBwdDispatch,
    kBwdRoute,
    kNumPhases
};
const char* phase_name(Phase phase);  // e.g. "forward/dispatch"

// What the layer knows of the machine: the node of every rank, and the cost-model rates from the
// topology file (docs/topology.md). Without one, all ranks share one node and the rates are unknown
// (0), which the topology gate and shadowing refuse.
struct LayerCluster {
    NodeMap nodes;
    double local_GBps = 0;     // intra-node bandwidth per rank, one direction [GB/s]
    double net_GBps = 0;       // inter-node bandwidth share per rank, one direction [GB/s]
    double device_gflops = 0;  // expert compute rate per rank [GFLOP/s]
};

// Rows one owner can receive in a step: every assignment of the step (P·T_local·k) in the worst case,
// and no more than its E/P experts' capacity allows (P scope groups for local, 1 for global; dropless
// has no bound below the first). MoeLayer sizes its receive buffers from this at construction.
int64_t moe_max_recv_rows(const LayerConfig& config, int num_ranks);

// A cluster of these nodes with the rates of a topology file (precision: a dense_rate key, e.g. "fp32").
LayerCluster cluster_with_topology_rates(NodeMap nodes,
                                         const Topology& topology,
                                         const std::string& precision);

// The shadowing policy's cost model for one expert shape on this cluster: tokens and weights cross the
// slowest link class the run uses (inter-node when it spans nodes, else intra-node); weights by
// pipelined binary trees (collective_factor = pipelined_tree_factor).
ShadowCostModel shadow_cost_model(double expert_flops_per_token,
                                  double bytes_per_token,
                                  double bytes_per_expert,
                                  const LayerCluster& cluster);

// FasterMoE's topology gate limit L = W_net / (M · W_local) · B assignments per rank, B = T_local · k.
int64_t topology_gate_max_offnode(const LayerConfig& config, const LayerCluster& cluster);

// What dispatch decided, kept for combine and the backward pass (DeepEP's "handle").
struct DispatchHandle {
    std::vector<int64_t> requested;  // [P, E] routed assignments per (source rank, expert), every rank
    std::vector<int64_t> allowed;    // [P, E] kept assignments per (source rank, expert), every rank
    std::vector<int64_t> sent;       // [P, E] allowed, less the shadowed experts (computed at the source)
    std::vector<uint8_t> shadowed;   // [E] experts replicated this step
    int num_shadowed = 0;
    std::vector<int64_t> rows;       // [P, P] token rows from src to dst (the exchange's traffic)
    int64_t capacity = 0;            // per (scope group, expert); dropless: largest real load
    int64_t num_skipped = 0;         // gshard's unrouted second slots, all ranks
    std::vector<uint8_t> kept;       // [T_local, k]
    std::vector<int64_t> send_slot;  // [num_send + num_shadow_rows] assignment (t·k + j) of each row,
                                     // expert-major: network rows first, then shadowed experts' rows
    std::vector<int64_t> send_rows, send_offsets;  // [P] rows to / from each rank
    std::vector<int64_t> recv_rows, recv_offsets;  // [P]
    int64_t num_send = 0, num_recv = 0;
    int64_t num_shadow_rows = 0;  // rows this rank computes itself on shadowed experts
};

struct LayerStepStats {
    double phase_s[kNumPhases] = {};   // seconds on this rank
    double alltoallv_s = 0;            // seconds inside (or waiting on) the 4 token exchanges per step
    int64_t alltoallv_bytes_sent = 0;  // token bytes this rank sent to *other* ranks (end to end)
    int64_t alltoallv_bytes_recv = 0;
    int64_t bytes_intra_node = 0;       // bytes this rank put on intra-node links (relays count per hop)
    int64_t bytes_inter_node = 0;       // bytes this rank put on inter-node links
    int64_t num_redirected = 0;         // topology gate: this rank's assignments moved on-node
    int64_t num_redirected_global = 0;  // ... summed over ranks
    int num_shadowed = 0;
    double expert_flops = 0;  // forward + backward, this rank
    double aux_loss = 0;
    double z_loss = 0;
};

class MoeLayer {
   public:
    // cluster: node map and rates; null = one node, rates unknown.
    MoeLayer(const LayerConfig& config,
             Comm& comm,
             ExpertCompute& experts,
             int layer_index = 0,
             const LayerCluster* cluster = nullptr);
    ~MoeLayer();
    MoeLayer(const MoeLayer&) = delete;
    MoeLayer& operator=(const MoeLayer&) = delete;

    // Parameters of docs/layer.md "Synthetic data and parameters" for this rank's experts.
    void init_params(uint64_t seed);
    void zero_grads();

    // x [T_local, d] -> y [T_local, d] (the MoE branch only). step and seed key gate randomness.
    void forward(float* y, const float* x, int64_t step, uint64_t seed);
    // dy [T_local, d] -> dx [T_local, d] (overwritten); parameter gradients accumulate.
    // Uses the handle and activations of the last forward; x must still be alive.
    void backward(float* dx, const float* dy);
    // Sums the replicated router gradients over ranks (each rank holds its tokens' share).
    void allreduce_router_grads();
    // Plain SGD, params -= learning_rate · grads (after allreduce_router_grads).
    void sgd_update(float learning_rate);

    // Changes the capacity factor between steps: training's factor and evaluation's (Switch: 2.0). The
    // buffers keep their construction-time size, so a factor whose moe_max_recv_rows exceeds it throws;
    // construct with the factor that needs more rows, then set the other.
    void set_capacity_factor(double capacity_factor);

    const LayerConfig& config() const { return config_; }
    int num_ranks() const { return comm_.size(); }
    int rank() const { return comm_.rank(); }
    int64_t num_local_experts() const { return num_local_experts_; }
    const DispatchHandle& handle() const { return handle_; }
    const LayerStepStats& stats() const { return stats_; }
    const GateState& gate_state() const { return gate_; }
    LayerTensors params() const { return params_; }
    LayerTensors grads() const { return grads_; }
    int64_t num_param_floats() const { return num_param_floats_; }
    const float* router_bias() const { return router_bias_.data(); }
    // DeepSeek-V3 selection bias [E] (--router-bias): state that moves every step; checkpoints save it.
    const float* selection_bias() const { return selection_bias_.data(); }
    void set_selection_bias(const float* bias);
    const LayerCluster& cluster() const { return cluster_; }
    int64_t max_offnode() const { return max_offnode_; }

   private:
    void route(const float* x, int64_t step, uint64_t seed);
    void exchange_counts(int64_t step);
    void plan_layout();
    void select_probs_global();
    void update_selection_bias();
    void choose_shadows();
    void broadcast_shadow_weights();
    void reduce_shadow_grads();
    void pack_rows(const float* x);
    void exchange(const float* send, float* recv, bool reverse);
    void run_experts(bool backward_pass, double* wait_in_s, double* compute_s, double* wait_out_s);
    void compute_source(int src, bool backward_pass);
    void compute_shadows(bool backward_pass);
    void count_bytes(bool reverse);
    void combine(float* y);
    ExpertWeights expert_weights(int64_t le) const;
    ExpertGrads expert_grads(int64_t le) const;
    ExpertActivations expert_acts(int64_t row_begin);
    ExpertWeights shadow_weights(int i) const;
    ExpertGrads shadow_grads(int i) const;
    ExpertActivations shadow_acts(int64_t row_begin);

    LayerConfig config_;
    Comm& comm_;
    ExpertCompute& experts_;
    int layer_index_;
    LayerCluster cluster_;
    int64_t num_local_experts_;
    int64_t max_recv_rows_;
    int64_t max_offnode_ = -1;
    std::unique_ptr<TokenExchange> exchange_;
    std::unique_ptr<ShadowPolicy> shadow_policy_;
    std::vector<int32_t> node_of_expert_;  // [E]
    std::vector<float> selection_bias_;    // [E]

    std::vector<float> param_memory_, grad_memory_;
    int64_t num_param_floats_ = 0;
    LayerTensors params_{}, grads_{};
    std::vector<float> router_bias_;  // [E] fixed skew bias

    // Gate state and scratch, [T_local, E] / [T_local, k].
    std::vector<float> logits_, probs_, lse_, noise_logits_, scores_, dlogits_, dnoise_;
    std::vector<int32_t> slot_expert_;
    std::vector<float> slot_weight_, dslot_weight_;
    std::vector<uint8_t> slot_routed_;
    std::vector<float> selection_, node_scratch_;
    std::vector<int64_t> gate_order_;
    GateState gate_{};
    GateInputs gate_inputs_{};
    std::vector<double> prob_sum_, aux_dprob_;
    std::vector<int64_t> local_requested_;
    std::vector<int64_t> expert_load_;  // [E] routed assignments per expert over all ranks (before capacity)
    std::vector<int64_t> count_send_,
        count_recv_;                           // [E + 3] per rank: counts, skipped, non-finite, redirected
    std::vector<double> sum_send_, sum_recv_;  // [E + 1] per rank: prob sums, z sum

    // Layout scratch.
    std::vector<int64_t> by_expert_, expert_begin_, expert_fill_;  // routed assignments sorted by expert
    std::vector<int64_t> expert_row_begin_;  // [E_local + 1] expert-major row offsets at the owner
    std::vector<int64_t> block_begin_;       // [E_local, P] expert-major row of block (local expert, source)
    std::vector<int64_t> source_block_row_;  // [P, E_local] source-major row of the same block
    std::vector<int> stage_first_, stage_count_;  // [stages] request ranges of the pairwise pipeline
    // probs/global key exchange
    struct Key {
        float weight;
        int32_t pad;
        int64_t global_slot;
    };
    std::vector<Key> key_send_, key_recv_;
    std::vector<int64_t> key_send_rows_, key_send_offsets_, key_recv_rows_, key_recv_offsets_;
    std::vector<Key> key_scratch_;  // one expert's keys from all sources (pad holds the source rank)
    std::vector<int64_t> allowed_block_, allowed_blocks_;  // [E_local·P], [P·E_local·P]

    // Token rows. Source-major buffers hold rows in the order ranks exchange them; expert-major ones
    // hold each local expert's rows together, blocks ordered by source rank.
    std::vector<float> send_buf_;  // [T_local·k, d] x rows out; then scaled dy rows out
    std::vector<float> recv_buf_;  // [max_recv, d] source-major rows at the owner: x in, y out, dy in, dx out
    std::vector<float> expert_x_;  // [max_recv, d] expert-major inputs (kept for backward)
    std::vector<float> expert_dy_;                       // [max_recv, d] expert-major output gradients
    std::vector<float> act_h_, act_g_, act_a_, act_dh_;  // [max_recv, f]
    std::vector<float> combine_recv_;  // [T_local·k, d] expert outputs back at the source, send order
    std::vector<float> return_buf_;    // [T_local·k, d] dx rows back at the source, send order
    // Shadowing: replicated experts' weights and gradients, and this rank's rows on them.
    int64_t expert_floats_ = 0;                        // one expert's parameter count
    std::vector<float> shadow_params_, shadow_grads_;  // [shadow_max, expert_floats]
    std::vector<int64_t> shadow_expert_;               // [shadow_max] global expert of each slot
    std::vector<int64_t> shadow_row_begin_;            // [shadow_max + 1] rows of each slot
    std::vector<float> shadow_x_;                      // [T_local·k, d]
    std::vector<float> shadow_h_, shadow_g_, shadow_a_, shadow_dh_;  // [T_local·k, f]
    std::vector<int64_t> slot_row_;  // [T_local·k] send row of each slot t·k + j, -1 if not kept

    DispatchHandle handle_;
    LayerStepStats stats_;
};

}  // namespace expar
