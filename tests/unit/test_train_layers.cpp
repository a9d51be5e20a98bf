// The language model's layers, two ways: each plain-loop double reference (reference_layers.h) against
// central finite differences of its own forward, and each float/BLAS layer (layers.h) against that
// reference. Float results are compared with a normalised max error (max |diff| / max |ref|) of 2e-6:
// float rounding (6e-8 per operation) over sums of a few dozen terms and the vectorised gelu (2e-6
// relative at worst) stay below that (observed: at most 2.3e-7; EXPAR_PRINT_ERRORS=1 prints them);
// a wrong or missing term is O(1).
// The float backwards also check the gradient contract: parameter gradients start from random values
// and must accumulate onto them, activation gradients start as NaN and must be overwritten.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "layers.h"
#include "reference_layers.h"
#include "train_test_util.h"

namespace expar {
namespace {

using test::expect_close;
using test::expect_gradient_matches_fd;
using test::randn;
using test::to_float;

constexpr double kForwardTol = 2e-6;
constexpr double kBackwardTol = 2e-6;
const float kNaN = std::numeric_limits<float>::quiet_NaN();

// g_float − g0, the part the float backward added to its accumulator.
std::vector<float> minus(const std::vector<float>& g, const std::vector<float>& g0) {
    std::vector<float> out(g.size());
    for (size_t i = 0; i < g.size(); ++i) out[i] = g[i] - g0[i];
    return out;
}

TEST(TrainLayers, Encoder) {
    const int64_t B = 2, S = 4, d = 3, V = 3;  // V < B·S: tokens repeat, so rows of dwte accumulate
    const std::vector<int32_t> tokens = test::random_ids(B * S, V, 1);
    std::vector<double> wte = randn(V * d, 2), wpe = randn(S * d, 3), dout = randn(B * S * d, 4);
    std::vector<double> out(B * S * d), dwte(V * d, 0.0), dwpe(S * d, 0.0);
    auto loss = [&] {
        encoder_forward_ref(out.data(), tokens.data(), wte.data(), wpe.data(), B, S, d);
        return test::dot(out, dout);
    };
    loss();
    encoder_backward_ref(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, S, d);
    expect_gradient_matches_fd(wte, dwte, loss, "ref dwte");
    expect_gradient_matches_fd(wpe, dwpe, loss, "ref dwpe");

    loss();
    std::vector<float> out_f(B * S * d);
    const std::vector<float> wte_f = to_float(wte), wpe_f = to_float(wpe), dout_f = to_float(dout);
    encoder_forward(out_f.data(), tokens.data(), wte_f.data(), wpe_f.data(), B, S, d);
    expect_close(out_f.data(), out, kForwardTol, "encoder out");
    const std::vector<float> dwte0 = to_float(randn(V * d, 5)), dwpe0 = to_float(randn(S * d, 6));
    std::vector<float> dwte_f = dwte0, dwpe_f = dwpe0;
    encoder_backward(dwte_f.data(), dwpe_f.data(), dout_f.data(), tokens.data(), B, S, d);
    expect_close(minus(dwte_f, dwte0).data(), dwte, kBackwardTol, "encoder dwte");
    expect_close(minus(dwpe_f, dwpe0).data(), dwpe, kBackwardTol, "encoder dwpe");
}

TEST(TrainLayers, LayerNorm) {
    const int64_t N = 5, d = 7;
    // An offset mean of 3 makes a one-pass variance lose digits; the two-pass form must not.
    std::vector<double> in = randn(N * d, 1, 1.0, 3.0), w = randn(d, 2, 0.5, 1.0), b = randn(d, 3),
                        dout = randn(N * d, 4);
    std::vector<double> out(N * d), mean(N), rstd(N), din(N * d), dw(d, 0.0), db(d, 0.0);
    auto loss = [&] {
        layernorm_forward_ref(out.data(), mean.data(), rstd.data(), in.data(), w.data(), b.data(), N, d);
        return test::dot(out, dout);
    };
    loss();
    layernorm_backward_ref(din.data(), dw.data(), db.data(), dout.data(), in.data(), w.data(), mean.data(),
                           rstd.data(), N, d);
    expect_gradient_matches_fd(in, din, loss, "ref din");
    expect_gradient_matches_fd(w, dw, loss, "ref dweight");
    expect_gradient_matches_fd(b, db, loss, "ref dbias");

    loss();
    const std::vector<float> in_f = to_float(in), w_f = to_float(w), b_f = to_float(b),
                             dout_f = to_float(dout);
    std::vector<float> out_f(N * d), mean_f(N), rstd_f(N);
    layernorm_forward(out_f.data(), mean_f.data(), rstd_f.data(), in_f.data(), w_f.data(), b_f.data(), N, d);
    expect_close(out_f.data(), out, kForwardTol, "layernorm out");
    expect_close(mean_f.data(), mean, kForwardTol, "layernorm mean");
    expect_close(rstd_f.data(), rstd, kForwardTol, "layernorm rstd");
    std::vector<float> din_f(N * d, kNaN);
    const std::vector<float> dw0 = to_float(randn(d, 5)), db0 = to_float(randn(d, 6));
    std::vector<float> dw_f = dw0, db_f = db0;
    layernorm_backward(din_f.data(), dw_f.data(), db_f.data(), dout_f.data(), in_f.data(), w_f.data(),
                       mean_f.data(), rstd_f.data(), N, d);
    expect_close(din_f.data(), din, kBackwardTol, "layernorm din");
    expect_close(minus(dw_f, dw0).data(), dw, kBackwardTol, "layernorm dweight");
    expect_close(minus(db_f, db0).data(), db, kBackwardTol, "layernorm dbias");
}

void check_matmul(bool with_bias) {
    const int64_t N = 6, ic = 5, oc = 4;
    std::vector<double> in = randn(N * ic, 1), w = randn(ic * oc, 2), b = randn(oc, 3),
                        dout = randn(N * oc, 4);
    std::vector<double> out(N * oc), din(N * ic), dw(ic * oc, 0.0), db(oc, 0.0);
    const double* bias = with_bias ? b.data() : nullptr;
    auto loss = [&] {
        matmul_forward_ref(out.data(), in.data(), w.data(), with_bias ? b.data() : nullptr, N, ic, oc);
        return test::dot(out, dout);
    };
    loss();
    matmul_backward_ref(din.data(), dw.data(), with_bias ? db.data() : nullptr, dout.data(), in.data(),
                        w.data(), N, ic, oc);
    expect_gradient_matches_fd(in, din, loss, "ref din");
    expect_gradient_matches_fd(w, dw, loss, "ref dweight");
    if (with_bias) expect_gradient_matches_fd(b, db, loss, "ref dbias");

    loss();
    const std::vector<float> in_f = to_float(in), w_f = to_float(w), b_f = to_float(b),
                             dout_f = to_float(dout);
    std::vector<float> out_f(N * oc);
    matmul_forward(out_f.data(), in_f.data(), w_f.data(), bias != nullptr ? b_f.data() : nullptr, N, ic, oc);
    expect_close(out_f.data(), out, kForwardTol, "matmul out");
    std::vector<float> din_f(N * ic, kNaN);
    const std::vector<float> dw0 = to_float(randn(ic * oc, 5)), db0 = to_float(randn(oc, 6));
    std::vector<float> dw_f = dw0, db_f = db0;
    matmul_backward(din_f.data(), dw_f.data(), with_bias ? db_f.data() : nullptr, dout_f.data(), in_f.data(),
                    w_f.data(), N, ic, oc);
    expect_close(din_f.data(), din, kBackwardTol, "matmul din");
    expect_close(minus(dw_f, dw0).data(), dw, kBackwardTol, "matmul dweight");
    if (with_bias) expect_close(minus(db_f, db0).data(), db, kBackwardTol, "matmul dbias");
}

TEST(TrainLayers, MatmulWithBias) {
    check_matmul(true);
}

TEST(TrainLayers, MatmulWithoutBias) {
    check_matmul(false);
}

TEST(TrainLayers, Attention) {
    const int64_t B = 2, S = 5, d = 8, H = 2;
    // Scale 1.5: scores of order hs·1.5²/sqrt(hs) ≈ 4.5, a far-from-uniform softmax.
    std::vector<double> qkv = randn(B * S * 3 * d, 1, 1.5), dout = randn(B * S * d, 2);
    std::vector<double> out(B * S * d), att(B * H * S * S), dqkv(B * S * 3 * d);
    auto loss = [&] {
        attention_forward_ref(out.data(), att.data(), qkv.data(), B, S, d, H);
        return test::dot(out, dout);
    };
    loss();
    attention_backward_ref(dqkv.data(), dout.data(), qkv.data(), att.data(), B, S, d, H);
    expect_gradient_matches_fd(qkv, dqkv, loss, "ref dqkv");

    loss();
    const std::vector<float> qkv_f = to_float(qkv), dout_f = to_float(dout);
    std::vector<float> out_f(B * S * d), att_f(B * H * S * S), scratch(attention_scratch_floats(S, d, H));
    attention_forward(out_f.data(), att_f.data(), qkv_f.data(), scratch.data(), B, S, d, H);
    expect_close(out_f.data(), out, kForwardTol, "attention out");
    expect_close(att_f.data(), att, kForwardTol, "attention probabilities");
    for (int64_t bh = 0; bh < B * H; ++bh)  // the causal mask: exact zeros above the diagonal
        for (int64_t t = 0; t < S; ++t)
            for (int64_t s = t + 1; s < S; ++s) EXPECT_EQ(att_f[(bh * S + t) * S + s], 0.0f);
    std::vector<float> dqkv_f(B * S * 3 * d, kNaN);
    attention_backward(dqkv_f.data(), dout_f.data(), qkv_f.data(), att_f.data(), scratch.data(), B, S, d, H);
    expect_close(dqkv_f.data(), dqkv, kBackwardTol, "attention dqkv");
}

TEST(TrainLayers, AttentionIsCausal) {
    // The output at position t must not depend on q, k, v of any later position: change them all.
    const int64_t B = 1, S = 6, d = 4, H = 2, t0 = 3;
    std::vector<float> qkv = to_float(randn(B * S * 3 * d, 1)), qkv2 = qkv;
    for (int64_t i = (t0 + 1) * 3 * d; i < S * 3 * d; ++i) qkv2[i] += 5.0f;
    std::vector<float> out(S * d), out2(S * d), att(H * S * S), scratch(attention_scratch_floats(S, d, H));
    attention_forward(out.data(), att.data(), qkv.data(), scratch.data(), B, S, d, H);
    attention_forward(out2.data(), att.data(), qkv2.data(), scratch.data(), B, S, d, H);
    for (int64_t i = 0; i < (t0 + 1) * d; ++i) EXPECT_EQ(out[i], out2[i]) << "position " << i / d;
    EXPECT_NE(out[(t0 + 1) * d], out2[(t0 + 1) * d]);  // and the change is visible after t0
}

TEST(TrainLayers, Gelu) {
    const int64_t n = 40;
    std::vector<double> in = randn(n, 1, 2.0), dout = randn(n, 2), out(n), din(n);
    auto loss = [&] {
        gelu_forward_ref(out.data(), in.data(), n);
        return test::dot(out, dout);
    };
    loss();
    gelu_backward_ref(din.data(), dout.data(), in.data(), n);
    expect_gradient_matches_fd(in, din, loss, "ref gelu'");

    loss();
    const std::vector<float> in_f = to_float(in), dout_f = to_float(dout);
    std::vector<float> out_f(n), din_f(n, kNaN);
    gelu_forward(out_f.data(), in_f.data(), n);
    expect_close(out_f.data(), out, kForwardTol, "gelu out");
    gelu_backward(din_f.data(), dout_f.data(), in_f.data(), n);
    expect_close(din_f.data(), din, kBackwardTol, "gelu din");
    std::vector<float> in_place = dout_f;  // din may alias dout
    gelu_backward(in_place.data(), in_place.data(), in_f.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(in_place[i], din_f[i]);
}

TEST(TrainLayers, Residual) {
    // L = Σ dout·(x + branch(x)) with branch(x) = x² elementwise: dL/dx = dout + 2x·dout, which the
    // caller forms as residual_backward(dx = dout, dbranch_in = 2x·dout).
    const int64_t n = 9;
    std::vector<double> x = randn(n, 1), dout = randn(n, 2);
    std::vector<double> dx(n);
    auto loss = [&] {
        std::vector<double> sq(n), out(n);
        for (int64_t i = 0; i < n; ++i) sq[i] = x[i] * x[i];
        residual_forward_ref(out.data(), x.data(), sq.data(), n);
        return test::dot(out, dout);
    };
    std::vector<double> dbranch(n);
    for (int64_t i = 0; i < n; ++i) dbranch[i] = 2 * x[i] * dout[i];
    dx = dout;
    residual_backward_ref(dx.data(), dbranch.data(), n);
    expect_gradient_matches_fd(x, dx, loss, "ref residual");

    const std::vector<float> x_f = to_float(x), dout_f = to_float(dout), dbranch_f = to_float(dbranch);
    std::vector<float> sq_f(n), out_f(n), dx_f = dout_f;
    for (int64_t i = 0; i < n; ++i) sq_f[i] = x_f[i] * x_f[i];
    residual_forward(out_f.data(), x_f.data(), sq_f.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out_f[i], x_f[i] + sq_f[i]);
    residual_backward(dx_f.data(), dbranch_f.data(), n);
    expect_close(dx_f.data(), dx, kBackwardTol, "residual dx");
}

TEST(TrainLayers, CrossEntropyWithTiedHead) {
    const int64_t N = 6, d = 5, V = 7;
    std::vector<double> x = randn(N * d, 1), wte = randn(V * d, 2);
    const std::vector<int32_t> targets = test::random_ids(N, V, 3);
    // Per-row weights of a masked mean, one row masked out.
    std::vector<double> dlosses = {0.1, 0.3, 0.0, 0.2, 0.25, 0.15};
    std::vector<double> logits(N * V), lse(N), losses(N), dx(N * d), dwte(V * d, 0.0);
    auto loss = [&] {
        crossentropy_forward_ref(logits.data(), lse.data(), losses.data(), x.data(), wte.data(),
                                 targets.data(), N, d, V);
        return test::dot(losses, dlosses);
    };
    loss();
    crossentropy_backward_ref(dx.data(), dwte.data(), logits.data(), lse.data(), dlosses.data(), x.data(),
                              wte.data(), targets.data(), N, d, V);
    expect_gradient_matches_fd(x, dx, loss, "ref dx");
    expect_gradient_matches_fd(wte, dwte, loss, "ref dwte");

    loss();
    const std::vector<float> x_f = to_float(x), wte_f = to_float(wte), dlosses_f = to_float(dlosses);
    std::vector<float> logits_f(N * V), lse_f(N), losses_f(N);
    crossentropy_forward(logits_f.data(), lse_f.data(), losses_f.data(), x_f.data(), wte_f.data(),
                         targets.data(), N, d, V);
    expect_close(logits_f.data(), logits, kForwardTol, "logits");
    expect_close(lse_f.data(), lse, kForwardTol, "lse");
    expect_close(losses_f.data(), losses, kForwardTol, "losses");
    std::vector<float> dx_f(N * d, kNaN);
    const std::vector<float> dwte0 = to_float(randn(V * d, 4));
    std::vector<float> dwte_f = dwte0;
    crossentropy_backward(dx_f.data(), dwte_f.data(), logits_f.data(), lse_f.data(), dlosses_f.data(),
                          x_f.data(), wte_f.data(), targets.data(), N, d, V);
    expect_close(dx_f.data(), dx, kBackwardTol, "dx");
    expect_close(minus(dwte_f, dwte0).data(), dwte, kBackwardTol, "dwte");
}

TEST(TrainLayers, CrossEntropyIsStableForHugeLogits) {
    // Logits of order ±1e4 overflow a naive exp; the max-subtracted form must give the double answer.
    const int64_t N = 3, d = 4, V = 5;
    std::vector<double> x = randn(N * d, 1, 100.0), wte = randn(V * d, 2, 100.0);
    const std::vector<int32_t> targets = {0, 3, 4};
    std::vector<double> logits(N * V), lse(N), losses(N);
    crossentropy_forward_ref(logits.data(), lse.data(), losses.data(), x.data(), wte.data(), targets.data(),
                             N, d, V);
    ASSERT_GT(test::max_abs(logits), 1e3);
    const std::vector<float> x_f = to_float(x), wte_f = to_float(wte);
    std::vector<float> logits_f(N * V), lse_f(N), losses_f(N);
    crossentropy_forward(logits_f.data(), lse_f.data(), losses_f.data(), x_f.data(), wte_f.data(),
                         targets.data(), N, d, V);
    for (int64_t n = 0; n < N; ++n) {
        EXPECT_TRUE(std::isfinite(losses_f[n]));
        EXPECT_GE(losses_f[n], 0.0f);
        // A loss is a difference of two O(1e4) numbers: absolute float error ~1e4·6e-8.
        EXPECT_NEAR(losses_f[n], losses[n], 5e-3 + 1e-5 * losses[n]);
    }
    std::vector<float> dx(N * d), dwte(V * d, 0.0f), dlosses(N, 1.0f / N);
    crossentropy_backward(dx.data(), dwte.data(), logits_f.data(), lse_f.data(), dlosses.data(), x_f.data(),
                          wte_f.data(), targets.data(), N, d, V);
    for (float g : dx) EXPECT_TRUE(std::isfinite(g));
    for (float g : dwte) EXPECT_TRUE(std::isfinite(g));
}

TEST(TrainLayers, CrossEntropyWithoutTargetsLeavesLossesAlone) {
    const int64_t N = 2, d = 3, V = 4;
    const std::vector<float> x = to_float(randn(N * d, 1)), wte = to_float(randn(V * d, 2));
    std::vector<float> logits(N * V), lse(N), losses(N, -7.0f);
    crossentropy_forward(logits.data(), lse.data(), losses.data(), x.data(), wte.data(), nullptr, N, d, V);
    for (float l : losses) EXPECT_EQ(l, -7.0f);
    for (int64_t n = 0; n < N; ++n) {
        double sum = 0.0;  // lse is what normalises the softmax
        for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(logits[n * V + v]) - lse[n]);
        EXPECT_NEAR(sum, 1.0, 1e-6);
    }
}

}  // namespace
}  // namespace expar
