#include "layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "activation.h"
#include "blas.h"

namespace expar {

// ------------------------------------------------------------------------------------------------
// Embeddings

void encoder_forward(
    float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B, int64_t S, int64_t d) {
    for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s) {
            float* o = out + (b * S + s) * d;
            const float* tok = wte + static_cast<int64_t>(tokens[b * S + s]) * d;
            const float* pos = wpe + s * d;
            for (int64_t i = 0; i < d; ++i) o[i] = tok[i] + pos[i];
        }
}

void encoder_backward(
    float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B, int64_t S, int64_t d) {
    for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s) {
            const float* g = dout + (b * S + s) * d;
            float* dtok = dwte + static_cast<int64_t>(tokens[b * S + s]) * d;
            float* dpos = dwpe + s * d;
            for (int64_t i = 0; i < d; ++i) {
                dtok[i] += g[i];
                dpos[i] += g[i];
            }
        }
}

// ------------------------------------------------------------------------------------------------
// LayerNorm

void layernorm_forward(float* out,
                       float* mean,
                       float* rstd,
                       const float* in,
                       const float* weight,
                       const float* bias,
                       int64_t N,
                       int64_t d) {
    for (int64_t n = 0; n < N; ++n) {
        const float* x = in + n * d;
        // Two passes (mean, then centred variance): no cancellation when |mean| >> std.
        float m = 0.0f;
        for (int64_t i = 0; i < d; ++i) m += x[i];
        m /= static_cast<float>(d);
        float var = 0.0f;
        for (int64_t i = 0; i < d; ++i) var += (x[i] - m) * (x[i] - m);
        var /= static_cast<float>(d);
        const float r = 1.0f / std::sqrt(var + kLayerNormEps);
        float* o = out + n * d;
        for (int64_t i = 0; i < d; ++i) o[i] = (x[i] - m) * r * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = r;
    }
}

