#include "activation.h"

#include <cmath>

namespace expar {

namespace {

// exp(x) for x in about [-87, 88]: x = n·ln2 + r, exp(r) by a degree-6 polynomial, 2^n by the exponent
// bits. Relative error about 2 ulp; written without branches so the loops vectorise.
__attribute__((always_inline)) inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    // Round to nearest by the 1.5·2^23 trick: vectorises where nearbyint would call libm.
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// Φ(x) = 0.5·erfc(−x/√2); erfc by Numerical Recipes' Chebyshev fit (fractional error < 1.2e-7).
__attribute__((always_inline)) inline float normal_cdf(float x) {
    const float z = -x * 0.70710678118654752f;
    const float az = std::fabs(z);
    const float t = 1.0f / (1.0f + 0.5f * az);
    const float poly =
        -az * az - 1.26551223f +
        t * (1.00002368f +
             t * (0.37409196f +
                  t * (0.09678418f +
                       t * (-0.18628806f +
                            t * (0.27886807f +
                                 t * (-1.13520398f +
                                      t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
    const float erfc_az = t * exp_approx(poly);
    const float erfc_z = z >= 0.0f ? erfc_az : 2.0f - erfc_az;
    return 0.5f * erfc_z;
}

__attribute__((always_inline)) inline float sigmoid(float x) {
    return 1.0f / (1.0f + exp_approx(-x));
}

#define EXPAR_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))

EXPAR_MULTIVERSION
void forward_kernel(Activation act, const float* h, const float* g, float* out, int64_t count) {
    switch (act) {
        case Activation::gelu:
            for (int64_t i = 0; i < count; ++i) out[i] = h[i] * normal_cdf(h[i]);
            break;
        case Activation::relu:
            for (int64_t i = 0; i < count; ++i) out[i] = h[i] > 0.0f ? h[i] : 0.0f;
            break;
        case Activation::silu:
            for (int64_t i = 0; i < count; ++i) out[i] = h[i] * sigmoid(h[i]);
            break;
        case Activation::swiglu:
            for (int64_t i = 0; i < count; ++i) out[i] = h[i] * sigmoid(h[i]) * g[i];
            break;
    }
}

EXPAR_MULTIVERSION
void backward_kernel(Activation act, const float* h, const float* g, float* da, float* dg, int64_t count) {
    constexpr float kInvSqrt2Pi = 0.39894228040143268f;
    switch (act) {
        case Activation::gelu:
            for (int64_t i = 0; i < count; ++i) {
                const float x = h[i];
                da[i] *= normal_cdf(x) + x * kInvSqrt2Pi * exp_approx(-0.5f * x * x);
            }
            break;
        case Activation::relu:
            for (int64_t i = 0; i < count; ++i) da[i] = h[i] > 0.0f ? da[i] : 0.0f;
            break;
        case Activation::silu:
            for (int64_t i = 0; i < count; ++i) {
                const float s = sigmoid(h[i]);
                da[i] *= s * (1.0f + h[i] * (1.0f - s));
            }
            break;
        case Activation::swiglu:
            for (int64_t i = 0; i < count; ++i) {
                // Read g before writing dg: callers may pass dg == g (in-place).
                const float s = sigmoid(h[i]), gi = g[i], dai = da[i];
                dg[i] = dai * h[i] * s;
                da[i] = dai * gi * s * (1.0f + h[i] * (1.0f - s));
            }
            break;
    }
}

}  // namespace

void activation_forward(Activation act, const float* h, const float* g, float* out, int64_t count) {
    forward_kernel(act, h, g, out, count);
}

void activation_backward(
    Activation act, const float* h, const float* g, float* da, float* dg, int64_t count) {
    backward_kernel(act, h, g, da, dg, count);
}

}  // namespace expar
