// The BLAS expert FFN and the vectorised activations against plain loops in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "activation.h"
#include "expert_ffn.h"
#include "rng.h"

namespace expar {
namespace {

double act_ref(Activation a, double h) {
    switch (a) {
        case Activation::gelu:
            return h * 0.5 * std::erfc(-h / std::sqrt(2.0));
        case Activation::relu:
            return h > 0 ? h : 0;
        case Activation::silu:
        case Activation::swiglu:
            return h / (1 + std::exp(-h));
    }
    return 0;
}
double act_grad_ref(Activation a, double h) {
    switch (a) {
        case Activation::gelu:
            return 0.5 * std::erfc(-h / std::sqrt(2.0)) + h * std::exp(-0.5 * h * h) / std::sqrt(2 * M_PI);
        case Activation::relu:
            return h > 0 ? 1 : 0;
        case Activation::silu:
        case Activation::swiglu: {
            const double s = 1 / (1 + std::exp(-h));
            return s * (1 + h * (1 - s));
        }
    }
    return 0;
}

TEST(Activation, MatchesLibmAcrossRange) {
    const int64_t n = 20001;
    std::vector<float> h(n), g(n, 1.0f), out(n), da(n, 1.0f), dg(n);
    for (int64_t i = 0; i < n; ++i) h[i] = -15.0f + 30.0f * i / (n - 1);
    for (Activation a : {Activation::gelu, Activation::relu, Activation::silu}) {
        activation_forward(a, h.data(), g.data(), out.data(), n);
        std::fill(da.begin(), da.end(), 1.0f);
        activation_backward(a, h.data(), g.data(), da.data(), dg.data(), n);
        for (int64_t i = 0; i < n; ++i) {
            const double want = act_ref(a, h[i]), want_grad = act_grad_ref(a, h[i]);
            // Relative to max(|value|, floor): absolute near zeros. gelu' = Φ(h) + h·φ(h) vanishes at
            // h ≈ −0.75 by cancelling two terms of about 0.23, so its floor is 1e-2, not 1e-3.
            EXPECT_NEAR(out[i], want, 2e-6 * std::max(std::fabs(want), 1e-3))
                << to_string(a) << " h=" << h[i];
            EXPECT_NEAR(da[i], want_grad, 2e-5 * std::max(std::fabs(want_grad), 1e-2))
                << to_string(a) << " h=" << h[i];
        }
    }
}

// Plain-loop FFN in double for one expert, and its gradients, given dy.
struct Plain {
    std::vector<double> y, dx, dw1, db1, dw2, db2, dw3;
};
Plain plain_ffn(const std::vector<float>& x,
                const std::vector<float>& dy,
                const std::vector<float>& w1,
                const std::vector<float>& b1,
                const std::vector<float>& w2,
                const std::vector<float>& b2,
                const std::vector<float>& w3,
                int64_t n,
                int64_t d,
                int64_t f,
                Activation act) {
    const bool sw = act == Activation::swiglu;
    Plain p{std::vector<double>(n * d), std::vector<double>(n * d), std::vector<double>(d * f),
            std::vector<double>(f),     std::vector<double>(f * d), std::vector<double>(d),
            std::vector<double>(d * f)};
    for (int64_t r = 0; r < n; ++r) {
        std::vector<double> h(f), g(f, 1.0), a(f), da(f), dh(f), dgv(f);
        for (int64_t j = 0; j < f; ++j) {
            h[j] = b1[j];
            if (sw) g[j] = 0;
            for (int64_t i = 0; i < d; ++i) {
                h[j] += double(x[r * d + i]) * w1[i * f + j];
                if (sw) g[j] += double(x[r * d + i]) * w3[i * f + j];
            }
            a[j] = act_ref(act, h[j]) * g[j];
        }
        for (int64_t i = 0; i < d; ++i) {
            double s = b2[i];
            for (int64_t j = 0; j < f; ++j) s += a[j] * w2[j * d + i];
            p.y[r * d + i] = s;
            p.db2[i] += dy[r * d + i];
        }
        for (int64_t j = 0; j < f; ++j) {
            da[j] = 0;
            for (int64_t i = 0; i < d; ++i) {
                da[j] += double(dy[r * d + i]) * w2[j * d + i];
                p.dw2[j * d + i] += a[j] * dy[r * d + i];
            }
            dh[j] = da[j] * g[j] * act_grad_ref(act, h[j]);
            dgv[j] = da[j] * act_ref(act, h[j]);
            p.db1[j] += dh[j];
        }
        for (int64_t i = 0; i < d; ++i) {
            double s = 0;
            for (int64_t j = 0; j < f; ++j) {
                s += dh[j] * w1[i * f + j] + (sw ? dgv[j] * w3[i * f + j] : 0.0);
                p.dw1[i * f + j] += double(x[r * d + i]) * dh[j];
                if (sw) p.dw3[i * f + j] += double(x[r * d + i]) * dgv[j];
            }
            p.dx[r * d + i] = s;
        }
    }
    return p;
}

double rel(const float* a, const std::vector<double>& b) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < b.size(); ++i) {
        diff += (a[i] - b[i]) * (a[i] - b[i]);
        norm += b[i] * b[i];
    }
    return std::sqrt(diff / norm);
}

