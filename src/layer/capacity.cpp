#include "capacity.h"

#include <algorithm>
#include <cmath>

#include "check.h"

namespace expar {

int64_t capacity_per_expert(double capacity_factor, int64_t num_tokens, int top_k, int64_t num_experts) {
    EXPAR_ASSERT(capacity_factor > 0 && num_experts > 0);
    const double x =
        capacity_factor * static_cast<double>(num_tokens) * top_k / static_cast<double>(num_experts);
    // An expert takes at most one assignment per token of its group, so a capacity above num_tokens drops
    // nothing more; the cap also keeps a huge cf from overflowing int64 (and the buffers sized from it).
    if (x >= static_cast<double>(num_tokens)) return num_tokens;
    // ceil of a positive number is at least 1, whatever the tolerance takes off a tiny x.
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(x - 1e-9 * std::max(1.0, x))));
}

int64_t capacity_of_step(const LayerConfig& c, const int64_t* requested, int num_ranks) {
    const int64_t E = c.num_experts;
    if (c.capacity_factor > 0) {
        const int64_t group_tokens =
            c.capacity_scope == CapacityScope::local ? c.tokens_per_rank : c.tokens_per_rank * num_ranks;
        return capacity_per_expert(c.capacity_factor, group_tokens, c.top_k, E);
    }
    int64_t largest = 0;
    for (int64_t e = 0; e < E; ++e) {
        int64_t column = 0;
        for (int r = 0; r < num_ranks; ++r) {
            const int64_t load = requested[r * E + e];
            if (c.capacity_scope == CapacityScope::local) largest = std::max(largest, load);
            column += load;
        }
        if (c.capacity_scope == CapacityScope::global) largest = std::max(largest, column);
    }
    return largest;
}

bool capacity_needs_key_exchange(const LayerConfig& c) {
    return c.capacity_factor > 0 && c.capacity_scope == CapacityScope::global &&
           c.drop_policy == DropPolicy::probs;
}

void capacity_allowed_from_counts(int64_t* allowed,
                                  const int64_t* requested,
                                  int num_ranks,
                                  const LayerConfig& c) {
    const int64_t E = c.num_experts, P = num_ranks;
    if (c.capacity_factor == 0) {  // dropless
        std::copy(requested, requested + P * E, allowed);
        return;
    }
    const int64_t capacity = capacity_of_step(c, requested, num_ranks);
    if (c.capacity_scope == CapacityScope::local) {
        for (int64_t i = 0; i < P * E; ++i) allowed[i] = std::min(requested[i], capacity);
        return;
    }
    for (int64_t e = 0; e < E; ++e) {
        int64_t load = 0;
        for (int64_t r = 0; r < P; ++r) load += requested[r * E + e];
        if (load <= capacity) {
            for (int64_t r = 0; r < P; ++r) allowed[r * E + e] = requested[r * E + e];
        } else if (c.drop_policy == DropPolicy::position) {
            // Global token order is rank-major: lower ranks' tokens come first.
            int64_t left = capacity;
            for (int64_t r = 0; r < P; ++r) {
                allowed[r * E + e] = std::min(requested[r * E + e], left);
                left -= allowed[r * E + e];
            }
        } else {
            // Proportional split by largest remainder (count-only approximation of the probs policy).
            int64_t given = 0;
            for (int64_t r = 0; r < P; ++r) {
                allowed[r * E + e] = requested[r * E + e] * capacity / load;
                given += allowed[r * E + e];
            }
            // Each source gets at most one extra unit, by descending remainder, ties to the lower rank.
            while (given < capacity) {
                int64_t best = -1, best_remainder = -1;
                for (int64_t r = 0; r < P; ++r) {
                    const int64_t share = requested[r * E + e] * capacity;
                    const bool bumped = allowed[r * E + e] > share / load;
                    const int64_t remainder = share % load;
                    if (!bumped && remainder > best_remainder) {
                        best = r;
                        best_remainder = remainder;
                    }
                }
                ++allowed[best * E + e];
                ++given;
            }
        }
    }
}

}  // namespace expar
