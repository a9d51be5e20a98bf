// Elementwise activations of the expert FFN and their derivatives, vectorisable (no libm calls in
// the loops) and compiled for AVX-512, AVX2 and baseline x86-64 with run-time dispatch.
// gelu is the exact erf form x·Φ(x), with erfc from a rational approximation of relative error < 1.2e-7.
#pragma once

#include <cstdint>

#include "config.h"

namespace expar {

// out[i] = act(h[i]); for swiglu, out[i] = silu(h[i]) * g[i].
void activation_forward(Activation act, const float* h, const float* g, float* out, int64_t count);

// Given da = dL/d(out): for non-swiglu, da[i] <- da[i] * act'(h[i]) (in place: becomes dh).
// For swiglu: dg[i] = da[i] * silu(h[i]) and da[i] <- da[i] * g[i] * silu'(h[i]); dg may alias g.
void activation_backward(Activation act, const float* h, const float* g, float* da, float* dg, int64_t count);

}  // namespace expar
