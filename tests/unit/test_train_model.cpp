// The whole language model: the double reference model's gradient against finite differences, the
// float/BLAS model against the reference (loss, logits, every parameter gradient), causality, the tied
// embedding's two gradient contributions, loss at init, determinism, the FFN seam, the parameter list,
// bad input, and no allocation in forward, backward and the optimizer step.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <vector>

#include "allocation_counter.h"
#include "check.h"
#include "model.h"
#include "optimizer.h"
#include "reference_model.h"
#include "train_test_util.h"

namespace expar {
namespace {

using test::randn;

// The tiny model of the finite-difference check: 1,3xx parameters, 10 token rows.
ModelConfig tiny_config() {
    ModelConfig c;
    c.vocab_size = 11;
    c.seq_len = 5;
    c.d_model = 8;
    c.num_heads = 2;
    c.num_layers = 2;
    c.d_ff_dense = 16;
    c.moe_every = 0;
    return c;
}

// GPT-2 init makes most gradients tiny and the model nearly linear (attention uniform, LayerNorm
// affine at 1/0), which would let wrong second-order terms pass. So: a larger init, then noise on every
// parameter, LayerNorm weights and biases included. Rounded to float so both models see equal values.
std::vector<double> generic_params(const ModelConfig& config, uint64_t seed) {
    ModelConfig c = config;
    c.init_std = 0.4f;
    GptModel model(c, 1);
    gpt_init_params(model, seed);
    const std::vector<double> noise = randn(model.param_memory.size(), seed + 1, 0.2);
    std::vector<double> params(model.param_memory.size());
    for (size_t i = 0; i < params.size(); ++i)
        params[i] = static_cast<double>(static_cast<float>(model.param_memory[i] + noise[i]));
    return params;
}

TEST(TrainModel, ReferenceGradientMatchesFiniteDifferences) {
    const ModelConfig c = tiny_config();
    const int64_t B = 2, N = B * c.seq_len;
    std::vector<double> params = generic_params(c, 7);
    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, 1);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, 2);
    std::vector<float> weights(N, 1.0f);
    weights[3] = 0.0f;  // a masked target
    weights[7] = 2.5f;
    std::vector<double> grads;
    reference_gpt<double>(c, B, params, tokens.data(), targets.data(), weights.data(), nullptr, &grads);
    auto loss = [&] {
        return reference_gpt<double>(c, B, params, tokens.data(), targets.data(), weights.data(), nullptr,
                                     nullptr);
    };
    // Tensor by tensor, so a failure names the tensor.
    std::vector<ParamTensor> layout;
    point_params<double>(c, nullptr, &layout);
    for (const ParamTensor& t : layout) {
        std::vector<double> slice(params.begin() + t.offset, params.begin() + t.offset + t.count);
        const std::vector<double> analytic(grads.begin() + t.offset, grads.begin() + t.offset + t.count);
        auto slice_loss = [&] {
            std::copy(slice.begin(), slice.end(), params.begin() + t.offset);
            return loss();
        };
        test::expect_gradient_matches_fd(slice, analytic, slice_loss, t.name);
        std::copy(slice.begin(), slice.end(), params.begin() + t.offset);
    }
}

// The float model against the double reference: same parameters (float-representable), same inputs.
// Tolerances: loss and logits 1e-5 relative, gradients 5e-5 normalised per tensor. Float rounding
// through 2–3 blocks of LayerNorm (whose rstd amplifies the rounding of small variances), softmax and
// BLAS sums gives at most 1.6e-6 on the logits and 7e-6 on a gradient here (EXPAR_PRINT_ERRORS=1
// prints them); a missing or wrong term is O(1).
void check_float_model_against_reference(const ModelConfig& c, int64_t B, uint64_t seed) {
    const int64_t N = B * c.seq_len;
    const std::vector<double> params = generic_params(c, seed);
    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, seed + 10);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, seed + 11);
    std::vector<float> weights(N);
    for (int64_t n = 0; n < N; ++n) weights[n] = static_cast<float>(n % 3);  // includes masked rows
    std::vector<double> ref_logits, ref_grads;
    const double ref_loss = reference_gpt<double>(c, B, params, tokens.data(), targets.data(), weights.data(),
                                                  &ref_logits, &ref_grads);

    GptModel model(c, B);
    for (size_t i = 0; i < params.size(); ++i) model.param_memory[i] = static_cast<float>(params[i]);
    gpt_zero_grads(model);
    const float loss = gpt_forward(model, tokens.data(), targets.data(), weights.data());
    EXPECT_NEAR(loss, ref_loss, 1e-5 * std::fabs(ref_loss));
    test::expect_close(model.acts.logits, ref_logits, 1e-5, "logits");
    gpt_backward(model);
    for (const ParamTensor& t : model.tensors) {
        const std::vector<double> want(ref_grads.begin() + t.offset, ref_grads.begin() + t.offset + t.count);
        test::expect_close(t.grad, want, 5e-5, "d" + t.name);
    }
}