void layernorm_backward(float* din,
                        float* dweight,
                        float* dbias,
                        const float* dout,
                        const float* in,
                        const float* weight,
                        const float* mean,
                        const float* rstd,
                        int64_t N,
                        int64_t d) {
    for (int64_t n = 0; n < N; ++n) {
        const float* x = in + n * d;
        const float* g = dout + n * d;
        const float m = mean[n], r = rstd[n];
        // With xhat = (x − mean)·rstd and dxhat = w·dout:
        // din = rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)).
        float dxhat_mean = 0.0f, dxhat_xhat_mean = 0.0f;
        for (int64_t i = 0; i < d; ++i) {
            const float xhat = (x[i] - m) * r;
            const float dxhat = weight[i] * g[i];
            dxhat_mean += dxhat;
            dxhat_xhat_mean += dxhat * xhat;
            dbias[i] += g[i];
            dweight[i] += xhat * g[i];
        }
        dxhat_mean /= static_cast<float>(d);
        dxhat_xhat_mean /= static_cast<float>(d);
        float* dx = din + n * d;
        for (int64_t i = 0; i < d; ++i) {
            const float xhat = (x[i] - m) * r;
            dx[i] = r * (weight[i] * g[i] - dxhat_mean - xhat * dxhat_xhat_mean);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Matmul

void matmul_forward(
    float* out, const float* in, const float* weight, const float* bias, int64_t N, int64_t ic, int64_t oc) {
    // Start from the bias rows and let gemm accumulate onto them (beta = 1): one pass over out.
    float beta = 0.0f;
    if (bias != nullptr) {
        for (int64_t n = 0; n < N; ++n) std::memcpy(out + n * oc, bias, sizeof(float) * oc);
        beta = 1.0f;
    }
    gemm(false, false, N, oc, ic, 1.0f, in, weight, beta, out);
}

void matmul_backward(float* din,
                     float* dweight,
                     float* dbias,
                     const float* dout,
                     const float* in,
                     const float* weight,
                     int64_t N,
                     int64_t ic,
                     int64_t oc) {
    if (din != nullptr) gemm(false, true, N, ic, oc, 1.0f, dout, weight, 0.0f, din);  // dout·W^T
    gemm(true, false, ic, oc, N, 1.0f, in, dout, 1.0f, dweight);                      // += in^T·dout
    if (dbias != nullptr)
        for (int64_t n = 0; n < N; ++n) {
            const float* g = dout + n * oc;
            for (int64_t o = 0; o < oc; ++o) dbias[o] += g[o];
        }
}

// ------------------------------------------------------------------------------------------------
// Attention

namespace {

// Scratch regions, each [S,hs] except the [S,S] one (see attention_scratch_floats).
struct HeadScratch {
    float *q, *k, *v, *y, *dq, *dk, *dv, *datt;
};

HeadScratch carve_head_scratch(float* scratch, int64_t S, int64_t hs) {
    const int64_t block = S * hs;
    return {scratch,
            scratch + block,
            scratch + 2 * block,
            scratch + 3 * block,
            scratch + 4 * block,
            scratch + 5 * block,
            scratch + 6 * block,
            scratch + 7 * block};
}

// dst[s, 0..hs) = src[s·stride + 0..hs) for s < S: one head's columns out of a [S, stride] buffer.
void pack_head(float* dst, const float* src, int64_t S, int64_t hs, int64_t stride) {
    for (int64_t s = 0; s < S; ++s) std::memcpy(dst + s * hs, src + s * stride, sizeof(float) * hs);
}

void unpack_head(float* dst, const float* src, int64_t S, int64_t hs, int64_t stride) {
    for (int64_t s = 0; s < S; ++s) std::memcpy(dst + s * stride, src + s * hs, sizeof(float) * hs);
}

}  // namespace

int64_t attention_scratch_floats(int64_t S, int64_t d, int64_t H) {
    return 7 * S * (d / H) + S * S;
}

void attention_forward(
    float* out, float* att, const float* qkv, float* scratch, int64_t B, int64_t S, int64_t d, int64_t H) {
    const int64_t hs = d / H;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    const HeadScratch w = carve_head_scratch(scratch, S, hs);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
            const float* base = qkv + b * S * 3 * d + h * hs;
            pack_head(w.q, base, S, hs, 3 * d);
            pack_head(w.k, base + d, S, hs, 3 * d);
            pack_head(w.v, base + 2 * d, S, hs, 3 * d);
            float* a = att + (b * H + h) * S * S;
            // Full S×S scores although only the lower triangle is used: one gemm beats S short ones.
            gemm(false, true, S, S, hs, scale, w.q, w.k, 0.0f, a);
            for (int64_t t = 0; t < S; ++t) {
                float* row = a + t * S;
                float max_score = row[0];
                for (int64_t s = 1; s <= t; ++s) max_score = std::max(max_score, row[s]);
                float sum = 0.0f;
                for (int64_t s = 0; s <= t; ++s) {
                    row[s] = std::exp(row[s] - max_score);
                    sum += row[s];
                }
                const float inv_sum = 1.0f / sum;
                for (int64_t s = 0; s <= t; ++s) row[s] *= inv_sum;
                // Exact zeros above the diagonal make att·V causal without a second mask.
                for (int64_t s = t + 1; s < S; ++s) row[s] = 0.0f;
            }
            gemm(false, false, S, hs, S, 1.0f, a, w.v, 0.0f, w.y);
            unpack_head(out + b * S * d + h * hs, w.y, S, hs, d);
        }
}

void attention_backward(float* dqkv,
                        const float* dout,
                        const float* qkv,
                        const float* att,
                        float* scratch,
                        int64_t B,
                        int64_t S,
                        int64_t d,
                        int64_t H) {
    const int64_t hs = d / H;
    const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
    const HeadScratch w = carve_head_scratch(scratch, S, hs);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h) {
            const float* base = qkv + b * S * 3 * d + h * hs;
            pack_head(w.q, base, S, hs, 3 * d);
            pack_head(w.k, base + d, S, hs, 3 * d);
            pack_head(w.v, base + 2 * d, S, hs, 3 * d);
            pack_head(w.y, dout + b * S * d + h * hs, S, hs, d);  // w.y holds dy here
            const float* a = att + (b * H + h) * S * S;
            gemm(false, true, S, S, hs, 1.0f, w.y, w.v, 0.0f, w.datt);  // datt = dy·V^T
            gemm(true, false, S, hs, S, 1.0f, a, w.y, 0.0f, w.dv);      // dV = att^T·dy
            // Softmax backward row by row, in place: dscores = att ⊙ (datt − Σ_s att·datt), times the
            // score scale. Entries above the diagonal become 0 (att is 0 there), so dQ, dK stay causal.
            for (int64_t t = 0; t < S; ++t) {
                const float* p = a + t * S;
                float* g = w.datt + t * S;
                float dot = 0.0f;
                for (int64_t s = 0; s <= t; ++s) dot += p[s] * g[s];
                for (int64_t s = 0; s <= t; ++s) g[s] = scale * p[s] * (g[s] - dot);
                for (int64_t s = t + 1; s < S; ++s) g[s] = 0.0f;
            }
            gemm(false, false, S, hs, S, 1.0f, w.datt, w.k, 0.0f, w.dq);  // dQ = dscores·K
            gemm(true, false, S, hs, S, 1.0f, w.datt, w.q, 0.0f, w.dk);   // dK = dscores^T·Q
            float* dbase = dqkv + b * S * 3 * d + h * hs;
            unpack_head(dbase, w.dq, S, hs, 3 * d);
            unpack_head(dbase + d, w.dk, S, hs, 3 * d);
            unpack_head(dbase + 2 * d, w.dv, S, hs, 3 * d);
        }
}

// ------------------------------------------------------------------------------------------------
// GELU and residual

void gelu_forward(float* out, const float* in, int64_t n) {
    activation_forward(Activation::gelu, in, nullptr, out, n);
}

void gelu_backward(float* din, const float* dout, const float* in, int64_t n) {
    if (din != dout) std::memcpy(din, dout, sizeof(float) * n);
    activation_backward(Activation::gelu, in, nullptr, din, nullptr, n);  // in place: din *= gelu'(in)
}

void residual_forward(float* out, const float* x, const float* branch_out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] + branch_out[i];
}

