#include "model.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "check.h"
#include "layers.h"
#include "rng.h"
#include "synthetic.h"

namespace expar {

void validate(const ModelConfig& c) {
    EXPAR_REQUIRE(c.vocab_size > 0, "--vocab-size must be positive (got " << c.vocab_size << ")");
    EXPAR_REQUIRE(c.vocab_size <= std::numeric_limits<int32_t>::max(),
                  "--vocab-size " << c.vocab_size << " does not fit 32-bit token ids");
    EXPAR_REQUIRE(c.seq_len > 0, "--seq-len must be positive (got " << c.seq_len << ")");
    EXPAR_REQUIRE(c.d_model > 0, "--d-model must be positive (got " << c.d_model << ")");
    EXPAR_REQUIRE(c.num_heads > 0, "--num-heads must be positive (got " << c.num_heads << ")");
    EXPAR_REQUIRE(c.d_model % c.num_heads == 0,
                  "--d-model " << c.d_model << " is not divisible by --num-heads " << c.num_heads);
    EXPAR_REQUIRE(c.num_layers > 0, "--num-layers must be positive (got " << c.num_layers << ")");
    EXPAR_REQUIRE(c.d_ff_dense > 0, "--d-ff-dense must be positive (got " << c.d_ff_dense << ")");
    EXPAR_REQUIRE(c.moe_every >= 0, "--moe-every must be >= 0 (got " << c.moe_every << ")");
    EXPAR_REQUIRE(c.moe_every <= c.num_layers, "--moe-every " << c.moe_every << " exceeds --num-layers "
                                                              << c.num_layers << ": no block would be MoE");
    EXPAR_REQUIRE(std::isfinite(c.init_std) && c.init_std > 0.0f,
                  "--init-std must be finite and positive (got " << c.init_std << ")");
}

bool model_layer_is_moe(const ModelConfig& config, int64_t layer) {
    return config.moe_every > 0 && (layer + 1) % config.moe_every == 0;
}

// ------------------------------------------------------------------------------------------------
// Parameter layout

template <typename T>
ParamViews<T> point_params(const ModelConfig& c, T* base, std::vector<ParamTensor>* layout) {
    const int64_t V = c.vocab_size, S = c.seq_len, d = c.d_model, f = c.d_ff_dense;
    int64_t offset = 0;
    auto take = [&](const std::string& name, std::vector<int64_t> shape) -> T* {
        int64_t count = 1;
        for (int64_t extent : shape) count *= extent;
        if (layout != nullptr)
            layout->push_back(ParamTensor{name, shape, offset, count, nullptr, nullptr, /*replicated=*/true});
        T* view = base != nullptr ? base + offset : nullptr;
        offset += count;
        return view;
    };
    ParamViews<T> p{};
    p.wte = take("wte", {V, d});
    p.wpe = take("wpe", {S, d});
    p.layers.resize(c.num_layers);
    for (int64_t l = 0; l < c.num_layers; ++l) {
        const std::string prefix = "h" + std::to_string(l) + ".";
        LayerParamViews<T>& q = p.layers[l];
        q = LayerParamViews<T>{};
        q.ln1_w = take(prefix + "ln1_w", {d});
        q.ln1_b = take(prefix + "ln1_b", {d});
        q.qkv_w = take(prefix + "qkv_w", {d, 3 * d});
        q.qkv_b = take(prefix + "qkv_b", {3 * d});
        q.attn_proj_w = take(prefix + "attn_proj_w", {d, d});
        q.attn_proj_b = take(prefix + "attn_proj_b", {d});
        q.ln2_w = take(prefix + "ln2_w", {d});
        q.ln2_b = take(prefix + "ln2_b", {d});
        if (!model_layer_is_moe(c, l)) {
            q.ffn_fc_w = take(prefix + "ffn_fc_w", {d, f});
            q.ffn_fc_b = take(prefix + "ffn_fc_b", {f});
            q.ffn_proj_w = take(prefix + "ffn_proj_w", {f, d});
            q.ffn_proj_b = take(prefix + "ffn_proj_b", {d});
        }
    }
    p.lnf_w = take("lnf_w", {d});
    p.lnf_b = take("lnf_b", {d});
    return p;
}

template ParamViews<float> point_params(const ModelConfig&, float*, std::vector<ParamTensor>*);
template ParamViews<double> point_params(const ModelConfig&, double*, std::vector<ParamTensor>*);

int64_t gpt_num_params(const ModelConfig& config) {
    std::vector<ParamTensor> layout;
    point_params<float>(config, nullptr, &layout);
    return layout.back().offset + layout.back().count;
}

// ------------------------------------------------------------------------------------------------
// Dense FFN

DenseFfn::DenseFfn(const LayerParamViews<float>& params,
                   const LayerParamViews<float>& grads,
                   float* h,
                   float* a,
                   float* dh,
                   int64_t d,
                   int64_t f,
                   int64_t max_rows)
    : params_(params), grads_(grads), h_(h), a_(a), dh_(dh), d_(d), f_(f), max_rows_(max_rows) {}

void DenseFfn::forward(float* out, const float* in, int64_t rows) {
    EXPAR_ASSERT(rows <= max_rows_);
    matmul_forward(h_, in, params_.ffn_fc_w, params_.ffn_fc_b, rows, d_, f_);
    gelu_forward(a_, h_, rows * f_);
    matmul_forward(out, a_, params_.ffn_proj_w, params_.ffn_proj_b, rows, f_, d_);
    in_ = in;
}

void DenseFfn::backward(float* din, const float* dout, int64_t rows) {
    EXPAR_ASSERT(in_ != nullptr && rows <= max_rows_);
    matmul_backward(dh_, grads_.ffn_proj_w, grads_.ffn_proj_b, dout, a_, params_.ffn_proj_w, rows, f_, d_);
    gelu_backward(dh_, dh_, h_, rows * f_);
    matmul_backward(din, grads_.ffn_fc_w, grads_.ffn_fc_b, dh_, in_, params_.ffn_fc_w, rows, d_, f_);
}

void DenseFfn::zero_grads() {
    std::memset(grads_.ffn_fc_w, 0, sizeof(float) * d_ * f_);
    std::memset(grads_.ffn_fc_b, 0, sizeof(float) * f_);
    std::memset(grads_.ffn_proj_w, 0, sizeof(float) * f_ * d_);
    std::memset(grads_.ffn_proj_b, 0, sizeof(float) * d_);
}

// ------------------------------------------------------------------------------------------------
// Activation layout

namespace {

// Same two-pass idea as point_params: base null measures, base set points.
ModelActivations point_activations(const ModelConfig& c, int64_t B, float* base, int64_t* total) {
    const int64_t S = c.seq_len, N = B * S, d = c.d_model, f = c.d_ff_dense, V = c.vocab_size,
                  H = c.num_heads;
    int64_t offset = 0;
    auto take = [&](int64_t count) -> float* {
        float* view = base != nullptr ? base + offset : nullptr;
        offset += count;
        return view;
    };
    ModelActivations a{};
    a.encoded = take(N * d);
    a.layers.resize(c.num_layers);
    for (int64_t l = 0; l < c.num_layers; ++l) {
        LayerActivations& la = a.layers[l];
        la = LayerActivations{};
        la.ln1 = take(N * d);
        la.ln1_mean = take(N);
        la.ln1_rstd = take(N);
        la.qkv = take(N * 3 * d);
        la.att = take(B * H * S * S);
        la.atty = take(N * d);
        la.resid_mid = take(N * d);
        la.ln2 = take(N * d);
        la.ln2_mean = take(N);
        la.ln2_rstd = take(N);
        if (!model_layer_is_moe(c, l)) {
            la.ffn_h = take(N * f);
            la.ffn_a = take(N * f);
        }
        la.resid_out = take(N * d);
    }
    a.lnf = take(N * d);
    a.lnf_mean = take(N);
    a.lnf_rstd = take(N);
    a.logits = take(N * V);
    a.lse = take(N);
    a.losses = take(N);
    a.dlosses = take(N);
    a.branch = take(N * d);
    a.attn_scratch = take(attention_scratch_floats(S, d, H));
    a.dres = take(N * d);
    a.dbranch = take(N * d);
    a.dnorm = take(N * d);
    a.dqkv = take(N * 3 * d);
    a.dffn_h = take(N * f);
    *total = offset;
    return a;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Model

GptModel::GptModel(const ModelConfig& config_in, int64_t batch_size_in)
    : config(config_in), batch_size(batch_size_in), num_rows(batch_size_in * config_in.seq_len) {
    validate(config);
    EXPAR_REQUIRE(batch_size > 0, "--batch-size must be positive (got " << batch_size << ")");
    const int64_t L = config.num_layers, d = config.d_model, f = config.d_ff_dense;

    point_params<float>(config, nullptr, &tensors);
    const int64_t num_params = tensors.back().offset + tensors.back().count;
    param_memory.assign(num_params, 0.0f);
    grad_memory.assign(num_params, 0.0f);
    params = point_params<float>(config, param_memory.data(), nullptr);
    grads = point_params<float>(config, grad_memory.data(), nullptr);
    for (ParamTensor& t : tensors) {
        t.param = param_memory.data() + t.offset;
        t.grad = grad_memory.data() + t.offset;
    }

    int64_t num_act_floats = 0;
    point_activations(config, batch_size, nullptr, &num_act_floats);
    act_memory.assign(num_act_floats, 0.0f);
    acts = point_activations(config, batch_size, act_memory.data(), &num_act_floats);

    dense_ffns.resize(L);
    ffn.assign(L, nullptr);
    for (int64_t l = 0; l < L; ++l) {
        if (model_layer_is_moe(config, l)) continue;
        dense_ffns[l] = std::make_unique<DenseFfn>(params.layers[l], grads.layers[l], acts.layers[l].ffn_h,
                                                   acts.layers[l].ffn_a, acts.dffn_h, d, f, num_rows);
        ffn[l] = dense_ffns[l].get();
    }
    tokens.assign(num_rows, 0);
    targets.assign(num_rows, 0);
}

void gpt_init_params(GptModel& model, uint64_t seed) {
    const ModelConfig& c = model.config;
    const int64_t V = c.vocab_size, S = c.seq_len, d = c.d_model, f = c.d_ff_dense, L = c.num_layers;
    const float std_dev = c.init_std;
    // GPT-2: the two projections that write into the residual stream are scaled by 1/sqrt(2L) so the
    // stream's variance does not grow with depth (2 residual adds per block).
    const float residual_std = std_dev / std::sqrt(2.0f * static_cast<float>(L));
    ModelParams& p = model.params;
    synthetic_fill(p.wte, seed, kStreamWte, 0, V * d, std_dev);
    synthetic_fill(p.wpe, seed, kStreamWpe, 0, S * d, std_dev);
    auto fill = [](float* x, int64_t n, float value) {
        for (int64_t i = 0; i < n; ++i) x[i] = value;
    };
    for (int64_t l = 0; l < L; ++l) {
        LayerParamViews<float>& q = p.layers[l];
        fill(q.ln1_w, d, 1.0f);
        fill(q.ln1_b, d, 0.0f);
        synthetic_fill(q.qkv_w, seed, kStreamQkvW, l * d * 3 * d, d * 3 * d, std_dev);
        fill(q.qkv_b, 3 * d, 0.0f);
        synthetic_fill(q.attn_proj_w, seed, kStreamAttnProjW, l * d * d, d * d, residual_std);
        fill(q.attn_proj_b, d, 0.0f);
        fill(q.ln2_w, d, 1.0f);
        fill(q.ln2_b, d, 0.0f);
        if (model_layer_is_moe(c, l)) continue;
        synthetic_fill(q.ffn_fc_w, seed, kStreamFfnFcW, l * d * f, d * f, std_dev);
        fill(q.ffn_fc_b, f, 0.0f);
        synthetic_fill(q.ffn_proj_w, seed, kStreamFfnProjW, l * f * d, f * d, residual_std);
        fill(q.ffn_proj_b, d, 0.0f);
    }
    fill(p.lnf_w, d, 1.0f);
    fill(p.lnf_b, d, 0.0f);
}

void gpt_set_ffn(GptModel& model, int64_t layer, FfnBlock* block) {
    EXPAR_REQUIRE(layer >= 0 && layer < model.config.num_layers && model_layer_is_moe(model.config, layer),
                  "block " << layer << " is not an MoE block (--num-layers " << model.config.num_layers
                           << ", --moe-every " << model.config.moe_every << ")");
    model.ffn[layer] = block;
}

namespace {

// Token ids index wte: an id outside [0, V) would read out of bounds, so it is a user-facing error.
void check_token_ids(const int32_t* ids, int64_t n, int64_t S, int64_t V, const char* what) {
    for (int64_t i = 0; i < n; ++i)
        EXPAR_REQUIRE(ids[i] >= 0 && ids[i] < V, what << " id " << ids[i] << " at sequence " << i / S
                                                      << " position " << i % S
                                                      << " is outside the vocabulary [0, " << V << ")");
}

}  // namespace

float gpt_forward(GptModel& model, const int32_t* tokens, const int32_t* targets, const float* loss_weights) {
    const ModelConfig& c = model.config;
    const int64_t B = model.batch_size, S = c.seq_len, N = model.num_rows, d = c.d_model, H = c.num_heads,
                  V = c.vocab_size;
    ModelActivations& acts = model.acts;
    const ModelParams& params = model.params;

    check_token_ids(tokens, N, S, V, "token");
    std::memcpy(model.tokens.data(), tokens, sizeof(int32_t) * N);
    model.has_targets = targets != nullptr;
    if (model.has_targets) {
        check_token_ids(targets, N, S, V, "target");
        std::memcpy(model.targets.data(), targets, sizeof(int32_t) * N);
    }
    for (int64_t l = 0; l < c.num_layers; ++l)
        EXPAR_REQUIRE(model.ffn[l] != nullptr,
                      "block " << l << " is an MoE block but no MoE FFN was set (gpt_set_ffn)");

    encoder_forward(acts.encoded, model.tokens.data(), params.wte, params.wpe, B, S, d);
    const float* x = acts.encoded;  // the residual stream entering block l
    for (int64_t l = 0; l < c.num_layers; ++l) {
        const LayerParamViews<float>& p = params.layers[l];
        const LayerActivations& a = acts.layers[l];
        layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, x, p.ln1_w, p.ln1_b, N, d);
        matmul_forward(a.qkv, a.ln1, p.qkv_w, p.qkv_b, N, d, 3 * d);
        attention_forward(a.atty, a.att, a.qkv, acts.attn_scratch, B, S, d, H);
        matmul_forward(acts.branch, a.atty, p.attn_proj_w, p.attn_proj_b, N, d, d);
        residual_forward(a.resid_mid, x, acts.branch, N * d);
        layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.resid_mid, p.ln2_w, p.ln2_b, N, d);
        model.ffn[l]->forward(acts.branch, a.ln2, N);
        residual_forward(a.resid_out, a.resid_mid, acts.branch, N * d);
        x = a.resid_out;
    }
    layernorm_forward(acts.lnf, acts.lnf_mean, acts.lnf_rstd, x, params.lnf_w, params.lnf_b, N, d);
    crossentropy_forward(acts.logits, acts.lse, acts.losses, acts.lnf, params.wte,
                         model.has_targets ? model.targets.data() : nullptr, N, d, V);

