// What dispatch decides, as one value: the [source rank × expert] count decisions every rank shares
// (capacity, kept, shadowed, the exchange's traffic) and one rank's row layout (slot → row, rows per
// peer, expert blocks). Built by the plan_* free functions below, with no MPI inside: the MoE layer,
// the simulator, calibration and the tests all call the same code. Formulas: docs/layer.md.
#pragma once

#include <cstdint>
#include <vector>

#include "config.h"
#include "shadow_policy.h"

namespace expar {

// The count decisions of one step, identical on every rank. P ranks, E experts, EL = E / P per rank;
// expert e lives on rank e / EL.
struct DispatchCounts {
    int num_ranks = 0;
    int64_t num_experts = 0, num_local_experts = 0;
    int64_t capacity = 0;                // per (scope group, expert); dropless: largest real load
    std::vector<int64_t> requested;      // [P, E] routed assignments per (source rank, expert)
    std::vector<int64_t> allowed;        // [P, E] of those, kept by capacity
    std::vector<int64_t> sent;           // [P, E] allowed, less the shadowed experts' columns (never travel)
    std::vector<uint8_t> shadowed;       // [E] experts replicated this step
    std::vector<int64_t> shadow_expert;  // [max_shadowed] the shadowed experts, ascending
    int num_shadowed = 0;
    std::vector<int64_t> rows;  // [P, P] token rows src → dst: Σ over dst's local experts of sent

    // Sizes every array once; max_shadowed bounds num_shadowed.
    void resize(int num_ranks, int64_t num_experts, int max_shadowed);
    // Rows expert `local_expert` of rank `owner` receives from `src`: one (owner, expert, source) block.
    int64_t block_rows(int owner, int64_t local_expert, int src) const {
        return sent[src * num_experts + owner * num_local_experts + local_expert];
    }
};

// Capacity and kept counts from `requested` (capacity.h): exact but for (probs, global) with overflow,
// where the split between sources is proportional (the layer decides that case by a key exchange and
// writes `allowed` itself, then goes on with plan_shadows).
void plan_capacity(DispatchCounts* counts, const LayerConfig& config);
// FasterMoE shadowing on the kept counts (policy null: none), then sent = allowed less shadowed columns.
void plan_shadows(DispatchCounts* counts, ShadowPolicy* policy);
// The exchange's traffic matrix rows[src][dst] from sent.
void plan_traffic(DispatchCounts* counts);
// All three in order: what every rank (and the simulator) decides from a count matrix.
void plan_counts(DispatchCounts* counts, const LayerConfig& config, ShadowPolicy* policy);

// One rank's routed slots (t·k + j), as the gate leaves them.
struct SlotRouting {
    const int32_t* expert;  // [T, k]
    const float* weight;    // [T, k] gate weight (the probs drop policy keeps the largest)
    const uint8_t* routed;  // [T, k] 0 for an unrouted slot (gshard's skipped second)
    int64_t num_tokens = 0, top_k = 0;
};

// The counts plus one rank's rows. Sender side: kept slots become rows, network rows expert-major (so
// grouped by owner in rank order), then the shadowed experts' rows, computed at the source. Owner side:
// received rows come source-major (the exchange's order); expert compute reads them expert-major in
// blocks (local expert, source), sources in rank order within an expert.
struct DispatchLayout : DispatchCounts {
    int rank = 0;
    int64_t num_skipped = 0;  // gshard's unrouted second slots, all ranks
    // Routed slots of this rank sorted by expert, stable in slot order (counting sort).
    std::vector<int64_t> by_expert;     // [T·k]
    std::vector<int64_t> expert_begin;  // [E + 1] segment of each expert in by_expert
    std::vector<int64_t> expert_fill;   // [E] scratch of the sort
    // Kept slots and their rows.
    std::vector<uint8_t> kept;       // [T, k]
    std::vector<int64_t> slot_row;   // [T·k] row of slot t·k + j, -1 if not kept
    std::vector<int64_t> send_slot;  // [num_send + num_shadow_rows] slot of each row
    int64_t num_send = 0, num_recv = 0;
    int64_t num_shadow_rows = 0;            // rows this rank computes itself on shadowed experts
    std::vector<int64_t> shadow_row_begin;  // [max_shadowed + 1] shadow rows of each shadowed expert
    // Rows per peer: to / from each rank, in the exchange's buffers.
    std::vector<int64_t> send_rows, send_offsets;  // [P]
    std::vector<int64_t> recv_rows, recv_offsets;  // [P]
    // Owner side blocks (local expert le, source r).
    std::vector<int64_t> expert_row_begin;  // [EL + 1] expert-major row offsets
    std::vector<int64_t> block_begin;       // [EL, P] expert-major row of block (le, r)
    std::vector<int64_t> source_block_row;  // [P, EL] source-major row of the same block

    void resize(int num_ranks, int64_t num_experts, int max_shadowed, int64_t num_tokens, int top_k);
};

// Sorts this rank's routed slots by expert (by_expert, expert_begin); stable in slot order.
void plan_expert_order(DispatchLayout* layout, const SlotRouting& routing);
// Keeps the first allowed[rank][e] slots of each expert (the position policy: in slot order; probs:
// largest weight first, ties to the lower slot, then back in slot order) and numbers the rows: kept,
// slot_row, send_slot, num_send, num_shadow_rows, shadow_row_begin. Needs plan_expert_order and the counts.
void plan_rows(DispatchLayout* layout, const SlotRouting& routing, DropPolicy drop_policy);
// Rows per peer and the owner's blocks from the counts: send/recv rows and offsets, num_recv,
// expert_row_begin, block_begin, source_block_row.
void plan_peers(DispatchLayout* layout);

}  // namespace expar
