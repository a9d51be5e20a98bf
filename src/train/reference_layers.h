// Plain-loop twins of every layer in layers.h: the oracle the BLAS layers and the model are tested
// against. No BLAS, no packing, no in-place tricks; written to be read next to the formulas. Templated on
// the scalar so finite-difference tests run in double. Same argument order, shapes and gradient contract
// as layers.h (parameter gradients +=, activation gradients overwritten), with two exceptions that keep
// them simple: crossentropy_backward_ref leaves the logits intact, and there is no scratch argument.
// Dimensions: B sequences, S positions, d width, H heads, V vocab, N rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace expar {

template <typename Real>
void encoder_forward_ref(
    Real* out, const int32_t* tokens, const Real* wte, const Real* wpe, int64_t B, int64_t S, int64_t d) {
    for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s)
            for (int64_t i = 0; i < d; ++i)
                out[(b * S + s) * d + i] = wte[tokens[b * S + s] * d + i] + wpe[s * d + i];
}

template <typename Real>
void encoder_backward_ref(
    Real* dwte, Real* dwpe, const Real* dout, const int32_t* tokens, int64_t B, int64_t S, int64_t d) {
    for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s)
            for (int64_t i = 0; i < d; ++i) {
                dwte[tokens[b * S + s] * d + i] += dout[(b * S + s) * d + i];
                dwpe[s * d + i] += dout[(b * S + s) * d + i];
            }
}

// eps as in layers.h (kLayerNormEps), repeated here so this header stands alone.
template <typename Real>
void layernorm_forward_ref(Real* out,
                           Real* mean,
                           Real* rstd,
                           const Real* in,
                           const Real* weight,
                           const Real* bias,
                           int64_t N,
                           int64_t d) {
    const Real eps = static_cast<Real>(1e-5f);
    for (int64_t n = 0; n < N; ++n) {
        Real m = 0, var = 0;
        for (int64_t i = 0; i < d; ++i) m += in[n * d + i];
        m /= d;
        for (int64_t i = 0; i < d; ++i) var += (in[n * d + i] - m) * (in[n * d + i] - m);
        var /= d;
        const Real r = 1 / std::sqrt(var + eps);
        for (int64_t i = 0; i < d; ++i) out[n * d + i] = (in[n * d + i] - m) * r * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = r;
    }
}

// Derived from out_i = w_i·xhat_i + b_i, xhat_i = (x_i − μ)·r, r = (σ² + eps)^(−1/2):
// ∂xhat_i/∂x_j = r·(δ_ij − 1/d − xhat_i·xhat_j/d).
template <typename Real>
void layernorm_backward_ref(Real* din,
                            Real* dweight,
                            Real* dbias,
                            const Real* dout,
                            const Real* in,
                            const Real* weight,
                            const Real* mean,
                            const Real* rstd,
                            int64_t N,
                            int64_t d) {
    std::vector<Real> xhat(d), dxhat(d);
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t i = 0; i < d; ++i) {
            xhat[i] = (in[n * d + i] - mean[n]) * rstd[n];
            dxhat[i] = weight[i] * dout[n * d + i];
            dweight[i] += xhat[i] * dout[n * d + i];
            dbias[i] += dout[n * d + i];
        }
        for (int64_t j = 0; j < d; ++j) {
            Real sum = 0;
            for (int64_t i = 0; i < d; ++i)
                sum += dxhat[i] * rstd[n] * ((i == j ? 1 : 0) - Real(1) / d - xhat[i] * xhat[j] / d);
            din[n * d + j] = sum;
        }
    }
}

template <typename Real>
void matmul_forward_ref(
    Real* out, const Real* in, const Real* weight, const Real* bias, int64_t N, int64_t ic, int64_t oc) {
    for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < oc; ++o) {
            Real sum = bias != nullptr ? bias[o] : 0;
            for (int64_t i = 0; i < ic; ++i) sum += in[n * ic + i] * weight[i * oc + o];
            out[n * oc + o] = sum;
        }
}