TEST(TrainModel, FloatModelMatchesReferenceTiny) {
    check_float_model_against_reference(tiny_config(), 2, 21);
}

TEST(TrainModel, FloatModelMatchesReferenceWider) {
    ModelConfig c;
    c.vocab_size = 37;
    c.seq_len = 16;
    c.d_model = 32;
    c.num_heads = 4;
    c.num_layers = 3;
    c.d_ff_dense = 64;
    check_float_model_against_reference(c, 3, 31);
}

TEST(TrainModel, ChangingAFutureTokenLeavesEarlierLogitsUnchanged) {
    ModelConfig c = tiny_config();
    c.seq_len = 8;
    const int64_t B = 2, S = c.seq_len, V = c.vocab_size, t0 = 4;
    GptModel model(c, B);
    gpt_init_params(model, 3);
    std::vector<int32_t> tokens = test::random_ids(B * S, V, 5);
    const std::vector<int32_t> targets = test::random_ids(B * S, V, 6);
    gpt_forward(model, tokens.data(), targets.data(), nullptr);
    const std::vector<float> before(model.acts.logits, model.acts.logits + B * S * V);
    tokens[t0] = (tokens[t0] + 1) % V;  // sequence 0, position t0
    gpt_forward(model, tokens.data(), targets.data(), nullptr);
    // Rows of one position never mix with other rows except through attention's masked (exactly zero)
    // weights, so earlier positions and the other sequence are bitwise unchanged.
    for (int64_t n = 0; n < B * S; ++n) {
        const bool may_change = n >= t0 && n < S;
        bool changed = false;
        for (int64_t v = 0; v < V; ++v) changed |= model.acts.logits[n * V + v] != before[n * V + v];
        if (may_change)
            EXPECT_TRUE(changed) << "row " << n << " should see the new token";
        else
            EXPECT_FALSE(changed) << "row " << n << " saw a future token or another sequence";
    }
}

TEST(TrainModel, TiedEmbeddingGradientHasBothContributions) {
    // dwte = (LM head part) + (embedding part). The head part is recomputed here from the saved dlogits
    // and final LayerNorm output; what remains must be the embedding part, which (a) is zero in rows of
    // ids that never occur as input and (b) sums over the vocabulary to Σ_n dL/dx0[n] = Σ_s dwpe[s].
    ModelConfig c = tiny_config();
    c.vocab_size = 13;
    const int64_t B = 2, N = B * c.seq_len, V = c.vocab_size, d = c.d_model;
    GptModel model(c, B);
    gpt_init_params(model, 4);
    std::vector<int32_t> tokens = test::random_ids(N, 6, 8);  // ids 0..5 only: 6..12 never input
    const std::vector<int32_t> targets = test::random_ids(N, V, 9);
    gpt_zero_grads(model);
    gpt_forward(model, tokens.data(), targets.data(), nullptr);
    gpt_backward(model);
    const float* dlogits = model.acts.logits;  // gpt_backward leaves dlogits there
    std::vector<double> head(V * d, 0.0);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t v = 0; v < V; ++v)
            for (int64_t i = 0; i < d; ++i) head[v * d + i] += dlogits[n * V + v] * model.acts.lnf[n * d + i];
    const std::set<int32_t> inputs(tokens.begin(), tokens.end());
    double scale = 0.0, head_scale = 0.0;
    for (int64_t i = 0; i < V * d; ++i)
        scale = std::max(scale, std::fabs(static_cast<double>(model.grads.wte[i])));
    for (int64_t i = 6 * d; i < V * d; ++i) head_scale = std::max(head_scale, std::fabs(head[i]));
    ASSERT_GT(head_scale, 1e-3 * scale);  // the head part is there, also in rows never input
    std::vector<double> embedding_sum(d, 0.0), wpe_sum(d, 0.0);
    for (int64_t v = 0; v < V; ++v)
        for (int64_t i = 0; i < d; ++i) {
            const double embedding = model.grads.wte[v * d + i] - head[v * d + i];
            if (inputs.count(static_cast<int32_t>(v)) == 0)
                EXPECT_NEAR(embedding, 0.0, 1e-6 * scale) << "id " << v;
            embedding_sum[i] += embedding;
        }
    for (int64_t s = 0; s < c.seq_len; ++s)
        for (int64_t i = 0; i < d; ++i) wpe_sum[i] += model.grads.wpe[s * d + i];
    ASSERT_GT(test::max_abs(wpe_sum), 1e-3 * scale);  // the embedding part is not trivially zero
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(embedding_sum[i], wpe_sum[i], 1e-5 * scale);
}

