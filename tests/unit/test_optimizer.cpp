// AdamW against its closed form over two steps, the decay rule, the learning-rate schedule at its key
// points, the clipping helpers, and a short overfitting run of the tiny model as an end-to-end check.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "model.h"
#include "optimizer.h"
#include "train_test_util.h"

namespace expar {
namespace {

// Two AdamW steps written out in double from the definitions (Loshchilov & Hutter, Algorithm 2 with
// PyTorch's lr-scaled decay): m_t = β1 m + (1−β1) g, v_t = β2 v + (1−β2) g², bias-corrected.
double adamw_two_steps(double p0, double g1, double g2, double lr, double wd, const AdamWConfig& c) {
    const double b1 = c.beta1, b2 = c.beta2, eps = c.eps;
    const double m1 = (1 - b1) * g1, v1 = (1 - b2) * g1 * g1;
    const double p1 = p0 - lr * ((m1 / (1 - b1)) / (std::sqrt(v1 / (1 - b2)) + eps) + wd * p0);
    const double m2 = b1 * m1 + (1 - b1) * g2, v2 = b2 * v1 + (1 - b2) * g2 * g2;
    return p1 - lr * ((m2 / (1 - b1 * b1)) / (std::sqrt(v2 / (1 - b2 * b2)) + eps) + wd * p1);
}

TEST(Optimizer, AdamWMatchesClosedForm) {
    const AdamWConfig config;  // β1 0.9, β2 0.95, eps 1e-8, wd 0.1
    const int64_t n = 6;
    std::vector<float> p = {0.5f, -1.0f, 2.0f, 0.0f, 3e-3f, -0.25f};
    const std::vector<float> p0 = p;
    const std::vector<float> g1 = {0.1f, -2.0f, 1e-4f, 0.3f, -0.5f, 0.0f};
    const std::vector<float> g2 = {-0.3f, -1.0f, 2e-4f, 0.3f, 0.7f, 1.0f};
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    const float lr = 1e-2f, wd = 0.1f;
    adamw_update(p.data(), g1.data(), m.data(), v.data(), n, lr, wd, config, 1);
    // Step one moves each parameter by lr·sign(g) (|m̂|/sqrt(v̂) = 1) plus the decay.
    for (int64_t i = 0; i < n; ++i) {
        const double sign = g1[i] > 0 ? 1.0 : (g1[i] < 0 ? -1.0 : 0.0);
        const double eps_shrink = std::fabs(g1[i]) / (std::fabs(g1[i]) + config.eps);
        EXPECT_NEAR(p[i], p0[i] - lr * (sign * eps_shrink + wd * p0[i]), 1e-7) << i;
    }
    adamw_update(p.data(), g2.data(), m.data(), v.data(), n, lr, wd, config, 2);
    for (int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(p[i], adamw_two_steps(p0[i], g1[i], g2[i], lr, wd, config), 1e-6) << i;
}

TEST(Optimizer, DecayOnlyMatricesAndEmbeddings) {
    ModelConfig c;
    c.vocab_size = 5;
    c.seq_len = 3;
    c.d_model = 4;
    c.num_heads = 2;
    c.num_layers = 1;
    c.d_ff_dense = 8;
    GptModel model(c, 1);
    std::set<std::string> decayed;
    for (const ParamTensor& t : model.tensors)
        if (adamw_decays(t)) decayed.insert(t.name);
    EXPECT_EQ(decayed, (std::set<std::string>{"wte", "wpe", "h0.qkv_w", "h0.attn_proj_w", "h0.ffn_fc_w",
                                              "h0.ffn_proj_w"}));

    // With zero gradients AdamW's adaptive term is 0/(0 + eps) = 0: only the decay moves parameters,
    // p ← p·(1 − lr·wd) for decayed tensors, unchanged for the others.
    for (size_t i = 0; i < model.param_memory.size(); ++i) model.param_memory[i] = 1.0f + 0.01f * i;
    const std::vector<float> before = model.param_memory;
    gpt_zero_grads(model);
    AdamWConfig config;
    config.weight_decay = 0.5f;
    AdamW adamw(model.tensors, config);
    adamw.step(0.1f);
    EXPECT_EQ(adamw.num_steps(), 1);
    EXPECT_EQ(static_cast<int64_t>(adamw.moments().size()), 2 * gpt_num_params(c));
    for (const ParamTensor& t : model.tensors)
        for (int64_t i = 0; i < t.count; ++i) {
            const float p0 = before[t.offset + i];
            const float want = adamw_decays(t) ? p0 * (1.0f - 0.1f * 0.5f) : p0;
            ASSERT_NEAR(t.param[i], want, 1e-6f * std::fabs(p0)) << t.name;
        }
}

TEST(Optimizer, LearningRateSchedule) {
    const float base = 1e-3f, min_ratio = 0.1f;
    const int64_t warmup = 10, total = 110;
    auto lr = [&](int64_t step) { return lr_at_step(step, base, warmup, total, min_ratio); };
    EXPECT_FLOAT_EQ(lr(0), base / warmup);                      // first step: 1/warmup of the base
    EXPECT_FLOAT_EQ(lr(4), base * 5 / warmup);                  // linear
    EXPECT_FLOAT_EQ(lr(warmup - 1), base);                      // end of warmup
    EXPECT_FLOAT_EQ(lr(warmup), base);                          // cosine starts at the top
    EXPECT_FLOAT_EQ(lr(60), 0.5f * (base + base * min_ratio));  // half way: cos(π/2) = 0
    EXPECT_NEAR(lr(total - 1), base * min_ratio, 1e-3 * base);
    EXPECT_FLOAT_EQ(lr(total), base * min_ratio);  // end, and after
    EXPECT_FLOAT_EQ(lr(total + 50), base * min_ratio);
    for (int64_t s = warmup; s < total; ++s) EXPECT_GE(lr(s), lr(s + 1)) << s;  // decays monotonically
    EXPECT_FLOAT_EQ(lr_at_step(0, base, 0, total, min_ratio), base);            // no warmup
}

TEST(Optimizer, ClippingHelpers) {
    std::vector<float> g = {3.0f, -4.0f, 12.0f, 0.0f};  // norm 13
    EXPECT_EQ(sum_of_squares(g.data(), 4), 169.0);
    // Summing squares per piece and adding is how ranks combine their shares.
    EXPECT_EQ(sum_of_squares(g.data(), 2) + sum_of_squares(g.data() + 2, 2), 169.0);
    const float factor = clip_factor(std::sqrt(169.0), 1.0);
    EXPECT_NEAR(factor, 1.0 / 13.0, 1e-7);
    scale(g.data(), 4, factor);
    EXPECT_NEAR(std::sqrt(sum_of_squares(g.data(), 4)), 1.0, 1e-6);
    EXPECT_EQ(clip_factor(0.5, 1.0), 1.0f);  // under the limit: untouched
    EXPECT_EQ(clip_factor(0.0, 1.0), 1.0f);
}

TEST(Optimizer, TinyModelOverfitsOneBatch) {
    // End to end: forward, backward, clip, AdamW on a fixed batch must drive the loss well below
    // ln V (2.4 for V = 11); 40 steps at lr 1e-2 reach about 0.5 — a broken gradient would not.
    ModelConfig c;
    c.vocab_size = 11;
    c.seq_len = 8;
    c.d_model = 16;
    c.num_heads = 2;
    c.num_layers = 2;
    c.d_ff_dense = 32;
    const int64_t B = 2, N = B * c.seq_len;
    GptModel model(c, B);
    gpt_init_params(model, 1);
    const std::vector<int32_t> tokens = test::random_ids(N, c.vocab_size, 1);
    const std::vector<int32_t> targets = test::random_ids(N, c.vocab_size, 2);
    AdamW adamw(model.tensors, AdamWConfig{});
    float first = 0.0f, last = 0.0f;
    for (int64_t step = 0; step < 40; ++step) {
        gpt_zero_grads(model);
        last = gpt_forward(model, tokens.data(), targets.data(), nullptr);
        if (step == 0) first = last;
        gpt_backward(model);
        const int64_t n = static_cast<int64_t>(model.grad_memory.size());
        scale(model.grad_memory.data(), n,
              clip_factor(std::sqrt(sum_of_squares(model.grad_memory.data(), n)), 1.0));
        adamw.step(lr_at_step(step, 1e-2f, 5, 40, 0.1f));
    }
    EXPECT_NEAR(first, std::log(11.0), 0.05);
    EXPECT_LT(last, 1.0f);
}

}  // namespace
}  // namespace expar
