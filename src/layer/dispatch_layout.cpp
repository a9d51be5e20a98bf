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

void plan_expert_order(DispatchLayout* layout, const SlotRouting& routing) {
    const int64_t E = layout->num_experts, n = routing.num_tokens * routing.top_k;
    std::fill(layout->expert_begin.begin(), layout->expert_begin.end(), 0);
    for (int64_t s = 0; s < n; ++s)
        if (routing.routed[s]) ++layout->expert_begin[routing.expert[s] + 1];
    for (int64_t e = 0; e < E; ++e) layout->expert_begin[e + 1] += layout->expert_begin[e];
    std::copy(layout->expert_begin.begin(), layout->expert_begin.end() - 1, layout->expert_fill.begin());
    for (int64_t s = 0; s < n; ++s)
        if (routing.routed[s]) layout->by_expert[layout->expert_fill[routing.expert[s]]++] = s;
}

void plan_rows(DispatchLayout* layout, const SlotRouting& routing, DropPolicy drop_policy) {
    const int64_t E = layout->num_experts, me = layout->rank;
    std::fill(layout->kept.begin(), layout->kept.end(), 0);
    std::fill(layout->slot_row.begin(), layout->slot_row.end(), -1);
    int64_t row = 0;
    int shadow_slot = 0;
    // Pass 0: the network rows (expert-major, so grouped by owner); pass 1: the shadowed experts' rows.
    for (int pass = 0; pass < 2; ++pass) {
        for (int64_t e = 0; e < E; ++e) {
            if ((pass == 0) == (layout->shadowed[e] != 0)) continue;
            int64_t* segment = layout->by_expert.data() + layout->expert_begin[e];
            const int64_t count = layout->expert_begin[e + 1] - layout->expert_begin[e];
            const int64_t keep = layout->allowed[me * E + e];
            EXPAR_ASSERT(keep <= count);
            if (drop_policy == DropPolicy::probs && keep < count) {
                const float* w = routing.weight;
                std::sort(segment, segment + count, [w](int64_t a, int64_t b) {
                    if (w[a] != w[b]) return w[a] > w[b];
                    return a < b;
                });
                std::sort(segment, segment + keep);
            }
            if (pass == 1) layout->shadow_row_begin[shadow_slot++] = row - layout->num_send;
            for (int64_t i = 0; i < keep; ++i) {
                layout->kept[segment[i]] = 1;
                layout->slot_row[segment[i]] = row;
                layout->send_slot[row++] = segment[i];
            }
        }
        if (pass == 0) layout->num_send = row;
    }
    layout->num_shadow_rows = row - layout->num_send;
    if (layout->num_shadowed > 0) layout->shadow_row_begin[layout->num_shadowed] = layout->num_shadow_rows;
}

void plan_peers(DispatchLayout* layout) {
    const int64_t P = layout->num_ranks, E = layout->num_experts, EL = layout->num_local_experts,
                  me = layout->rank;
    int64_t send_offset = 0, recv_offset = 0;
    for (int64_t r = 0; r < P; ++r) {
        layout->send_rows[r] = layout->rows[me * P + r];
        layout->send_offsets[r] = send_offset;
        layout->recv_rows[r] = layout->rows[r * P + me];
        layout->recv_offsets[r] = recv_offset;
        send_offset += layout->send_rows[r];
        recv_offset += layout->recv_rows[r];
    }
    layout->num_recv = recv_offset;
    EXPAR_ASSERT(send_offset == layout->num_send);
    layout->expert_row_begin[0] = 0;
    for (int64_t le = 0; le < EL; ++le) {
        int64_t rows = layout->expert_row_begin[le];
        for (int64_t r = 0; r < P; ++r) {
            layout->block_begin[le * P + r] = rows;
            rows += layout->sent[r * E + me * EL + le];
        }
        layout->expert_row_begin[le + 1] = rows;
    }
    for (int64_t r = 0; r < P; ++r) {
        int64_t rows = layout->recv_offsets[r];
        for (int64_t le = 0; le < EL; ++le) {
            layout->source_block_row[r * EL + le] = rows;
            rows += layout->sent[r * E + me * EL + le];
        }
    }
}

}  // namespace expar
