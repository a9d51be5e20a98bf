// The dense layers of the Transformer language model as llm.c-style free functions: outputs first, then
// inputs, then dimensions. Matrix products go through BLAS (src/layer/blas.h); the plain-loop double twin
// of every function is in reference_layers.h and the tests hold the two against each other.
//
// Dimensions: B = sequences, S = sequence length, d = model width, H = heads, V = vocab, N = rows
// (any number of token rows, usually B·S), ic/oc = input/output width of a matmul. Row-major throughout.
//
// Gradient contract (every *_backward):
//   - parameter gradients (dweight, dbias, dwte, dwpe) ACCUMULATE (+=), so gradient accumulation over
//     micro-batches and the tied embedding (encoder + LM head both add into dwte) need no extra code;
//   - activation gradients (din, dqkv, dx) are OVERWRITTEN, so the activation-gradient buffers never need
//     zeroing. Where an activation feeds two consumers (the residual stream), residual_backward adds the
//     branch's gradient into the stream's explicitly.
#pragma once

#include <cstdint>

namespace expar {

constexpr float kLayerNormEps = 1e-5f;  // GPT-2's LayerNorm epsilon

// ------------------------------------------------------------------------------------------------
// Token + learned position embeddings.

// out[b,s,:] = wte[tokens[b,s],:] + wpe[s,:].  tokens [B,S] in [0,V), wte [V,d], wpe [S',d] with S' >= S.
void encoder_forward(
    float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t B, int64_t S, int64_t d);
// dwte[tokens[b,s],:] += dout[b,s,:];  dwpe[s,:] += dout[b,s,:].
void encoder_backward(
    float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int64_t B, int64_t S, int64_t d);

// ------------------------------------------------------------------------------------------------
// LayerNorm over the last dimension; mean and rstd = 1/sqrt(var + eps) are saved for the backward.

// out [N,d], mean [N], rstd [N], in [N,d], weight [d], bias [d].
void layernorm_forward(float* out,
                       float* mean,
                       float* rstd,
                       const float* in,
                       const float* weight,
                       const float* bias,
                       int64_t N,
                       int64_t d);
// din [N,d] overwritten; dweight, dbias [d] accumulate.
void layernorm_backward(float* din,
                        float* dweight,
                        float* dbias,
                        const float* dout,
                        const float* in,
                        const float* weight,
                        const float* mean,
                        const float* rstd,
                        int64_t N,
                        int64_t d);

// ------------------------------------------------------------------------------------------------
// Affine map out = in·W + b through BLAS. W is stored [ic, oc] (input-major, as x·W reads).

// out [N,oc], in [N,ic], weight [ic,oc], bias [oc] or null.
void matmul_forward(
    float* out, const float* in, const float* weight, const float* bias, int64_t N, int64_t ic, int64_t oc);
// din [N,ic] overwritten (skipped when null); dweight [ic,oc] and dbias [oc] (may be null) accumulate.
void matmul_backward(float* din,
                     float* dweight,
                     float* dbias,
                     const float* dout,
                     const float* in,
                     const float* weight,
                     int64_t N,
                     int64_t ic,
                     int64_t oc);

// ------------------------------------------------------------------------------------------------
// Causal multi-head self-attention on a fused qkv buffer: qkv[b,s,:] = [q | k | v], each d wide, head h
// using columns [h·hs, (h+1)·hs) of each with hs = d/H. Scores are scaled by 1/sqrt(hs). Position s
// attends to positions 0..s only. QK^T and AV are one BLAS call per (b,h) on packed head copies.

// Floats of the per-(b,h) scratch both passes need: 7 packed [S,hs] head blocks and one [S,S] block.
int64_t attention_scratch_floats(int64_t S, int64_t d, int64_t H);
// out [B,S,d], att [B,H,S,S] (the softmax, saved; zero above the diagonal), qkv [B,S,3d].
void attention_forward(
    float* out, float* att, const float* qkv, float* scratch, int64_t B, int64_t S, int64_t d, int64_t H);
// dqkv [B,S,3d] overwritten, from dout [B,S,d] and the saved qkv and att.
void attention_backward(float* dqkv,
                        const float* dout,
                        const float* qkv,
                        const float* att,
                        float* scratch,
                        int64_t B,
                        int64_t S,
                        int64_t d,
                        int64_t H);

// ------------------------------------------------------------------------------------------------
// GELU, exact erf form x·Φ(x) (src/layer/activation.h), elementwise over n values.

void gelu_forward(float* out, const float* in, int64_t n);
// din = dout·gelu'(in), overwritten; din may alias dout.
void gelu_backward(float* din, const float* dout, const float* in, int64_t n);

// ------------------------------------------------------------------------------------------------
// Residual connection out = x + branch(x), over n values.

void residual_forward(float* out, const float* x, const float* branch_out, int64_t n);
// The skip path passes dout through unchanged, so the caller keeps dL/dout in dx and this adds the
// branch's gradient with respect to x: on entry dx = dL/dout, on exit dx = dL/dout + dbranch_in = dL/dx.
void residual_backward(float* dx, const float* dbranch_in, int64_t n);

// ------------------------------------------------------------------------------------------------
// Cross-entropy fused with the LM head tied to the token embedding: logits = x·wte^T, then a stable
// (max-subtracted) log-softmax. The [N,V] logits are the largest activation, so the backward turns them
// into dlogits in place instead of keeping a second [N,V] buffer.

// logits [N,V], lse [N] = log Σ_v exp(logits[n,v]), x [N,d], wte [V,d].
// With targets [N] (in [0,V)), also losses[n] = lse[n] − logits[n, targets[n]]; targets may be null
// (logits only; losses untouched).
void crossentropy_forward(float* logits,
                          float* lse,
                          float* losses,
                          const float* x,
                          const float* wte,
                          const int32_t* targets,
                          int64_t N,
                          int64_t d,
                          int64_t V);
// Given dlosses[n] = dL/dlosses[n] (e.g. weight_n / Σ weights for a weighted mean):
// dx [N,d] overwritten, dwte [V,d] accumulates the LM head's share. logits is DESTROYED: it holds
// dlogits = dlosses[n]·(softmax − onehot(target)) on return.
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
                           int64_t V);

}  // namespace expar
