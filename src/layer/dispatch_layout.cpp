#include "dispatch_layout.h"

#include <algorithm>

#include "capacity.h"
#include "check.h"

namespace expar {

void DispatchCounts::resize(int P, int64_t E, int max_shadowed) {
    EXPAR_ASSERT(P > 0 && E % P == 0 && max_shadowed >= 0);
    num_ranks = P;
    num_experts = E;
    num_local_experts = E / P;
    requested.assign(P * E, 0);
    allowed.assign(P * E, 0);
    sent.assign(P * E, 0);
    shadowed.assign(E, 0);
    shadow_expert.assign(max_shadowed, -1);
    num_shadowed = 0;
    rows.assign(static_cast<int64_t>(P) * P, 0);
}

void plan_capacity(DispatchCounts* c, const LayerConfig& config) {
    c->capacity = capacity_of_step(config, c->requested.data(), c->num_ranks);
    capacity_allowed_from_counts(c->allowed.data(), c->requested.data(), c->num_ranks, config);
}

// FasterMoE Algorithm 1 on the kept-token matrix; every rank decides the same. Shadowed experts'
// tokens never travel: their columns of sent are zero.
void plan_shadows(DispatchCounts* c, ShadowPolicy* policy) {
    const int64_t P = c->num_ranks, E = c->num_experts;
    std::copy(c->allowed.begin(), c->allowed.end(), c->sent.begin());
    std::fill(c->shadowed.begin(), c->shadowed.end(), 0);
    c->num_shadowed = 0;
    if (!policy) return;
    c->num_shadowed =
        policy->select(c->shadowed.data(), c->allowed.data(), static_cast<int>(c->shadow_expert.size()));
    int slot = 0;
    for (int64_t e = 0; e < E; ++e) {
        if (!c->shadowed[e]) continue;
        c->shadow_expert[slot++] = e;
        for (int64_t r = 0; r < P; ++r) c->sent[r * E + e] = 0;
    }
}

void plan_traffic(DispatchCounts* c) {
    const int64_t P = c->num_ranks, E = c->num_experts, EL = c->num_local_experts;
    for (int64_t src = 0; src < P; ++src)
        for (int64_t dst = 0; dst < P; ++dst) {
            int64_t rows = 0;
            for (int64_t le = 0; le < EL; ++le) rows += c->sent[src * E + dst * EL + le];
            c->rows[src * P + dst] = rows;
        }
}

void plan_counts(DispatchCounts* c, const LayerConfig& config, ShadowPolicy* policy) {
    plan_capacity(c, config);
    plan_shadows(c, policy);
    plan_traffic(c);
}

void DispatchLayout::resize(int P, int64_t E, int max_shadowed, int64_t T, int k) {
    DispatchCounts::resize(P, E, max_shadowed);
    by_expert.assign(T * k, 0);
    expert_begin.assign(E + 1, 0);
    expert_fill.assign(E, 0);
    kept.assign(T * k, 0);
    slot_row.assign(T * k, -1);
    send_slot.assign(T * k, 0);
    shadow_row_begin.assign(max_shadowed + 1, 0);
    send_rows.assign(P, 0);
    send_offsets.assign(P, 0);
    recv_rows.assign(P, 0);
    recv_offsets.assign(P, 0);
    expert_row_begin.assign(num_local_experts + 1, 0);
    block_begin.assign(num_local_experts * P, 0);
    source_block_row.assign(P * num_local_experts, 0);
}

void plan_expert_order(DispatchLayout* h, const SlotRouting& routing) {
    const int64_t E = h->num_experts, n = routing.num_tokens * routing.top_k;
    std::fill(h->expert_begin.begin(), h->expert_begin.end(), 0);
    for (int64_t s = 0; s < n; ++s)
        if (routing.routed[s]) ++h->expert_begin[routing.expert[s] + 1];
    for (int64_t e = 0; e < E; ++e) h->expert_begin[e + 1] += h->expert_begin[e];
    std::copy(h->expert_begin.begin(), h->expert_begin.end() - 1, h->expert_fill.begin());
    for (int64_t s = 0; s < n; ++s)
        if (routing.routed[s]) h->by_expert[h->expert_fill[routing.expert[s]]++] = s;
}

void plan_rows(DispatchLayout* h, const SlotRouting& routing, DropPolicy drop_policy) {
    const int64_t E = h->num_experts, me = h->rank;
    std::fill(h->kept.begin(), h->kept.end(), 0);
    std::fill(h->slot_row.begin(), h->slot_row.end(), -1);
    int64_t row = 0;
    int shadow_slot = 0;
    // Pass 0: the network rows (expert-major, so grouped by owner); pass 1: the shadowed experts' rows.
    for (int pass = 0; pass < 2; ++pass) {
        for (int64_t e = 0; e < E; ++e) {
            if ((pass == 0) == (h->shadowed[e] != 0)) continue;
            int64_t* segment = h->by_expert.data() + h->expert_begin[e];
            const int64_t count = h->expert_begin[e + 1] - h->expert_begin[e];
            const int64_t keep = h->allowed[me * E + e];
            EXPAR_ASSERT(keep <= count);
            if (drop_policy == DropPolicy::probs && keep < count) {
                const float* w = routing.weight;
                std::sort(segment, segment + count, [w](int64_t a, int64_t b) {
                    if (w[a] != w[b]) return w[a] > w[b];
                    return a < b;
                });
                std::sort(segment, segment + keep);
            }
            if (pass == 1) h->shadow_row_begin[shadow_slot++] = row - h->num_send;
            for (int64_t i = 0; i < keep; ++i) {
                h->kept[segment[i]] = 1;
                h->slot_row[segment[i]] = row;
                h->send_slot[row++] = segment[i];
            }
        }
        if (pass == 0) h->num_send = row;
    }
    h->num_shadow_rows = row - h->num_send;
    if (h->num_shadowed > 0) h->shadow_row_begin[h->num_shadowed] = h->num_shadow_rows;
}

void plan_peers(DispatchLayout* h) {
    const int64_t P = h->num_ranks, E = h->num_experts, EL = h->num_local_experts, me = h->rank;
    int64_t send_offset = 0, recv_offset = 0;
    for (int64_t r = 0; r < P; ++r) {
        h->send_rows[r] = h->rows[me * P + r];
        h->send_offsets[r] = send_offset;
        h->recv_rows[r] = h->rows[r * P + me];
        h->recv_offsets[r] = recv_offset;
        send_offset += h->send_rows[r];
        recv_offset += h->recv_rows[r];
    }
    h->num_recv = recv_offset;
    EXPAR_ASSERT(send_offset == h->num_send);
    h->expert_row_begin[0] = 0;
    for (int64_t le = 0; le < EL; ++le) {
        int64_t rows = h->expert_row_begin[le];
        for (int64_t r = 0; r < P; ++r) {
            h->block_begin[le * P + r] = rows;
            rows += h->sent[r * E + me * EL + le];
        }
        h->expert_row_begin[le + 1] = rows;
    }
    for (int64_t r = 0; r < P; ++r) {
        int64_t rows = h->recv_offsets[r];
        for (int64_t le = 0; le < EL; ++le) {
            h->source_block_row[r * EL + le] = rows;
            rows += h->sent[r * E + me * EL + le];
        }
    }
}

}  // namespace expar