template <typename Real>
void matmul_backward_ref(Real* din,
                         Real* dweight,
                         Real* dbias,
                         const Real* dout,
                         const Real* in,
                         const Real* weight,
                         int64_t N,
                         int64_t ic,
                         int64_t oc) {
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t i = 0; i < ic; ++i) {
            Real sum = 0;
            for (int64_t o = 0; o < oc; ++o) {
                sum += dout[n * oc + o] * weight[i * oc + o];
                dweight[i * oc + o] += in[n * ic + i] * dout[n * oc + o];
            }
            if (din != nullptr) din[n * ic + i] = sum;
        }
        if (dbias != nullptr)
            for (int64_t o = 0; o < oc; ++o) dbias[o] += dout[n * oc + o];
    }
}

// qkv [B,S,3d] = [q | k | v]; att [B,H,S,S] softmax of q·k/sqrt(hs) over s' <= s, 0 above the diagonal.
template <typename Real>
void attention_forward_ref(
    Real* out, Real* att, const Real* qkv, int64_t B, int64_t S, int64_t d, int64_t H) {
    const int64_t hs = d / H;
    const Real scale = 1 / std::sqrt(static_cast<Real>(hs));
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < S; ++t) {
                const Real* q = qkv + (b * S + t) * 3 * d + h * hs;
                Real* a = att + ((b * H + h) * S + t) * S;
                Real max_score = -INFINITY;
                for (int64_t s = 0; s <= t; ++s) {
                    const Real* k = qkv + (b * S + s) * 3 * d + d + h * hs;
                    Real dot = 0;
                    for (int64_t i = 0; i < hs; ++i) dot += q[i] * k[i];
                    a[s] = dot * scale;
                    max_score = std::max(max_score, a[s]);
                }
                Real sum = 0;
                for (int64_t s = 0; s <= t; ++s) sum += (a[s] = std::exp(a[s] - max_score));
                for (int64_t s = 0; s <= t; ++s) a[s] /= sum;
                for (int64_t s = t + 1; s < S; ++s) a[s] = 0;
                Real* y = out + (b * S + t) * d + h * hs;
                for (int64_t i = 0; i < hs; ++i) {
                    Real acc = 0;
                    for (int64_t s = 0; s <= t; ++s)
                        acc += a[s] * qkv[(b * S + s) * 3 * d + 2 * d + h * hs + i];
                    y[i] = acc;
                }
            }
}

template <typename Real>
void attention_backward_ref(Real* dqkv,
                            const Real* dout,
                            const Real* qkv,
                            const Real* att,
                            int64_t B,
                            int64_t S,
                            int64_t d,
                            int64_t H) {
    const int64_t hs = d / H;
    const Real scale = 1 / std::sqrt(static_cast<Real>(hs));
    std::fill(dqkv, dqkv + B * S * 3 * d, Real(0));
    std::vector<Real> datt(S), dscore(S);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t t = 0; t < S; ++t) {
                const Real* a = att + ((b * H + h) * S + t) * S;
                const Real* dy = dout + (b * S + t) * d + h * hs;
                // y_t = Σ_s a_ts v_s  →  da_ts = dy_t·v_s,  dv_s += a_ts·dy_t.
                for (int64_t s = 0; s <= t; ++s) {
                    const Real* v = qkv + (b * S + s) * 3 * d + 2 * d + h * hs;
                    Real* dv = dqkv + (b * S + s) * 3 * d + 2 * d + h * hs;
                    datt[s] = 0;
                    for (int64_t i = 0; i < hs; ++i) {
                        datt[s] += dy[i] * v[i];
                        dv[i] += a[s] * dy[i];
                    }
                }
                // Softmax Jacobian: dscore_s = Σ_s' da_s'·a_s'·(δ_ss' − a_s).
                for (int64_t s = 0; s <= t; ++s) {
                    Real sum = 0;
                    for (int64_t s2 = 0; s2 <= t; ++s2) sum += datt[s2] * a[s2] * ((s == s2 ? 1 : 0) - a[s]);
                    dscore[s] = sum * scale;
                }
                // score_ts = q_t·k_s·scale.
                const Real* q = qkv + (b * S + t) * 3 * d + h * hs;
                Real* dq = dqkv + (b * S + t) * 3 * d + h * hs;
                for (int64_t s = 0; s <= t; ++s) {
                    const Real* k = qkv + (b * S + s) * 3 * d + d + h * hs;
                    Real* dk = dqkv + (b * S + s) * 3 * d + d + h * hs;
                    for (int64_t i = 0; i < hs; ++i) {
                        dq[i] += dscore[s] * k[i];
                        dk[i] += dscore[s] * q[i];
                    }
                }
            }
}