void residual_backward(float* dx, const float* dbranch_in, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dx[i] += dbranch_in[i];
}

// ------------------------------------------------------------------------------------------------
// Cross-entropy with the tied LM head

void crossentropy_forward(float* logits,
                          float* lse,
                          float* losses,
                          const float* x,
                          const float* wte,
                          const int32_t* targets,
                          int64_t N,
                          int64_t d,
                          int64_t V) {
    gemm(false, true, N, V, d, 1.0f, x, wte, 0.0f, logits);  // x·wte^T
    for (int64_t n = 0; n < N; ++n) {
        const float* row = logits + n * V;
        float max_logit = row[0];
        for (int64_t v = 1; v < V; ++v) max_logit = std::max(max_logit, row[v]);
        // Σ exp(l − max) lies in [1, V]: no overflow. Float exp (its 1-ulp error is far below the loss's
        // own rounding), double sum so that V ~ 1e5 terms do not lose digits.
        double sum = 0.0;
        for (int64_t v = 0; v < V; ++v) sum += std::exp(row[v] - max_logit);
        const float log_sum = static_cast<float>(std::log(sum));
        lse[n] = max_logit + log_sum;
        // (max − target logit) first: exact-ish for large logits, where lse − logit would cancel.
        if (targets != nullptr) losses[n] = (max_logit - row[targets[n]]) + log_sum;
    }
}

void crossentropy_backward(float* dx,
                           float* dwte,
                           float* logits,
                           const float* lse,
                           const float* dlosses,
                           const float* x,
                           const float* wte,
                           const int32_t* targets,
                           int64_t N,
                           int64_t d,
                           int64_t V) {
    for (int64_t n = 0; n < N; ++n) {
        float* row = logits + n * V;
        const float g = dlosses[n];
        for (int64_t v = 0; v < V; ++v) row[v] = g * std::exp(row[v] - lse[n]);
        row[targets[n]] -= g;
    }
    gemm(false, false, N, d, V, 1.0f, logits, wte, 0.0f, dx);  // dx = dlogits·wte
    gemm(true, false, V, d, N, 1.0f, logits, x, 1.0f, dwte);   // dwte += dlogits^T·x
}

}  // namespace expar
