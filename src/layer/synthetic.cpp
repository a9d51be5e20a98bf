#include "synthetic.h"

#include "rng.h"

namespace expar {

void synthetic_rows(float* out,
                    uint64_t seed,
                    uint64_t stream,
                    int64_t step,
                    int64_t first_token,
                    int64_t num_tokens,
                    int64_t width) {
    const uint64_t step_stream = rng_per_step(stream, step);
    for (int64_t t = 0; t < num_tokens; ++t)
        for (int64_t i = 0; i < width; ++i)
            out[t * width + i] =
                rng_normal(seed, step_stream, static_cast<uint64_t>((first_token + t) * width + i));
}

void synthetic_fill(
    float* out, uint64_t seed, uint64_t stream, int64_t first_index, int64_t count, float scale) {
    for (int64_t i = 0; i < count; ++i)
        out[i] = scale * rng_normal(seed, stream, static_cast<uint64_t>(first_index + i));
}

}  // namespace expar