TEST(ExpertFfn, BlasMatchesPlainLoops) {
    const int64_t n = 37, d = 24, f = 40;
    for (Activation act : {Activation::gelu, Activation::relu, Activation::silu, Activation::swiglu}) {
        auto fill = [](int64_t count, uint64_t stream, float scale) {
            std::vector<float> v(count);
            for (int64_t i = 0; i < count; ++i) v[i] = scale * rng_normal(3, stream, i);
            return v;
        };
        const auto x = fill(n * d, 1, 1.0f), dy = fill(n * d, 2, 1.0f), w1 = fill(d * f, 3, 0.2f),
                   b1 = fill(f, 4, 0.1f), w2 = fill(f * d, 5, 0.15f), b2 = fill(d, 6, 0.1f),
                   w3 = fill(d * f, 7, 0.2f);
        const bool sw = act == Activation::swiglu;
        std::vector<float> y(n * d), dx(n * d), h(n * f), g(n * f), a(n * f), dh(n * f);
        std::vector<float> dw1(d * f, 0), db1(f, 0), dw2(f * d, 0), db2(d, 0), dw3(d * f, 0);
        const ExpertWeights w{w1.data(), b1.data(), w2.data(), b2.data(), sw ? w3.data() : nullptr};
        const ExpertShape shape{d, f, act};
        expert_ffn_forward(y.data(), {h.data(), g.data(), a.data(), dh.data()}, x.data(), w, n, shape);
        expert_ffn_backward(dx.data(), {dw1.data(), db1.data(), dw2.data(), db2.data(), dw3.data()},
                            dy.data(), x.data(), {h.data(), g.data(), a.data(), dh.data()}, w, n, shape);
        const Plain p = plain_ffn(x, dy, w1, b1, w2, b2, w3, n, d, f, act);
        SCOPED_TRACE(to_string(act));
        EXPECT_LT(rel(y.data(), p.y), 1e-5);
        EXPECT_LT(rel(dx.data(), p.dx), 1e-5);
        EXPECT_LT(rel(dw1.data(), p.dw1), 1e-5);
        EXPECT_LT(rel(db1.data(), p.db1), 1e-5);
        EXPECT_LT(rel(dw2.data(), p.dw2), 1e-5);
        EXPECT_LT(rel(db2.data(), p.db2), 1e-5);
        if (sw) EXPECT_LT(rel(dw3.data(), p.dw3), 1e-5);
        EXPECT_DOUBLE_EQ(expert_ffn_forward_flops(n, shape), (sw ? 3.0 : 2.0) * 2.0 * n * d * f);
    }
}

}  // namespace
}  // namespace expar
