// The expert-parallel MoE layer over a Comm: route → count exchange → layout → dispatch → expert
// compute → combine, and the exact backward. Owns its parameters, gradients and every step buffer
// (one allocation each, sized at construction for the worst step, moe_max_recv_rows: none in the step).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm.h"
#include "config.h"
#include "dispatch_layout.h"
#include "expert_ffn.h"
#include "gate.h"
#include "node_map.h"
#include "phase.h"
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

// The precision of `expar layer` and `expar train`'s topology rates (gate, shadowing): the CPU layer
// computes in float and moves 4-byte rows, so it is fp32 on every topology, not the topology's training
// precision that `expar simulate --precision` defaults to (docs/layer.md, "Dynamic shadowing").
inline constexpr const char* kLayerPrecision = "fp32";

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

struct LayerStepStats {
    double phase_s[kNumPhases] = {};   // seconds on this rank
    double alltoallv_s = 0;            // seconds in the 4 token exchanges per step, expert work excluded
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
    // Uses the layout and activations of the last forward; x must still be alive.
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
    const DispatchLayout& layout() const { return layout_; }
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
    class ExpertWork;  // the RoundTripWork of expert_round_trip: expert blocks in forward or backward
    void route(const float* x, int64_t step, uint64_t seed);
    void exchange_counts(int64_t step);
    void plan_layout();
    void select_probs_global();
    void update_selection_bias();
    void broadcast_shadow_weights();
    void reduce_shadow_grads();
    void expert_round_trip(bool backward_pass, RoundTripTimes* times);
    void compute_source(int src, bool backward_pass);
    void compute_shadows(bool backward_pass);
    void count_bytes(bool reverse);
    SlotRouting slot_routing() const;
    ExpertWeights expert_weights(int64_t le) const;
    ExpertGrads expert_grads(int64_t le) const;
    ExpertWeights shadow_weights(int i) const;
    ExpertGrads shadow_grads(int i) const;

    // The gate's arrays and its side of the count exchange, [T_local, E] / [T_local, k] / [E].
    struct GateBuffers {
        std::vector<float> logits, probs, lse, noise_logits, scores, dlogits, dnoise;
        std::vector<int32_t> slot_expert;
        std::vector<float> slot_weight, dslot_weight;
        std::vector<uint8_t> slot_routed;
        std::vector<float> selection, node_scratch;
        std::vector<int64_t> order;
        std::vector<double> prob_sum, aux_dprob;  // [E]
        std::vector<int64_t> local_requested;     // [E]
        std::vector<int64_t>
            expert_load;  // [E] routed assignments per expert over all ranks (before capacity)
        std::vector<int64_t> count_send,
            count_recv;                          // [E + 3] per rank: counts, skipped, non-finite, redirected
        std::vector<double> sum_send, sum_recv;  // [E + 1] per rank: prob sums, z sum
        void resize(const LayerConfig& config, int num_ranks, int num_nodes);
        GateState state();
    };
    // (probs, global) capacity: each overflowing expert's owner sees every source's keys.
    struct Key {
        float weight;
        int32_t source;  // the source rank, filled in by the owner on receipt
        int64_t global_slot;
    };
    struct KeyExchange {
        std::vector<Key> send, recv, scratch;  // [T_local·k], [P·T_local·k], [P·T_local·k]
        std::vector<int64_t> send_rows, send_offsets, recv_rows, recv_offsets;  // [P]
        std::vector<int64_t> allowed_block, allowed_blocks;  // [E_local·P], [P·E_local·P]
        void resize(const LayerConfig& config, int num_ranks);
    };
    // Expert activations of a run of rows, [rows, f] each (g: swiglu only).
    struct ActivationRows {
        int64_t f = 0;
        std::vector<float> h, g, a, dh;
        void resize(int64_t rows, int64_t d_ff, bool swiglu);
        ExpertActivations at(int64_t row_begin);
    };
    // Token rows. Source-major buffers hold rows in the order ranks exchange them; expert-major ones hold
    // each local expert's rows together, blocks ordered by source rank.
    struct RowBuffers {
        std::vector<float> send;       // [T_local·k, d] x rows out; then scaled dy rows out
        std::vector<float> recv;       // [max_recv, d] source-major at the owner: x in, y out, dy in, dx out
        std::vector<float> expert_x;   // [max_recv, d] expert-major inputs (kept for backward)
        std::vector<float> expert_dy;  // [max_recv, d] expert-major output gradients
        ActivationRows acts;           // [max_recv] rows
        std::vector<float> combine_recv;  // [T_local·k, d] expert outputs back at the source, send order
        std::vector<float> return_rows;   // [T_local·k, d] dx rows back at the source, send order
        void resize(int64_t send_rows, int64_t max_recv_rows, int64_t d, int64_t f, bool swiglu);
    };
    // Shadowing: replicated experts' weights and gradients, and this rank's rows on them.
    struct ShadowBuffers {
        std::vector<float> params, grads;  // [shadow_max, expert_floats], packed w1, b1, w2, b2, w3
        std::vector<float> x;              // [T_local·k, d]
        ActivationRows acts;               // [T_local·k] rows
        void resize(int64_t slots, int64_t expert_floats, int64_t rows, int64_t d, int64_t f, bool swiglu);
    };

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
    int64_t expert_floats_ = 0;  // one expert's parameter count
    LayerTensors params_{}, grads_{};
    std::vector<float> router_bias_;  // [E] fixed skew bias

    GateBuffers gate_buffers_;
    GateState gate_{};
    GateInputs gate_inputs_{};
    KeyExchange keys_;
    RowBuffers rows_;
    ShadowBuffers shadow_;
    DispatchLayout layout_;
    LayerStepStats stats_;
};

}  // namespace expar
