// The router (gate): logits, softmax, top-k selection and gate weights for each gate kind, the
// load-balancing and z-loss partial sums, and the exact backward into x and the router weights.
// Formulas: docs/layer.md. Works on one rank's tokens; global sums are the caller's (count exchange).
#pragma once

#include <cstdint>

#include "config.h"

namespace expar {

// Per-token gate state for T tokens, saved by gate_forward for gate_backward. Views into caller memory.
struct GateState {
    float* logits;        // [T, E] x·Wr + bias
    float* probs;         // [T, E] softmax(logits)
    float* lse;           // [T]    log-sum-exp of logits
    float* noise_logits;  // [T, E] x·Wn (noisy-topk only)
    float* scores;        // [T, E] h = logits + eps·softplus(x·Wn) (noisy-topk only)
    int32_t* expert;      // [T, k] selected expert per slot (slot 0 = top-1)
    float* weight;        // [T, k] gate weight per slot
    uint8_t* routed;      // [T, k] 0 for gshard's skipped second slot
    float* selection;     // [T, E] scores top-k selects on: score + router bias, other nodes -inf
    int64_t* order;       // [T·k] scratch of the topology gate
    float* node_scratch;  // [num_nodes + E] scratch of node-limited routing
};

// Routing constraints on top of the gate's own top-k (docs/layer.md, "Routing constraints").
// All optional; the defaults leave the gate as it was.
struct GateRouting {
    const float* selection_bias = nullptr;    // [E] DeepSeek-V3 bias, added for selection only
    const int32_t* node_of_expert = nullptr;  // [E] node of each expert's owner (needed by the two below)
    int num_nodes = 1;
    int node_limit = 0;        // DeepSeek-V3: a token's experts lie on at most this many nodes; 0 = off
    int home_node = 0;         // node of this rank
    int64_t max_offnode = -1;  // FasterMoE topology gate: most assignments that may leave the node; -1 = off
};

// Local sums the count exchange turns into global losses.
struct GatePartialSums {
    double* prob_sum;            // [E] Σ_t p[t,e] over this rank's tokens
    int64_t* requested;          // [E] routed assignments per expert
    double z_sum = 0;            // Σ_t lse_t²
    int64_t num_skipped = 0;     // gshard: unrouted second slots
    int64_t num_redirected = 0;  // topology gate: assignments moved from an off-node to an on-node expert
};

struct GateInputs {
    const float* x;               // [T, d]
    const float* router_w;        // [d, E]
    const float* router_noise_w;  // [d, E] or null
    const float* router_bias;     // [E] fixed skew bias
    int64_t num_tokens;           // T (this rank)
    int64_t first_token;          // global index of local token 0
    uint64_t seed;
    int64_t step;
    GateRouting routing;
};

void gate_forward(GateState state, GatePartialSums* sums, const GateInputs& in, const LayerConfig& config);

// DeepSeek-V3 auxiliary-loss-free balancing, after each step: an expert whose routed load (global,
// [E]) is above the mean loses gamma from its selection bias, one below gains gamma. The MoE layer and
// the simulator both call this, so every rank (and every simulated step) moves the bias identically.
void router_bias_update(float* selection_bias, const int64_t* expert_load, int64_t num_experts, double gamma);

// Global quantities the backward needs, identical on all ranks.
struct GateLossGrads {
    const double* aux_dprob;  // [E] d(aux)/d p[t,e] = E·f_e / T_global, already times aux_coef
    double z_scale;           // z_coef · 2 / T_global
};

// dx[T,d] += router contribution; d_router_w, d_router_noise_w += gradients. dweight [T,k] = dL/dw.
// scratch_dlogits and scratch_dnoise are [T, E].
void gate_backward(float* dx,
                   float* d_router_w,
                   float* d_router_noise_w,
                   float* scratch_dlogits,
                   float* scratch_dnoise,
                   const float* dweight,
                   GateState state,
                   const GateInputs& in,
                   const GateLossGrads& loss,
                   const LayerConfig& config);

}  // namespace expar
