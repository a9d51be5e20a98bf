// The plain-loop reference MoE layer: the oracle the distributed layer is tested against.
// One process holds all T tokens and all E experts; no BLAS, no MPI, written to be read.
// Templated on the scalar so finite-difference tests can run it in double precision.
#pragma once

#include <cstdint>
#include <vector>

#include "config.h"

namespace expar {

// All parameters of the layer, global expert order. Shapes use d = d_model, f = d_ff.
template <typename S>
struct ReferenceParams {
    std::vector<S> router_w;        // [d, E]
    std::vector<S> router_noise_w;  // [d, E], used by noisy-topk only (may be empty otherwise)
    std::vector<S> w1;              // [E, d, f]
    std::vector<S> b1;              // [E, f]   (empty without expert bias)
    std::vector<S> w2;              // [E, f, d]
    std::vector<S> b2;              // [E, d]   (empty without expert bias)
    std::vector<S> w3;              // [E, d, f] (swiglu only, else empty)
};

template <typename S>
struct ReferenceResult {
    std::vector<S> y;                // [T, d]
    std::vector<int64_t> expert;     // [T, k] selected expert per slot (slot 0 = top-1), always valid
    std::vector<S> weight;           // [T, k] gate weight per slot
    std::vector<uint8_t> routed;     // [T, k] 0 for gshard's skipped second slot
    std::vector<uint8_t> kept;       // [T, k] routed and within capacity
    int64_t num_redirected = 0;      // topology gate: assignments moved on-node, all ranks
    std::vector<int64_t> requested;  // [E] routed assignments per expert, before capacity
    std::vector<int64_t> received;   // [E] kept assignments per expert
    S aux = 0;                       // load-balancing loss
    S z = 0;                         // router z-loss
    S objective = 0;                 // L = sum(dy*y) + aux_coef*aux + z_coef*z
    std::vector<S> dx;               // [T, d]
    ReferenceParams<S> grad;         // same shapes as the parameters
};

// Routing constraints (docs/layer.md, "Routing constraints"); the defaults apply none.
struct ReferenceRouting {
    std::vector<int> node_of_rank;      // [P] node of each rank; empty = every rank on node 0
    std::vector<float> selection_bias;  // [E] router bias for selection only; empty = none
    int64_t max_offnode = -1;           // topology gate: most off-node assignments per rank; -1 = off
};

// Forward and backward of the whole layer over the global batch.
// x, dy: [T, d] with T = num_ranks * config.tokens_per_rank (num_ranks matters for local capacity scope).
// seed and step key the gate noise and gshard coins (docs/layer.md).
template <typename S>
void reference_layer(const LayerConfig& config,
                     int num_ranks,
                     uint64_t seed,
                     int64_t step,
                     const std::vector<S>& x,
                     const std::vector<S>& dy,
                     const ReferenceParams<S>& params,
                     ReferenceResult<S>* out,
                     const ReferenceRouting& routing = ReferenceRouting{});

// The parameters of docs/layer.md ("Synthetic data and parameters") for all E experts.
template <typename S>
ReferenceParams<S> reference_params_init(const LayerConfig& config, uint64_t seed);

}  // namespace expar