    model.backward_ready = model.has_targets;
    if (!model.has_targets) {
        model.loss = std::numeric_limits<float>::quiet_NaN();
        return model.loss;
    }
    // dlosses are the weights of the mean, so gpt_backward needs nothing else from the caller.
    double weight_sum = 0.0;
    for (int64_t n = 0; n < N; ++n) weight_sum += loss_weights != nullptr ? loss_weights[n] : 1.0;
    EXPAR_REQUIRE(weight_sum > 0.0, "loss weights sum to " << weight_sum << ": no target to average over");
    double loss = 0.0;
    for (int64_t n = 0; n < N; ++n) {
        acts.dlosses[n] = static_cast<float>((loss_weights != nullptr ? loss_weights[n] : 1.0) / weight_sum);
        loss += static_cast<double>(acts.dlosses[n]) * acts.losses[n];
    }
    model.loss = static_cast<float>(loss);
    return model.loss;
}

void gpt_zero_grads(GptModel& model) {
    std::fill(model.grad_memory.begin(), model.grad_memory.end(), 0.0f);
    for (FfnBlock* block : model.ffn)
        if (block != nullptr) block->zero_grads();
}

void gpt_backward(GptModel& model) {
    EXPAR_ASSERT(model.backward_ready);  // a forward with targets, and no backward since
    model.backward_ready = false;
    const ModelConfig& c = model.config;
    const int64_t B = model.batch_size, S = c.seq_len, N = model.num_rows, d = c.d_model, H = c.num_heads,
                  V = c.vocab_size;
    ModelActivations& acts = model.acts;
    const ModelParams& params = model.params;
    ModelParams& grads = model.grads;
    const int64_t L = c.num_layers;

    // LM head and final LayerNorm: dres becomes dL/d(last block's output). Nothing skips lnf, so dres
    // is overwritten, not accumulated.
    crossentropy_backward(acts.dnorm, grads.wte, acts.logits, acts.lse, acts.dlosses, acts.lnf, params.wte,
                          model.targets.data(), N, d, V);
    layernorm_backward(acts.dres, grads.lnf_w, grads.lnf_b, acts.dnorm, acts.layers[L - 1].resid_out,
                       params.lnf_w, acts.lnf_mean, acts.lnf_rstd, N, d);

    for (int64_t l = L - 1; l >= 0; --l) {
        const LayerParamViews<float>& p = params.layers[l];
        const LayerParamViews<float>& g = grads.layers[l];
        const LayerActivations& a = acts.layers[l];
        const float* x = l == 0 ? acts.encoded : acts.layers[l - 1].resid_out;
        // FFN branch: dres = dL/d(resid_out) on entry, dL/d(resid_mid) after the residual add.
        model.ffn[l]->backward(acts.dnorm, acts.dres, N);
        layernorm_backward(acts.dbranch, g.ln2_w, g.ln2_b, acts.dnorm, a.resid_mid, p.ln2_w, a.ln2_mean,
                           a.ln2_rstd, N, d);
        residual_backward(acts.dres, acts.dbranch, N * d);
        // Attention branch: dres becomes dL/dx, the previous block's output gradient.
        matmul_backward(acts.dnorm, g.attn_proj_w, g.attn_proj_b, acts.dres, a.atty, p.attn_proj_w, N, d, d);
        attention_backward(acts.dqkv, acts.dnorm, a.qkv, a.att, acts.attn_scratch, B, S, d, H);
        matmul_backward(acts.dnorm, g.qkv_w, g.qkv_b, acts.dqkv, a.ln1, p.qkv_w, N, d, 3 * d);
        layernorm_backward(acts.dbranch, g.ln1_w, g.ln1_b, acts.dnorm, x, p.ln1_w, a.ln1_mean, a.ln1_rstd, N,
                           d);
        residual_backward(acts.dres, acts.dbranch, N * d);
    }
    encoder_backward(grads.wte, grads.wpe, acts.dres, model.tokens.data(), B, S, d);
}

}  // namespace expar
