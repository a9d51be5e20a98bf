// Capacity on count matrices against brute force over explicit token lists.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "capacity.h"
#include "rng.h"

namespace expar {
namespace {

TEST(Capacity, FormulaAndRounding) {
    EXPECT_EQ(capacity_per_expert(1.25, 4096, 2, 8), 1280);
    EXPECT_EQ(capacity_per_expert(1.0, 10, 1, 4), 3);       // ceil(2.5)
    EXPECT_EQ(capacity_per_expert(1.1, 1000, 1, 10), 110);  // 110.00000000000001 must not become 111
    EXPECT_EQ(capacity_per_expert(0.01, 10, 1, 8), 1);      // ceil of a tiny positive number
    EXPECT_EQ(capacity_per_expert(2.0, 3, 2, 4), 3);
    EXPECT_EQ(capacity_per_expert(1e-13, 4096, 2, 8), 1);    // the tolerance must not take it to 0
    EXPECT_EQ(capacity_per_expert(4.0, 100, 2, 4), 100);     // cf·N·k/E = 200: an expert takes at most N
    EXPECT_EQ(capacity_per_expert(1e16, 4096, 2, 8), 4096);  // would overflow int64 uncapped
    EXPECT_EQ(capacity_per_expert(1e300, 4096, 2, 8), 4096);
}

// Builds the global token order (rank-major) and keeps, per expert, the first `capacity` assignments:
// the position policy written the obvious way.
std::vector<int64_t> brute_force_position_global(const std::vector<int64_t>& requested,
                                                 int P,
                                                 int64_t E,
                                                 int64_t capacity) {
    std::vector<int64_t> allowed(P * E, 0), used(E, 0);
    for (int r = 0; r < P; ++r)
        for (int64_t e = 0; e < E; ++e)
            for (int64_t i = 0; i < requested[r * E + e]; ++i)
                if (used[e] < capacity) {
                    ++used[e];
                    ++allowed[r * E + e];
                }
    return allowed;
}

TEST(Capacity, CountMatrixMatchesBruteForce) {
    for (int trial = 0; trial < 200; ++trial) {
        const int P = 1 + trial % 7;
        const int64_t E = 1 + trial % 5;
        LayerConfig c;
        c.num_experts = E;
        c.top_k = 1;
        c.tokens_per_rank = 40;
        c.capacity_factor = 0.25 + 0.25 * (trial % 8);
        std::vector<int64_t> requested(P * E, 0);
        for (int r = 0; r < P; ++r)  // random loads summing to tokens_per_rank per rank
            for (int64_t t = 0; t < c.tokens_per_rank; ++t)
                ++requested[r * E + rng_bits(trial, 1, r * 1000 + t) % E];
        std::vector<int64_t> allowed(P * E);

        c.capacity_scope = CapacityScope::global;
        c.drop_policy = DropPolicy::position;
        capacity_allowed_from_counts(allowed.data(), requested.data(), P, c);
        const int64_t cap_global = capacity_per_expert(c.capacity_factor, P * c.tokens_per_rank, 1, E);
        EXPECT_EQ(allowed, brute_force_position_global(requested, P, E, cap_global));

        c.capacity_scope = CapacityScope::local;
        capacity_allowed_from_counts(allowed.data(), requested.data(), P, c);
        const int64_t cap_local = capacity_per_expert(c.capacity_factor, c.tokens_per_rank, 1, E);
        for (int i = 0; i < P * E; ++i) EXPECT_EQ(allowed[i], std::min(requested[i], cap_local));

        // probs/global from counts: exact totals per expert, each source within its request.
        c.capacity_scope = CapacityScope::global;
        c.drop_policy = DropPolicy::probs;
        capacity_allowed_from_counts(allowed.data(), requested.data(), P, c);
        for (int64_t e = 0; e < E; ++e) {
            int64_t load = 0, kept = 0;
            for (int r = 0; r < P; ++r) {
                load += requested[r * E + e];
                kept += allowed[r * E + e];
                EXPECT_LE(allowed[r * E + e], requested[r * E + e]);
                EXPECT_GE(allowed[r * E + e], 0);
            }
            EXPECT_EQ(kept, std::min(load, cap_global));
        }

        c.capacity_factor = 0;  // dropless
        capacity_allowed_from_counts(allowed.data(), requested.data(), P, c);
        EXPECT_EQ(allowed, requested);
        const int64_t largest_column = [&] {
            int64_t best = 0;
            for (int64_t e = 0; e < E; ++e) {
                int64_t load = 0;
                for (int r = 0; r < P; ++r) load += requested[r * E + e];
                best = std::max(best, load);
            }
            return best;
        }();
        EXPECT_EQ(capacity_of_step(c, requested.data(), P), largest_column);
    }
}

TEST(Capacity, OnlyProbsGlobalWithCapacityNeedsKeys) {
    LayerConfig c;
    c.capacity_scope = CapacityScope::global;
    c.drop_policy = DropPolicy::probs;
    EXPECT_TRUE(capacity_needs_key_exchange(c));
    c.capacity_factor = 0;
    EXPECT_FALSE(capacity_needs_key_exchange(c));
    c.capacity_factor = 1;
    c.capacity_scope = CapacityScope::local;
    EXPECT_FALSE(capacity_needs_key_exchange(c));
}

}  // namespace
}  // namespace expar
