// Deterministic synthetic inputs for `expar layer` and the tests: tokens, upstream gradients and the
// layer's parameters, each element a pure function of (seed, global index) (docs/layer.md), so any
// rank count generates the same global data.
#pragma once

#include <cstdint>

namespace expar {

// out[t, i] for local tokens t < num_tokens = normal(seed, per-step stream, (first_token + t)·width + i).
void synthetic_rows(float* out,
                    uint64_t seed,
                    uint64_t stream,
                    int64_t step,
                    int64_t first_token,
                    int64_t num_tokens,
                    int64_t width);

// out[i] = scale · normal(seed, stream, first_index + i) for i < count.
void synthetic_fill(
    float* out, uint64_t seed, uint64_t stream, int64_t first_index, int64_t count, float scale);

}  // namespace expar
