// The dispatch layout (dispatch_layout.h) against brute force: every rank's slots are drawn at random,
// the kept assignments are chosen by the capacity rules written the obvious way over explicit slot lists,
// and every field of the layout is compared. Then the row loops (token_rows.h) carry self-checking rows
// through a serial stand-in for the exchange, and the combined output is compared with a direct sum.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <tuple>
#include <vector>

#include "dispatch_layout.h"
#include "rng.h"
#include "token_rows.h"

namespace expar {
namespace {

// One rank's routed slots, as the gate would leave them.
struct RankSlots {
    std::vector<int32_t> expert;  // [T, k] distinct experts per token
    std::vector<float> weight;    // [T, k] on a coarse grid, so the probs policy meets ties
    std::vector<uint8_t> routed;  // [T, k]
    SlotRouting view(int64_t T, int64_t k) const {
        return SlotRouting{expert.data(), weight.data(), routed.data(), T, k};
    }
};

RankSlots draw_slots(uint64_t seed, int rank, int64_t T, int64_t k, int64_t E) {
    RankSlots s;
    s.expert.resize(T * k);
    s.weight.resize(T * k);
    s.routed.resize(T * k);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t j = 0; j < k; ++j) {
            const uint64_t index = (static_cast<uint64_t>(rank) * 1000 + t) * 8 + j;
            // Skewed towards low experts, distinct within a token.
            int32_t e;
            uint64_t attempt = 0;
            do {
                const uint64_t bits = rng_bits(seed, 11, index * 64 + attempt++);
                e = static_cast<int32_t>(std::min(bits % E, (bits >> 20) % E));
            } while (std::find(s.expert.begin() + t * k, s.expert.begin() + t * k + j, e) !=
                     s.expert.begin() + t * k + j);
            s.expert[t * k + j] = e;
            s.weight[t * k + j] = 0.125f * static_cast<float>(rng_bits(seed, 12, index) % 8);
            s.routed[t * k + j] = j == 0 || rng_bits(seed, 13, index) % 8 != 0;  // some unrouted seconds
        }
    return s;
}

// ceil(num / den) for the capacity of cf = half_cf / 2: exact in integers.
int64_t ceil_div(int64_t num, int64_t den) {
    return (num + den - 1) / den;
}

struct Case {
    int P;
    int64_t EL, T, k;
    int half_cf;  // cf = half_cf / 2; 0 = dropless
    CapacityScope scope;
    DropPolicy policy;
    bool shadow;
};

// What every rank would compute, by brute force over explicit slot lists.
struct Expected {
    int64_t capacity = 0;
    std::vector<int64_t> requested, allowed;  // [P, E]
    std::vector<std::vector<uint8_t>> kept;   // [P][T·k]
};

Expected brute_force_keep(const Case& c, const std::vector<RankSlots>& ranks) {
    const int64_t P = c.P, E = c.P * c.EL, T = c.T, k = c.k;
    Expected x;
    x.requested.assign(P * E, 0);
    x.allowed.assign(P * E, 0);
    x.kept.assign(P, std::vector<uint8_t>(T * k, 0));
    // Candidates (rank, slot) per expert in global slot order (rank-major).
    std::vector<std::vector<std::pair<int, int64_t>>> candidates(E);
    for (int r = 0; r < P; ++r)
        for (int64_t s = 0; s < T * k; ++s)
            if (ranks[r].routed[s]) {
                ++x.requested[r * E + ranks[r].expert[s]];
                candidates[ranks[r].expert[s]].push_back({r, s});
            }
    auto keep_best = [&](std::vector<std::pair<int, int64_t>> list, int64_t capacity) {
        if (c.policy == DropPolicy::probs)
            std::stable_sort(list.begin(), list.end(), [&](const auto& a, const auto& b) {
                return ranks[a.first].weight[a.second] > ranks[b.first].weight[b.second];
            });
        for (size_t i = 0; i < list.size() && static_cast<int64_t>(i) < capacity; ++i)
            x.kept[list[i].first][list[i].second] = 1;
    };
    if (c.half_cf == 0) {
        for (int64_t e = 0; e < E; ++e) {
            int64_t column = 0;
            for (int r = 0; r < P; ++r) {
                column += x.requested[r * E + e];
                if (c.scope == CapacityScope::local)
                    x.capacity = std::max(x.capacity, x.requested[r * E + e]);
            }
            if (c.scope == CapacityScope::global) x.capacity = std::max(x.capacity, column);
        }
        for (int64_t e = 0; e < E; ++e) keep_best(candidates[e], P * T);
    } else if (c.scope == CapacityScope::local) {
        x.capacity = std::min(T, std::max<int64_t>(1, ceil_div(c.half_cf * T * k, 2 * E)));
        for (int64_t e = 0; e < E; ++e)
            for (int r = 0; r < P; ++r) {
                std::vector<std::pair<int, int64_t>> mine;
                for (const auto& cand : candidates[e])
                    if (cand.first == r) mine.push_back(cand);
                keep_best(mine, x.capacity);
            }
    } else {
        x.capacity = std::min(P * T, std::max<int64_t>(1, ceil_div(c.half_cf * P * T * k, 2 * E)));
        for (int64_t e = 0; e < E; ++e) keep_best(candidates[e], x.capacity);
    }
    for (int r = 0; r < P; ++r)
        for (int64_t s = 0; s < T * k; ++s)
            if (x.kept[r][s]) ++x.allowed[r * E + ranks[r].expert[s]];
    return x;
}

LayerConfig config_of(const Case& c) {
    LayerConfig config;
    config.num_experts = c.P * c.EL;
    config.top_k = static_cast<int>(c.k);
    config.tokens_per_rank = c.T;
    config.capacity_factor = 0.5 * c.half_cf;
    config.capacity_scope = c.scope;
    config.drop_policy = c.policy;
    return config;
}

// A policy that finds shadowing worth it for hot experts: heavy compute per token, light weights.
ShadowPolicy eager_shadow_policy(int P, int64_t E) {
    ShadowCostModel model;
    model.expert_flops_per_token = 1e9;
    model.bytes_per_token = 1e6;
    model.bytes_per_expert = 1e3;
    model.device_flops_per_s = 1e12;
    model.network_bytes_per_s = 1e9;
    return ShadowPolicy(P, E, model);
}

std::vector<Case> all_cases() {
    std::vector<Case> cases;
    for (int P : {1, 2, 3, 4})
        for (int64_t EL : {1, 2, 3})
            for (int64_t k : {1, 2})
                for (int half_cf : {0, 1, 2, 3})
                    for (CapacityScope scope : {CapacityScope::local, CapacityScope::global})
                        for (DropPolicy policy : {DropPolicy::position, DropPolicy::probs}) {
                            // (probs, global) with a capacity is the layer's key exchange: MPI tests.
                            if (half_cf > 0 && scope == CapacityScope::global && policy == DropPolicy::probs)
                                continue;
                            if (k > P * EL) continue;
                            const int64_t T = 3 + (P * 7 + EL * 5 + half_cf) % 11;
                            cases.push_back(
                                {P, EL, T, k, half_cf, scope, policy, (P + EL + half_cf) % 2 == 0});
                        }
    return cases;
}

TEST(DispatchLayout, MatchesBruteForceOnEveryRank) {
    int num_cases = 0, num_with_drops = 0, num_with_shadows = 0;
    for (const Case& c : all_cases()) {
        const int P = c.P;
        const int64_t E = P * c.EL, EL = c.EL, T = c.T, k = c.k;
        const uint64_t seed = 1000 + num_cases;
        std::vector<RankSlots> ranks;
        for (int r = 0; r < P; ++r) ranks.push_back(draw_slots(seed, r, T, k, E));
        const Expected x = brute_force_keep(c, ranks);
        const LayerConfig config = config_of(c);
        ShadowPolicy policy = eager_shadow_policy(P, E);
        const int max_shadowed = c.shadow ? 2 : 0;
        SCOPED_TRACE("case " + std::to_string(num_cases) + ": P " + std::to_string(P) + " E " +
                     std::to_string(E) + " T " + std::to_string(T) + " k " + std::to_string(k) + " cf " +
                     std::to_string(0.5 * c.half_cf) +
                     (c.scope == CapacityScope::local ? " local" : " global") +
                     (c.policy == DropPolicy::position ? " position" : " probs"));

        // The counts, as every rank decides them.
        DispatchCounts counts;
        counts.resize(P, E, max_shadowed);
        counts.requested = x.requested;
        plan_counts(&counts, config, c.shadow ? &policy : nullptr);
        EXPECT_EQ(counts.capacity, x.capacity);
        EXPECT_EQ(counts.allowed, x.allowed);
        // Shadowing's choice is ShadowPolicy's (test_shadow_policy.cpp); here: its consequences.
        std::vector<int64_t> listed;
        for (int64_t e = 0; e < E; ++e)
            if (counts.shadowed[e]) listed.push_back(e);
        ASSERT_EQ(static_cast<int>(listed.size()), counts.num_shadowed);
        ASSERT_LE(counts.num_shadowed, max_shadowed);
        for (int i = 0; i < counts.num_shadowed; ++i) EXPECT_EQ(counts.shadow_expert[i], listed[i]);
        std::vector<int64_t> sent(P * E), rows(P * P, 0);
        for (int r = 0; r < P; ++r)
            for (int64_t e = 0; e < E; ++e) {
                sent[r * E + e] = counts.shadowed[e] ? 0 : x.allowed[r * E + e];
                rows[r * P + e / EL] += sent[r * E + e];
            }
        EXPECT_EQ(counts.sent, sent);
        EXPECT_EQ(counts.rows, rows);

        for (int me = 0; me < P; ++me) {
            DispatchLayout h;
            h.resize(P, E, max_shadowed, T, static_cast<int>(k));
            h.rank = me;
            h.requested = x.requested;
            plan_expert_order(&h, ranks[me].view(T, k));
            plan_counts(&h, config, c.shadow ? &policy : nullptr);
            plan_rows(&h, ranks[me].view(T, k), c.policy);
            plan_peers(&h);

            // Sender side: kept slots ordered by (shadowed, expert, slot) are the rows.
            std::vector<std::tuple<int, int64_t, int64_t>> order;
            for (int64_t s = 0; s < T * k; ++s)
                if (x.kept[me][s]) {
                    const int64_t e = ranks[me].expert[s];
                    order.emplace_back(counts.shadowed[e] ? 1 : 0, e, s);
                }
            std::sort(order.begin(), order.end());
            std::vector<int64_t> slot_row(T * k, -1), send_slot;
            int64_t num_send = 0;
            for (size_t i = 0; i < order.size(); ++i) {
                slot_row[std::get<2>(order[i])] = static_cast<int64_t>(i);
                send_slot.push_back(std::get<2>(order[i]));
                num_send += std::get<0>(order[i]) == 0;
            }
            EXPECT_EQ(h.kept, x.kept[me]) << "rank " << me;
            EXPECT_EQ(h.slot_row, slot_row) << "rank " << me;
            EXPECT_EQ(std::vector<int64_t>(h.send_slot.begin(), h.send_slot.begin() + send_slot.size()),
                      send_slot);
            EXPECT_EQ(h.num_send, num_send);
            EXPECT_EQ(h.num_shadow_rows, static_cast<int64_t>(order.size()) - num_send);
            for (int i = 0; i < h.num_shadowed; ++i) {
                int64_t before = 0;
                for (int j = 0; j < i; ++j) before += x.allowed[me * E + h.shadow_expert[j]];
                EXPECT_EQ(h.shadow_row_begin[i], before);
            }
            if (h.num_shadowed > 0) EXPECT_EQ(h.shadow_row_begin[h.num_shadowed], h.num_shadow_rows);

            // Peers and the owner's blocks.
            int64_t send_offset = 0, recv_offset = 0;
            for (int r = 0; r < P; ++r) {
                EXPECT_EQ(h.send_rows[r], rows[me * P + r]);
                EXPECT_EQ(h.recv_rows[r], rows[r * P + me]);
                EXPECT_EQ(h.send_offsets[r], send_offset);
                EXPECT_EQ(h.recv_offsets[r], recv_offset);
                send_offset += rows[me * P + r];
                recv_offset += rows[r * P + me];
            }
            EXPECT_EQ(h.num_recv, recv_offset);
            int64_t expert_major = 0;
            for (int64_t le = 0; le < EL; ++le) {
                EXPECT_EQ(h.expert_row_begin[le], expert_major);
                for (int r = 0; r < P; ++r) {
                    EXPECT_EQ(h.block_begin[le * P + r], expert_major);
                    EXPECT_EQ(h.block_rows(me, le, r), sent[r * E + me * EL + le]);
                    expert_major += sent[r * E + me * EL + le];
                }
            }
            EXPECT_EQ(h.expert_row_begin[EL], expert_major);
            for (int r = 0; r < P; ++r) {
                int64_t row = h.recv_offsets[r];
                for (int64_t le = 0; le < EL; ++le) {
                    EXPECT_EQ(h.source_block_row[r * EL + le], row);
                    row += sent[r * E + me * EL + le];
                }
            }
        }
        ++num_cases;
        num_with_drops += x.allowed != x.requested;
        num_with_shadows += counts.num_shadowed > 0;
    }
    // The brute force must have met what it is there to check.
    EXPECT_GT(num_cases, 200);
    EXPECT_GT(num_with_drops, num_cases / 3);
    EXPECT_GT(num_with_shadows, num_cases / 10);
}

// Rows whose values encode (token, column) travel out by the layout, through an "expert" that scales by
// (e + 1), back by the same offsets, and are combined; the result must equal Σ over kept slots of
// w·(e + 1)·x[t], and the backward passes must equal their direct sums too.
TEST(DispatchLayout, RowLoopsCarrySelfCheckingRows) {
    const int P = 3;
    const int64_t EL = 2, E = P * EL, T = 9, k = 2, d = 5;
    const Case c{P, EL, T, k, 2, CapacityScope::local, DropPolicy::position, true};
    const LayerConfig config = config_of(c);
    ShadowPolicy policy = eager_shadow_policy(P, E);
    std::vector<RankSlots> ranks;
    for (int r = 0; r < P; ++r) ranks.push_back(draw_slots(77, r, T, k, E));
    std::vector<DispatchLayout> layouts(P);
    std::vector<int64_t> requested(P * E, 0);
    for (int r = 0; r < P; ++r)
        for (int64_t s = 0; s < T * k; ++s)
            if (ranks[r].routed[s]) ++requested[r * E + ranks[r].expert[s]];
    for (int r = 0; r < P; ++r) {
        DispatchLayout& h = layouts[r];
        h.resize(P, E, 2, T, static_cast<int>(k));
        h.rank = r;
        h.requested = requested;
        plan_expert_order(&h, ranks[r].view(T, k));
        plan_counts(&h, config, &policy);
        plan_rows(&h, ranks[r].view(T, k), config.drop_policy);
        plan_peers(&h);
    }
    ASSERT_GT(layouts[0].num_shadowed, 0) << "the test must carry shadow rows too";
    auto x_of = [&](int r, int64_t t, int64_t i) { return static_cast<float>(r * 1000 + t * 10 + i); };
    std::vector<std::vector<float>> x(P, std::vector<float>(T * d)), send(P), recv(P), back(P);
    for (int r = 0; r < P; ++r)
        for (int64_t t = 0; t < T; ++t)
            for (int64_t i = 0; i < d; ++i) x[r][t * d + i] = x_of(r, t, i);
    for (int r = 0; r < P; ++r) {
        const DispatchLayout& h = layouts[r];
        send[r].assign((h.num_send + h.num_shadow_rows) * d, 0.0f);
        recv[r].assign(h.num_recv * d, 0.0f);
        back[r].assign((h.num_send + h.num_shadow_rows) * d, 0.0f);
        dispatch_pack(send[r].data(), x[r].data(), h.send_slot.data(), h.num_send + h.num_shadow_rows, k, d);
    }
    // The exchange, serially: src's rows for dst land at dst's recv offset of src.
    for (int src = 0; src < P; ++src)
        for (int dst = 0; dst < P; ++dst)
            std::copy_n(send[src].begin() + layouts[src].send_offsets[dst] * d,
                        layouts[src].send_rows[dst] * d,
                        recv[dst].begin() + layouts[dst].recv_offsets[src] * d);
    // The experts at the owner, block by block: scale by (global expert + 1).
    for (int me = 0; me < P; ++me)
        for (int src = 0; src < P; ++src)
            for (int64_t le = 0; le < EL; ++le) {
                float* block = recv[me].data() + layouts[me].source_block_row[src * EL + le] * d;
                for (int64_t i = 0; i < layouts[me].block_rows(me, le, src) * d; ++i)
                    block[i] *= static_cast<float>(me * EL + le + 1);
            }
    // Back by the reverse offsets; shadow rows are computed at the source.
    for (int src = 0; src < P; ++src)
        for (int dst = 0; dst < P; ++dst)
            std::copy_n(recv[dst].begin() + layouts[dst].recv_offsets[src] * d,
                        layouts[src].send_rows[dst] * d,
                        back[src].begin() + layouts[src].send_offsets[dst] * d);
    for (int r = 0; r < P; ++r) {
        const DispatchLayout& h = layouts[r];
        for (int i = 0; i < h.num_shadowed; ++i)
            for (int64_t row = h.shadow_row_begin[i]; row < h.shadow_row_begin[i + 1]; ++row)
                for (int64_t c2 = 0; c2 < d; ++c2)
                    back[r][(h.num_send + row) * d + c2] =
                        send[r][(h.num_send + row) * d + c2] * static_cast<float>(h.shadow_expert[i] + 1);
    }
    int64_t num_dropped = 0;
    for (int r = 0; r < P; ++r) {
        const DispatchLayout& h = layouts[r];
        std::vector<float> y(T * d), dy(T * d), drows(back[r].size()), dweight(T * k), dx(T * d);
        combine_forward(y.data(), back[r].data(), h.slot_row.data(), ranks[r].weight.data(), T, k, d);
        for (int64_t i = 0; i < T * d; ++i) dy[i] = 0.5f + static_cast<float>(i % 7);
        combine_backward(drows.data(), dweight.data(), dy.data(), back[r].data(), h.slot_row.data(),
                         ranks[r].weight.data(), T, k, d);
        dispatch_pack_backward(dx.data(), drows.data(), h.slot_row.data(), T, k, d);
        for (int64_t t = 0; t < T; ++t) {
            for (int64_t i = 0; i < d; ++i) {
                float expect_y = 0, expect_dx = 0;
                for (int64_t j = 0; j < k; ++j) {
                    const int64_t s = t * k + j;
                    if (!h.kept[s]) continue;
                    const float w = ranks[r].weight[s], scale = static_cast<float>(ranks[r].expert[s] + 1);
                    expect_y += w * (scale * x_of(r, t, i));
                    expect_dx += w * dy[t * d + i];
                }
                EXPECT_EQ(y[t * d + i], expect_y) << "rank " << r << " token " << t;
                EXPECT_EQ(dx[t * d + i], expect_dx) << "rank " << r << " token " << t;
            }
            for (int64_t j = 0; j < k; ++j) {
                const int64_t s = t * k + j;
                num_dropped += ranks[r].routed[s] && !h.kept[s];
                double expect = 0;
                if (h.kept[s])
                    for (int64_t i = 0; i < d; ++i)
                        expect += static_cast<double>(dy[t * d + i]) *
                                  (static_cast<float>(ranks[r].expert[s] + 1) * x_of(r, t, i));
                EXPECT_EQ(dweight[s], static_cast<float>(expect)) << "rank " << r << " slot " << s;
            }
        }
    }
    EXPECT_GT(num_dropped, 0) << "cf 1 on skewed routing must drop some slots";
}

}  // namespace
}  // namespace expar