// gelu(x) = x·Φ(x), the exact erf form.
template <typename Real>
Real gelu_ref(Real x) {
    return x * Real(0.5) * std::erfc(-x / std::sqrt(Real(2)));
}

template <typename Real>
Real gelu_grad_ref(Real x) {
    const Real pi = Real(3.14159265358979323846);
    return Real(0.5) * std::erfc(-x / std::sqrt(Real(2))) + x * std::exp(-x * x / 2) / std::sqrt(2 * pi);
}

template <typename Real>
void gelu_forward_ref(Real* out, const Real* in, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = gelu_ref(in[i]);
}

template <typename Real>
void gelu_backward_ref(Real* din, const Real* dout, const Real* in, int64_t n) {
    for (int64_t i = 0; i < n; ++i) din[i] = dout[i] * gelu_grad_ref(in[i]);
}

template <typename Real>
void residual_forward_ref(Real* out, const Real* x, const Real* branch_out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] + branch_out[i];
}

template <typename Real>
void residual_backward_ref(Real* dx, const Real* dbranch_in, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dx[i] += dbranch_in[i];
}

// logits [N,V] = x·wte^T; lse [N]; losses [N] = lse − logit of the target (targets may be null).
template <typename Real>
void crossentropy_forward_ref(Real* logits,
                              Real* lse,
                              Real* losses,
                              const Real* x,
                              const Real* wte,
                              const int32_t* targets,
                              int64_t N,
                              int64_t d,
                              int64_t V) {
    for (int64_t n = 0; n < N; ++n) {
        Real* row = logits + n * V;
        Real max_logit = -INFINITY;
        for (int64_t v = 0; v < V; ++v) {
            Real sum = 0;
            for (int64_t i = 0; i < d; ++i) sum += x[n * d + i] * wte[v * d + i];
            row[v] = sum;
            max_logit = std::max(max_logit, sum);
        }
        Real sum = 0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - max_logit);
        lse[n] = max_logit + std::log(sum);
        if (targets != nullptr) losses[n] = lse[n] - row[targets[n]];
    }
}

// dx [N,d] overwritten, dwte [V,d] +=, for L = Σ_n dlosses[n]·losses[n]. logits are left intact.
template <typename Real>
void crossentropy_backward_ref(Real* dx,
                               Real* dwte,
                               const Real* logits,
                               const Real* lse,
                               const Real* dlosses,
                               const Real* x,
                               const Real* wte,
                               const int32_t* targets,
                               int64_t N,
                               int64_t d,
                               int64_t V) {
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t i = 0; i < d; ++i) dx[n * d + i] = 0;
        for (int64_t v = 0; v < V; ++v) {
            const Real p = std::exp(logits[n * V + v] - lse[n]);
            const Real dlogit = dlosses[n] * (p - (v == targets[n] ? 1 : 0));
            for (int64_t i = 0; i < d; ++i) {
                dx[n * d + i] += dlogit * wte[v * d + i];
                dwte[v * d + i] += dlogit * x[n * d + i];
            }
        }
    }
}

}  // namespace expar