TEST(TrainModel, LossAtInitIsLogVocab) {
    // With N(0, 0.02²) weights, logits = lnf·wte^T have variance σ² = d·0.02² (lnf has unit variance
    // per feature): 0.0256 for d = 64, so E[loss] ≈ ln V + σ²/2 = ln V + 0.013 on random targets.
    // 0.05 covers that shift and the sampling noise of 512 rows.
    ModelConfig c;
    c.vocab_size = 256;
    c.seq_len = 32;
    c.d_model = 64;
    c.num_heads = 4;
    c.num_layers = 2;
    c.d_ff_dense = 256;
    const int64_t B = 16, N = B * c.seq_len;
    GptModel model(c, B);
    gpt_init_params(model, 1);
    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, 3);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, 4);
    const float loss = gpt_forward(model, tokens.data(), targets.data(), nullptr);
    EXPECT_NEAR(loss, std::log(256.0), 0.05);
}

TEST(TrainModel, InitIsDeterministicAndSeeded) {
    const ModelConfig c = tiny_config();
    GptModel a(c, 1), b(c, 1), other(c, 1);
    gpt_init_params(a, 5);
    gpt_init_params(b, 5);
    gpt_init_params(other, 6);
    EXPECT_EQ(a.param_memory, b.param_memory);
    EXPECT_NE(a.param_memory, other.param_memory);
    // GPT-2 init: LayerNorm weights 1, biases 0, residual projections narrower than qkv.
    for (int64_t i = 0; i < c.d_model; ++i) {
        EXPECT_EQ(a.params.layers[1].ln2_w[i], 1.0f);
        EXPECT_EQ(a.params.layers[1].attn_proj_b[i], 0.0f);
    }
    auto rms = [](const float* x, int64_t n) {
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
        return std::sqrt(s / n);
    };
    const int64_t d = c.d_model, f = c.d_ff_dense;
    EXPECT_NEAR(rms(a.params.layers[0].ffn_fc_w, d * f), 0.02, 0.004);
    EXPECT_NEAR(rms(a.params.layers[0].ffn_proj_w, f * d), 0.02 / 2.0, 0.002);  // 1/sqrt(2L), L = 2
}

TEST(TrainModel, GradientsAccumulateAcrossBackwards) {
    const ModelConfig c = tiny_config();
    const int64_t B = 2, N = B * c.seq_len;
    GptModel model(c, B);
    gpt_init_params(model, 2);
    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, 1);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, 2);
    gpt_zero_grads(model);
    gpt_forward(model, tokens.data(), targets.data(), nullptr);
    gpt_backward(model);
    const std::vector<float> once = model.grad_memory;
    gpt_forward(model, tokens.data(), targets.data(), nullptr);
    gpt_backward(model);
    // Not bitwise: a gradient summed from several contributions (dwte: head + embedding; gemm's
    // beta = 1 accumulation) rounds differently the second time. 1e-6 of the tensor's scale is a few ulp.
    for (const ParamTensor& t : model.tensors) {
        const std::vector<double> want = test::to_double(once.data() + t.offset, t.count);
        std::vector<double> twice = test::to_double(t.grad, t.count);
        for (double& g : twice) g /= 2.0;
        double err = 0.0;
        for (int64_t i = 0; i < t.count; ++i) err = std::max(err, std::fabs(twice[i] - want[i]));
        EXPECT_LE(err, 1e-6 * test::max_abs(want)) << t.name;
    }
}

