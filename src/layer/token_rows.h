// The MoE layer's row loops between the gate and the exchange, as free functions over a dispatch
// layout's slot maps: pack (tokens → send rows), combine (returned rows → gate-weighted sum per token)
// and their backward passes. Slots are t·k + j; a row map entry < 0 is a dropped slot. Sums run over a
// token's slots in slot order, so the result does not depend on the rank count or the schedule.
#pragma once

#include <cstdint>

namespace expar {

// rows[i] = x[slot[i] / k] for i < num_rows: rows [num_rows, d], x [T, d], slot [num_rows].
void dispatch_pack(
    float* rows, const float* x, const int64_t* slot, int64_t num_rows, int64_t top_k, int64_t d);

// y[t] = Σ_j weight[t·k + j] · rows[slot_row[t·k + j]] over kept slots: y [T, d] (overwritten).
void combine_forward(float* y,
                     const float* rows,
                     const int64_t* slot_row,
                     const float* weight,
                     int64_t num_tokens,
                     int64_t top_k,
                     int64_t d);

// The combine's backward: per kept slot s of token t, drows[row] = weight[s] · dy[t] (the expert's output
// gradient) and dweight[s] = dy[t] · rows[row] (accumulated in double); dropped slots get dweight 0.
void combine_backward(float* drows,
                      float* dweight,
                      const float* dy,
                      const float* rows,
                      const int64_t* slot_row,
                      const float* weight,
                      int64_t num_tokens,
                      int64_t top_k,
                      int64_t d);

// The pack's backward: dx[t] = Σ_j drows[slot_row[t·k + j]] over kept slots: dx [T, d] (overwritten).
void dispatch_pack_backward(
    float* dx, const float* drows, const int64_t* slot_row, int64_t num_tokens, int64_t top_k, int64_t d);

}  // namespace expar
