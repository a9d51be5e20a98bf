#include "token_rows.h"

#include <algorithm>
#include <cstring>

namespace expar {

void dispatch_pack(
    float* rows, const float* x, const int64_t* slot, int64_t num_rows, int64_t top_k, int64_t d) {
    for (int64_t i = 0; i < num_rows; ++i)
        std::memcpy(rows + i * d, x + (slot[i] / top_k) * d, sizeof(float) * d);
}

void combine_forward(float* y,
                     const float* rows,
                     const int64_t* slot_row,
                     const float* weight,
                     int64_t num_tokens,
                     int64_t top_k,
                     int64_t d) {
    for (int64_t t = 0; t < num_tokens; ++t) {
        float* out = y + t * d;
        std::fill(out, out + d, 0.0f);
        for (int64_t j = 0; j < top_k; ++j) {
            const int64_t row = slot_row[t * top_k + j];
            if (row < 0) continue;
            const float w = weight[t * top_k + j];
            const float* expert_out = rows + row * d;
            for (int64_t i = 0; i < d; ++i) out[i] += w * expert_out[i];
        }
    }
}

void combine_backward(float* drows,
                      float* dweight,
                      const float* dy,
                      const float* rows,
                      const int64_t* slot_row,
                      const float* weight,
                      int64_t num_tokens,
                      int64_t top_k,
                      int64_t d) {
    for (int64_t s = 0; s < num_tokens * top_k; ++s) {
        const int64_t row = slot_row[s];
        dweight[s] = 0.0f;
        if (row < 0) continue;
        const float* g = dy + (s / top_k) * d;
        const float* out = rows + row * d;
        float* drow = drows + row * d;
        const float w = weight[s];
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) {
            dot += static_cast<double>(g[i]) * out[i];
            drow[i] = w * g[i];
        }
        dweight[s] = static_cast<float>(dot);
    }
}

void dispatch_pack_backward(
    float* dx, const float* drows, const int64_t* slot_row, int64_t num_tokens, int64_t top_k, int64_t d) {
    for (int64_t t = 0; t < num_tokens; ++t) {
        float* out = dx + t * d;
        std::fill(out, out + d, 0.0f);
        for (int64_t j = 0; j < top_k; ++j) {
            const int64_t row = slot_row[t * top_k + j];
            if (row < 0) continue;
            const float* g = drows + row * d;
            for (int64_t i = 0; i < d; ++i) out[i] += g[i];
        }
    }
}

}  // namespace expar
