// Expert capacity and overflow on a count matrix [source rank × expert], without token data.
// The MoE layer applies it after the count exchange; the simulator applies the same code to count
// matrices of thousands of ranks. Formulas and rounding: docs/layer.md, "Capacity and drops".
#pragma once

#include <cstdint>

#include "config.h"

namespace expar {

// ceil(cf·N·k/E), evaluated as ceil(x − 1e-9·max(1, x)) in double, at least 1 and at most N (an expert
// takes at most one assignment per token). cf must be > 0.
int64_t capacity_per_expert(double capacity_factor, int64_t num_tokens, int top_k, int64_t num_experts);

// The capacity the layer reports for one step: the per-expert limit of one scope group, or for
// dropless (cf = 0) the largest real load of one (group, expert).
int64_t capacity_of_step(const LayerConfig& config, const int64_t* requested, int num_ranks);

// allowed[r][e] = how many of rank r's routed assignments to expert e are kept, from requested[r][e].
// Exact for every scope and policy except (probs, global) with overflow, where which source keeps how
// many depends on the gate weights: there the per-expert totals are exact and the split between sources
// is proportional to their requests (largest remainder, ties to the lower rank). The MoE layer computes
// that case exactly by a key exchange instead (moe_layer.cpp); the simulator uses this approximation.
void capacity_allowed_from_counts(int64_t* allowed,
                                  const int64_t* requested,
                                  int num_ranks,
                                  const LayerConfig& config);

// True for the one case capacity_allowed_from_counts cannot decide exactly.
bool capacity_needs_key_exchange(const LayerConfig& config);

}  // namespace expar
