#include "reference_model.h"

#include "check.h"
#include "reference_layers.h"

namespace expar {

template <typename Real>
Real reference_gpt(const ModelConfig& c,
                   int64_t B,
                   const std::vector<Real>& params_in,
                   const int32_t* tokens,
                   const int32_t* targets,
                   const float* loss_weights,
                   std::vector<Real>* logits_out,
                   std::vector<Real>* grads_out) {
    EXPAR_REQUIRE(c.moe_every == 0, "the reference model is dense only (moe_every = 0)");
    EXPAR_REQUIRE(targets != nullptr, "the reference model needs targets");
    const int64_t S = c.seq_len, N = B * S, d = c.d_model, H = c.num_heads, f = c.d_ff_dense,
                  V = c.vocab_size, L = c.num_layers;
    EXPAR_ASSERT(static_cast<int64_t>(params_in.size()) == gpt_num_params(c));
    std::vector<Real> param_copy = params_in;  // point_params wants a non-const base
    const ParamViews<Real> p = point_params<Real>(c, param_copy.data(), nullptr);
    using Vec = std::vector<Real>;

    // Forward, keeping every activation per block.
    struct Block {
        Vec x, ln1, ln1_mean, ln1_rstd, qkv, att, atty, attn_out, mid, ln2, ln2_mean, ln2_rstd, h, a, ffn_out;
    };
    std::vector<Block> blocks(L);
    Vec x(N * d);
    encoder_forward_ref(x.data(), tokens, p.wte, p.wpe, B, S, d);
    for (int64_t l = 0; l < L; ++l) {
        const LayerParamViews<Real>& w = p.layers[l];
        Block& k = blocks[l];
        k.x = x;
        k.ln1.resize(N * d), k.ln1_mean.resize(N), k.ln1_rstd.resize(N), k.qkv.resize(N * 3 * d);
        k.att.resize(B * H * S * S), k.atty.resize(N * d), k.attn_out.resize(N * d), k.mid.resize(N * d);
        k.ln2.resize(N * d), k.ln2_mean.resize(N), k.ln2_rstd.resize(N), k.h.resize(N * f), k.a.resize(N * f);
        k.ffn_out.resize(N * d);
        layernorm_forward_ref(k.ln1.data(), k.ln1_mean.data(), k.ln1_rstd.data(), k.x.data(), w.ln1_w,
                              w.ln1_b, N, d);
        matmul_forward_ref(k.qkv.data(), k.ln1.data(), w.qkv_w, w.qkv_b, N, d, 3 * d);
        attention_forward_ref(k.atty.data(), k.att.data(), k.qkv.data(), B, S, d, H);
        matmul_forward_ref(k.attn_out.data(), k.atty.data(), w.attn_proj_w, w.attn_proj_b, N, d, d);
        residual_forward_ref(k.mid.data(), k.x.data(), k.attn_out.data(), N * d);
        layernorm_forward_ref(k.ln2.data(), k.ln2_mean.data(), k.ln2_rstd.data(), k.mid.data(), w.ln2_w,
                              w.ln2_b, N, d);
        matmul_forward_ref(k.h.data(), k.ln2.data(), w.ffn_fc_w, w.ffn_fc_b, N, d, f);
        gelu_forward_ref(k.a.data(), k.h.data(), N * f);
        matmul_forward_ref(k.ffn_out.data(), k.a.data(), w.ffn_proj_w, w.ffn_proj_b, N, f, d);
        residual_forward_ref(x.data(), k.mid.data(), k.ffn_out.data(), N * d);
    }
    Vec lnf(N * d), lnf_mean(N), lnf_rstd(N), logits(N * V), lse(N), losses(N), dlosses(N);
    layernorm_forward_ref(lnf.data(), lnf_mean.data(), lnf_rstd.data(), x.data(), p.lnf_w, p.lnf_b, N, d);
    crossentropy_forward_ref(logits.data(), lse.data(), losses.data(), lnf.data(), p.wte, targets, N, d, V);
    Real weight_sum = 0, loss = 0;
    for (int64_t n = 0; n < N; ++n) weight_sum += loss_weights != nullptr ? loss_weights[n] : 1;
    for (int64_t n = 0; n < N; ++n) {
        dlosses[n] = (loss_weights != nullptr ? loss_weights[n] : 1) / weight_sum;
        loss += dlosses[n] * losses[n];
    }
    if (logits_out != nullptr) *logits_out = logits;
    if (grads_out == nullptr) return loss;

    // Backward, mirroring gpt_backward with fresh buffers at every step.
    grads_out->assign(params_in.size(), Real(0));
    const ParamViews<Real> g = point_params<Real>(c, grads_out->data(), nullptr);
    Vec dlnf(N * d), dx(N * d);
    crossentropy_backward_ref(dlnf.data(), g.wte, logits.data(), lse.data(), dlosses.data(), lnf.data(),
                              p.wte, targets, N, d, V);
    layernorm_backward_ref(dx.data(), g.lnf_w, g.lnf_b, dlnf.data(), x.data(), p.lnf_w, lnf_mean.data(),
                           lnf_rstd.data(), N, d);
    for (int64_t l = L - 1; l >= 0; --l) {
        const LayerParamViews<Real>& w = p.layers[l];
        const LayerParamViews<Real>& gw = g.layers[l];
        const Block& k = blocks[l];
        Vec da(N * f), dh(N * f), dln2(N * d), dbranch(N * d), datty(N * d), dqkv(N * 3 * d), dln1(N * d);
        // dx holds dL/d(block output).
        matmul_backward_ref(da.data(), gw.ffn_proj_w, gw.ffn_proj_b, dx.data(), k.a.data(), w.ffn_proj_w, N,
                            f, d);
        gelu_backward_ref(dh.data(), da.data(), k.h.data(), N * f);
        matmul_backward_ref(dln2.data(), gw.ffn_fc_w, gw.ffn_fc_b, dh.data(), k.ln2.data(), w.ffn_fc_w, N, d,
                            f);
        layernorm_backward_ref(dbranch.data(), gw.ln2_w, gw.ln2_b, dln2.data(), k.mid.data(), w.ln2_w,
                               k.ln2_mean.data(), k.ln2_rstd.data(), N, d);
        residual_backward_ref(dx.data(), dbranch.data(), N * d);
        matmul_backward_ref(datty.data(), gw.attn_proj_w, gw.attn_proj_b, dx.data(), k.atty.data(),
                            w.attn_proj_w, N, d, d);
        attention_backward_ref(dqkv.data(), datty.data(), k.qkv.data(), k.att.data(), B, S, d, H);
        matmul_backward_ref(dln1.data(), gw.qkv_w, gw.qkv_b, dqkv.data(), k.ln1.data(), w.qkv_w, N, d, 3 * d);
        layernorm_backward_ref(dbranch.data(), gw.ln1_w, gw.ln1_b, dln1.data(), k.x.data(), w.ln1_w,
                               k.ln1_mean.data(), k.ln1_rstd.data(), N, d);
        residual_backward_ref(dx.data(), dbranch.data(), N * d);
    }
    encoder_backward_ref(g.wte, g.wpe, dx.data(), tokens, B, S, d);
    return loss;
}

template float reference_gpt(const ModelConfig&,
                             int64_t,
                             const std::vector<float>&,
                             const int32_t*,
                             const int32_t*,
                             const float*,
                             std::vector<float>*,
                             std::vector<float>*);
template double reference_gpt(const ModelConfig&,
                              int64_t,
                              const std::vector<double>&,
                              const int32_t*,
                              const int32_t*,
                              const float*,
                              std::vector<double>*,
                              std::vector<double>*);

}  // namespace expar
