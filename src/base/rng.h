// Counter-based random numbers: every value is a pure function of (seed, stream, index).
// Tokens, parameters, gate noise and GShard's random routing are keyed by *global* indices, so the
// same seed gives the same numbers whatever the rank count or the order in which ranks draw them.
#pragma once

#include <cmath>
#include <cstdint>

namespace expar {

// Streams: one per kind of random quantity. Per-step streams add (step << 8).
enum RngStream : uint64_t {
    kStreamTokens = 1,        // x[t, i], per step
    kStreamUpstreamGrad = 2,  // dy[t, i], per step
    kStreamRouterW = 3,
    kStreamRouterNoiseW = 4,
    kStreamW1 = 5,
    kStreamB1 = 6,
    kStreamW2 = 7,
    kStreamB2 = 8,
    kStreamW3 = 9,
    kStreamGateNoise = 10,      // noisy-topk epsilon[t, e], per step
    kStreamGshardUniform = 11,  // gshard second-expert coin U[t], per step
    kStreamDataTrain = 12,      // training sequence g of the global batch: window offset or key, per step
    kStreamDataEval = 13,       // synthetic evaluation sequences; + split index
    kStreamSyntheticTables = 16,
    kStreamSyntheticSample = 17,  // per-sequence draws, seeded by the sequence key
    // The language model's dense parameters (src/train/model.h), indexed within the tensor stacked over
    // layers: layer l's element i of a [rows, cols] matrix is index l·rows·cols + i.
    kStreamWte = 18,
    kStreamWpe = 19,
    kStreamQkvW = 20,
    kStreamAttnProjW = 21,
    kStreamFfnFcW = 22,
    kStreamFfnProjW = 23,
    // The trainer's MoE blocks (src/train/moe_ffn.h): each block's seed is rng_bits(seed, kStreamMoeBlock,
    // block); the shared-expert and dense-branch FFNs draw from their own streams under that seed.
    kStreamMoeBlock = 24,
    kStreamSharedW1 = 25,
    kStreamSharedW2 = 26,
    kStreamSharedW3 = 27,
    kStreamDenseBranchW1 = 28,
    kStreamDenseBranchW2 = 29,
    // 30-31 left free. The simulator's routing (src/sim/routing.h), per step:
    kStreamSimRouting = 32,    // count path: expert draws of (rank, token), rejection retries included
    kStreamSimDirichlet = 33,  // per-rank Dirichlet expert preferences (gamma variates), fixed over steps
    kStreamSimScores = 34,     // gate path: Gumbel noise of the synthetic scores [token, expert]
    // expar calibrate (src/calibrate/calibrate.h): the experts of the row-work measurement's tokens.
    kStreamCalibrateRouting = 35,
};

inline uint64_t rng_per_step(uint64_t stream, int64_t step) {
    return stream + (static_cast<uint64_t>(step) << 8);
}

// SplitMix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mixer.
inline uint64_t rng_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

inline uint64_t rng_bits(uint64_t seed, uint64_t stream, uint64_t index) {
    return rng_mix(rng_mix(rng_mix(seed) ^ stream) ^ index);
}

// Uniform in [0, 1) with 24 random bits: exactly representable as float.
inline float rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return static_cast<float>(rng_bits(seed, stream, index) >> 40) * (1.0f / 16777216.0f);
}

// Standard normal by Box-Muller on two 53-bit uniforms (u1 in (0, 1], so log is finite).
inline float rng_normal(uint64_t seed, uint64_t stream, uint64_t index) {
    const uint64_t a = rng_bits(seed, stream, 2 * index);
    const uint64_t b = rng_bits(seed, stream, 2 * index + 1);
    const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

}  // namespace expar