// An FFN block with its own memory, holding a copy of a dense block: what an MoE block looks like to
// the model. Counts its calls.
class ExternalFfn final : public FfnBlock {
   public:
    ExternalFfn(const LayerParamViews<float>& source, int64_t d, int64_t f, int64_t rows)
        : memory_(2 * (2 * d * f + f + d)), acts_(3 * rows * f) {
        LayerParamViews<float> p{}, g{};
        float* m = memory_.data();
        for (auto [dst, grad, src, n] : {std::tuple{&p.ffn_fc_w, &g.ffn_fc_w, source.ffn_fc_w, d * f},
                                         std::tuple{&p.ffn_fc_b, &g.ffn_fc_b, source.ffn_fc_b, f},
                                         std::tuple{&p.ffn_proj_w, &g.ffn_proj_w, source.ffn_proj_w, f * d},
                                         std::tuple{&p.ffn_proj_b, &g.ffn_proj_b, source.ffn_proj_b, d}}) {
            *dst = m;
            std::copy(src, src + n, m);
            m += n;
            *grad = m;
            std::fill(m, m + n, 123.0f);  // garbage until zero_grads
            m += n;
        }
        grads_ = g;
        inner_ = std::make_unique<DenseFfn>(p, g, acts_.data(), acts_.data() + rows * f,
                                            acts_.data() + 2 * rows * f, d, f, rows);
    }
    void forward(float* out, const float* in, int64_t rows) override {
        ++num_forward;
        inner_->forward(out, in, rows);
    }
    void backward(float* din, const float* dout, int64_t rows) override {
        ++num_backward;
        inner_->backward(din, dout, rows);
    }
    void zero_grads() override { inner_->zero_grads(); }
    LayerParamViews<float> grads_;
    int num_forward = 0, num_backward = 0;

   private:
    std::vector<float> memory_, acts_;
    std::unique_ptr<DenseFfn> inner_;
};

TEST(TrainModel, FfnSeamCarriesAnExternalBlock) {
    // A model whose block 1 is "MoE" (moe_every = 2) with an external copy of a dense model's block-1
    // FFN must compute bitwise the same loss and gradients as the dense model.
    ModelConfig c = tiny_config();
    const int64_t B = 2, N = B * c.seq_len, d = c.d_model, f = c.d_ff_dense;
    GptModel dense(c, B);
    gpt_init_params(dense, 3);
    c.moe_every = 2;
    GptModel moe(c, B);
    EXPECT_EQ(moe.ffn[1], nullptr);
    EXPECT_EQ(moe.params.layers[1].ffn_fc_w, nullptr);
    std::map<std::string, const ParamTensor*> by_name;
    for (const ParamTensor& t : dense.tensors) by_name[t.name] = &t;
    for (const ParamTensor& t : moe.tensors)
        std::copy(by_name[t.name]->param, by_name[t.name]->param + t.count, t.param);
    ExternalFfn external(dense.params.layers[1], d, f, N);
    gpt_set_ffn(moe, 1, &external);

    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, 1);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, 2);
    gpt_zero_grads(dense);
    gpt_zero_grads(moe);
    EXPECT_EQ(gpt_forward(dense, tokens.data(), targets.data(), nullptr),
              gpt_forward(moe, tokens.data(), targets.data(), nullptr));
    gpt_backward(dense);
    gpt_backward(moe);
    EXPECT_EQ(external.num_forward, 1);
    EXPECT_EQ(external.num_backward, 1);
    for (const ParamTensor& t : moe.tensors)
        for (int64_t i = 0; i < t.count; ++i) ASSERT_EQ(t.grad[i], by_name[t.name]->grad[i]) << t.name;
    const LayerParamViews<float>& want = dense.grads.layers[1];
    for (int64_t i = 0; i < d * f; ++i) ASSERT_EQ(external.grads_.ffn_fc_w[i], want.ffn_fc_w[i]);
    for (int64_t i = 0; i < d; ++i) ASSERT_EQ(external.grads_.ffn_proj_b[i], want.ffn_proj_b[i]);
}

TEST(TrainModel, ParameterListCoversTheAllocation) {
    ModelConfig c = tiny_config();
    c.num_layers = 4;
    c.moe_every = 2;  // blocks 1 and 3 have no dense FFN parameters
    GptModel model(c, 1);
    const int64_t V = c.vocab_size, S = c.seq_len, d = c.d_model, f = c.d_ff_dense, L = c.num_layers;
    const int64_t per_block = 2 * d + 3 * d * d + 3 * d + d * d + d + 2 * d;
    const int64_t per_dense_ffn = d * f + f + f * d + d;
    const int64_t expected = V * d + S * d + L * per_block + 2 * per_dense_ffn + 2 * d;
    EXPECT_EQ(gpt_num_params(c), expected);
    EXPECT_EQ(static_cast<int64_t>(model.param_memory.size()), expected);
    int64_t next = 0;
    std::set<std::string> names;
    for (const ParamTensor& t : model.tensors) {
        EXPECT_EQ(t.offset, next) << t.name;  // contiguous, in order, no gaps
        EXPECT_EQ(t.param, model.param_memory.data() + t.offset);
        EXPECT_EQ(t.grad, model.grad_memory.data() + t.offset);
        EXPECT_TRUE(t.replicated);
        EXPECT_TRUE(names.insert(t.name).second) << "duplicate " << t.name;
        next += t.count;
    }
    EXPECT_EQ(next, expected);
    EXPECT_TRUE(names.count("h0.ffn_fc_w") == 1 && names.count("h1.ffn_fc_w") == 0);
    EXPECT_TRUE(names.count("h3.qkv_w") == 1 && names.count("lnf_b") == 1);
}

TEST(TrainModel, TrainingStepAllocatesNothing) {
    const ModelConfig c = tiny_config();
    const int64_t B = 2, N = B * c.seq_len;
    GptModel model(c, B);
    gpt_init_params(model, 1);
    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, 1);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, 2);
    AdamW adamw(model.tensors, AdamWConfig{});
    gpt_forward(model, tokens.data(), targets.data(), nullptr);  // warm up BLAS's own buffers
    gpt_backward(model);
    const test::AllocationCounter counter;
    gpt_zero_grads(model);
    gpt_forward(model, tokens.data(), targets.data(), nullptr);
    gpt_backward(model);
    adamw.step(1e-3f);
    EXPECT_EQ(counter.count(), 0);
}

// Bad input: one clear message each.
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "no error";
}

TEST(TrainModel, BadInputGivesOneLineErrors) {
    ModelConfig c = tiny_config();
    c.num_heads = 3;
    EXPECT_EQ(error_of([&] { GptModel m(c, 1); }), "--d-model 8 is not divisible by --num-heads 3");
    c = tiny_config();
    c.moe_every = 3;
    EXPECT_EQ(error_of([&] { GptModel m(c, 1); }),
              "--moe-every 3 exceeds --num-layers 2: no block would be MoE");
    c = tiny_config();
    EXPECT_EQ(error_of([&] { GptModel m(c, 0); }), "--batch-size must be positive (got 0)");

    GptModel model(c, 1);
    std::vector<int32_t> tokens(c.seq_len, 1), targets(c.seq_len, 2);
    tokens[3] = 11;
    EXPECT_EQ(error_of([&] { gpt_forward(model, tokens.data(), targets.data(), nullptr); }),
              "token id 11 at sequence 0 position 3 is outside the vocabulary [0, 11)");
    tokens[3] = 1;
    targets[4] = -1;
    EXPECT_EQ(error_of([&] { gpt_forward(model, tokens.data(), targets.data(), nullptr); }),
              "target id -1 at sequence 0 position 4 is outside the vocabulary [0, 11)");
    targets[4] = 0;
    const std::vector<float> zero_weights(c.seq_len, 0.0f);
    EXPECT_EQ(error_of([&] { gpt_forward(model, tokens.data(), targets.data(), zero_weights.data()); }),
              "loss weights sum to 0: no target to average over");
    EXPECT_EQ(error_of([&] { gpt_set_ffn(model, 1, nullptr); }),
              "block 1 is not an MoE block (--num-layers 2, --moe-every 0)");

    c.moe_every = 2;
    GptModel moe(c, 1);
    EXPECT_EQ(error_of([&] { gpt_forward(moe, tokens.data(), targets.data(), nullptr); }),
              "block 1 is an MoE block but no MoE FFN was set (gpt_set_ffn)");
}

}  // namespace
}  // namespace expar
