// Tests of the plain-loop reference layer (docs/layer.md): its gradients against central finite
// differences of the objective in double precision, and its forward against closed forms and
// independently written checks (losses, capacity, drops, gate randomness).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "reference_layer.h"
#include "rng.h"

namespace expar {
namespace {

constexpr uint64_t kSeed = 20240611;
constexpr int64_t kStep = 3;

using Params = ReferenceParams<double>;
using Result = ReferenceResult<double>;

// x or dy [T, d] as the synthetic generator draws them (docs/layer.md).
std::vector<double> synthetic_tokens(uint64_t stream, int64_t count) {
    std::vector<double> v(count);
    for (int64_t n = 0; n < count; ++n) v[n] = rng_normal(kSeed, rng_per_step(stream, kStep), n);
    return v;
}

LayerConfig small_config() {
    LayerConfig c;
    c.num_experts = 4;
    c.top_k = 2;
    c.d_model = 6;
    c.d_ff = 5;
    c.tokens_per_rank = 8;
    c.capacity_factor = 0;
    c.aux_loss_coef = 0.1;  // large enough that the loss paths matter in the finite differences
    c.z_loss_coef = 0.05;
    return c;
}

Result run(const LayerConfig& c,
           int num_ranks,
           const std::vector<double>& x,
           const std::vector<double>& dy,
           const Params& params) {
    Result r;
    reference_layer<double>(c, num_ranks, kSeed, kStep, x, dy, params, &r);
    return r;
}

int64_t count_dropped(const Result& r) {
    int64_t n = 0;
    for (size_t s = 0; s < r.kept.size(); ++s) n += r.routed[s] && !r.kept[s];
    return n;
}

int64_t count_skipped(const Result& r) {
    int64_t n = 0;
    for (uint8_t routed : r.routed) n += !routed;
    return n;
}

// The test's own expert FFN for one token (written from docs/layer.md, not from the reference).
// Returns FFN_e(x_row) [d]; pre receives x W1 + b1 [f].
std::vector<double> expert_ffn(
    const LayerConfig& c, const Params& p, int64_t e, const double* x_row, std::vector<double>* pre) {
    const int64_t d = c.d_model, f = c.d_ff;
    std::vector<double> hidden(f);
    pre->assign(f, 0.0);
    for (int64_t j = 0; j < f; ++j) {
        double a = c.expert_bias ? p.b1[e * f + j] : 0.0;
        double g = 0;
        for (int64_t i = 0; i < d; ++i) {
            a += x_row[i] * p.w1[(e * d + i) * f + j];
            if (c.activation == Activation::swiglu) g += x_row[i] * p.w3[(e * d + i) * f + j];
        }
        (*pre)[j] = a;
        switch (c.activation) {
            case Activation::gelu:
                hidden[j] = 0.5 * a * (1.0 + std::erf(a / std::sqrt(2.0)));
                break;
            case Activation::relu:
                hidden[j] = std::max(a, 0.0);
                break;
            case Activation::silu:
                hidden[j] = a / (1.0 + std::exp(-a));
                break;
            case Activation::swiglu:
                hidden[j] = a / (1.0 + std::exp(-a)) * g;
                break;
        }
    }
    std::vector<double> out(d);
    for (int64_t i = 0; i < d; ++i) {
        out[i] = c.expert_bias ? p.b2[e * d + i] : 0.0;
        for (int64_t j = 0; j < f; ++j) out[i] += hidden[j] * p.w2[(e * f + j) * d + i];
    }
    return out;
}

// ------------------------------------------------------------------ finite differences

struct GradCase {
    std::string name;
    LayerConfig config;
    int num_ranks;
    bool expect_drops;
};

std::vector<GradCase> grad_cases() {
    std::vector<GradCase> cases;
    auto add = [&](std::string name, int num_ranks, bool expect_drops, auto edit) {
        LayerConfig c = small_config();
        edit(c);
        cases.push_back({std::move(name), c, num_ranks, expect_drops});
    };
    add("topk_gelu_bias_dropless", 1, false, [](LayerConfig&) {});
    add("topk_renorm_silu_local_position_p2", 2, true, [](LayerConfig& c) {
        c.renormalize = true;
        c.activation = Activation::silu;
        c.expert_bias = false;
        c.capacity_factor = 1.0;
        c.skew = 0.7;
    });
    add("topk_swiglu_bias_global_probs_p2", 2, true, [](LayerConfig& c) {
        c.activation = Activation::swiglu;
        c.capacity_factor = 1.0;
        c.capacity_scope = CapacityScope::global;
        c.drop_policy = DropPolicy::probs;
        c.skew = 0.7;
    });
    add("topk_k3_renorm_relu_dropless", 1, false, [](LayerConfig& c) {
        c.top_k = 3;
        c.renormalize = true;
        c.activation = Activation::relu;
    });
    add("switch_relu_bias_global_probs_p2", 2, true, [](LayerConfig& c) {
        c.gate = GateKind::switch_top1;
        c.top_k = 1;
        c.activation = Activation::relu;
        c.capacity_factor = 1.0;
        c.capacity_scope = CapacityScope::global;
        c.drop_policy = DropPolicy::probs;
        c.skew = 0.5;
    });
    add("switch_gelu_local_position", 1, true, [](LayerConfig& c) {
        c.gate = GateKind::switch_top1;
        c.top_k = 1;
        c.expert_bias = false;
        c.capacity_factor = 1.0;
        c.skew = 0.5;
    });
    add("gshard_swiglu_bias_local_probs", 1, true, [](LayerConfig& c) {
        c.gate = GateKind::gshard;
        c.activation = Activation::swiglu;
        c.capacity_factor = 1.0;
        c.drop_policy = DropPolicy::probs;
        c.skew = 0.7;
    });
    add("gshard_gelu_dropless_p2", 2, false, [](LayerConfig& c) {
        c.gate = GateKind::gshard;
        c.expert_bias = false;
    });
    add("noisy_gelu_dropless_p2", 2, false, [](LayerConfig& c) {
        c.gate = GateKind::noisy_topk;
        c.expert_bias = false;
    });
    add("noisy_silu_bias_global_position", 1, true, [](LayerConfig& c) {
        c.gate = GateKind::noisy_topk;
        c.activation = Activation::silu;
        c.capacity_factor = 1.0;
        c.capacity_scope = CapacityScope::global;
        c.skew = 0.7;
    });
    add("noisy_relu_local_probs_p2", 2, true, [](LayerConfig& c) {
        c.gate = GateKind::noisy_topk;
        c.activation = Activation::relu;
        c.capacity_factor = 1.0;
        c.drop_policy = DropPolicy::probs;
        c.skew = 0.7;
    });
    return cases;
}

class ReferenceGradient : public ::testing::TestWithParam<GradCase> {};

bool same_decisions(const Result& a, const Result& b) {
    return a.expert == b.expert && a.routed == b.routed && a.kept == b.kept;
}

TEST_P(ReferenceGradient, MatchesCentralDifferences) {
    const GradCase& gc = GetParam();
    const LayerConfig& c = gc.config;
    const int64_t T = gc.num_ranks * c.tokens_per_rank, d = c.d_model, k = c.top_k;
    Params params = reference_params_init<double>(c, kSeed);
    std::vector<double> x = synthetic_tokens(kStreamTokens, T * d);
    const std::vector<double> dy = synthetic_tokens(kStreamUpstreamGrad, T * d);
    const Result base = run(c, gc.num_ranks, x, dy, params);

    // The case must exercise what its name says.
    if (gc.expect_drops) {
        ASSERT_GT(count_dropped(base), 0) << "no assignment was dropped";
    } else {
        ASSERT_EQ(count_dropped(base), 0);
    }
    if (c.gate == GateKind::gshard) {
        ASSERT_GT(count_skipped(base), 0) << "no gshard second slot was skipped";
        ASSERT_LT(count_skipped(base), T) << "every gshard second slot was skipped";
    }
    // relu is not differentiable at 0: the finite differences are only valid if no kept pre-activation
    // lies within reach of the step (a step of 1e-6 moves them by far less than 1e-4).
    if (c.activation == Activation::relu) {
        double min_abs = INFINITY;
        for (int64_t t = 0; t < T; ++t)
            for (int64_t j = 0; j < k; ++j) {
                if (!base.kept[t * k + j]) continue;
                std::vector<double> pre;
                expert_ffn(c, params, base.expert[t * k + j], &x[t * d], &pre);
                for (double a : pre) min_abs = std::min(min_abs, std::abs(a));
            }
        ASSERT_GT(min_abs, 1e-4) << "a relu pre-activation sits on the kink";
    }

    const double step = 1e-6;
    // Central differences of the objective over every element of v, compared with the analytic gradient.
    auto check = [&](const char* name, std::vector<double>& v, const std::vector<double>& analytic) {
        ASSERT_EQ(v.size(), analytic.size()) << name;
        ASSERT_FALSE(v.empty()) << name;
        double diff2 = 0, fd2 = 0;
        for (size_t n = 0; n < v.size(); ++n) {
            const double saved = v[n];
            v[n] = saved + step;
            const Result plus = run(c, gc.num_ranks, x, dy, params);
            v[n] = saved - step;
            const Result minus = run(c, gc.num_ranks, x, dy, params);
            v[n] = saved;
            // Routing and drops are piecewise constant; a flip inside the step would invalidate the check.
            ASSERT_TRUE(same_decisions(base, plus) && same_decisions(base, minus))
                << name << "[" << n << "]: routing changed within the finite-difference step";
            const double fd = (plus.objective - minus.objective) / (2 * step);
            diff2 += (analytic[n] - fd) * (analytic[n] - fd);
            fd2 += fd * fd;
        }
        const double rel = std::sqrt(diff2) / std::max(std::sqrt(fd2), 1e-12);
        EXPECT_LT(rel, 1e-6) << name << ": |g - fd| / |fd| = " << rel << ", |fd| = " << std::sqrt(fd2);
        EXPECT_GT(fd2, 0.0) << name << ": the objective does not depend on this tensor";
    };

    check("x", x, base.dx);
    check("router_w", params.router_w, base.grad.router_w);
    if (c.gate == GateKind::noisy_topk) {
        check("router_noise_w", params.router_noise_w, base.grad.router_noise_w);
    } else {
        EXPECT_TRUE(params.router_noise_w.empty());
        EXPECT_TRUE(base.grad.router_noise_w.empty());
    }
    check("w1", params.w1, base.grad.w1);
    check("w2", params.w2, base.grad.w2);
    if (c.expert_bias) {
        check("b1", params.b1, base.grad.b1);
        check("b2", params.b2, base.grad.b2);
    } else {
        EXPECT_TRUE(base.grad.b1.empty() && base.grad.b2.empty());
    }
    if (c.activation == Activation::swiglu) {
        check("w3", params.w3, base.grad.w3);
    } else {
        EXPECT_TRUE(base.grad.w3.empty());
    }
}

INSTANTIATE_TEST_SUITE_P(Configs,
                         ReferenceGradient,
                         ::testing::ValuesIn(grad_cases()),
                         [](const ::testing::TestParamInfo<GradCase>& info) { return info.param.name; });

// ------------------------------------------------------------------ losses

// A zero router with no skew gives p = 1/E everywhere: ties select experts 0..k-1, aux = 1, z = ln(E)^2.
TEST(ReferenceLayer, UniformRouterGivesUnitAuxAndClosedFormZ) {
    for (int k : {1, 2}) {
        LayerConfig c = small_config();
        c.num_experts = 8;
        c.top_k = k;
        const int64_t T = c.tokens_per_rank, d = c.d_model, E = c.num_experts;
        Params params = reference_params_init<double>(c, kSeed);
        std::fill(params.router_w.begin(), params.router_w.end(), 0.0);
        const Result r = run(c, 1, synthetic_tokens(kStreamTokens, T * d),
                             synthetic_tokens(kStreamUpstreamGrad, T * d), params);
        EXPECT_NEAR(r.aux, 1.0, 1e-12);
        EXPECT_NEAR(r.z, std::log(double(E)) * std::log(double(E)), 1e-12);
        for (int64_t t = 0; t < T; ++t)
            for (int j = 0; j < k; ++j) {
                EXPECT_EQ(r.expert[t * k + j], j) << "ties must go to the lower expert index";
                EXPECT_NEAR(r.weight[t * k + j], 1.0 / double(E), 1e-15);
            }
    }
}

TEST(ReferenceLayer, ObjectiveIsDotPlusWeightedLosses) {
    LayerConfig c = small_config();
    const int64_t T = 2 * c.tokens_per_rank, d = c.d_model;
    const Params params = reference_params_init<double>(c, kSeed);
    const std::vector<double> x = synthetic_tokens(kStreamTokens, T * d);
    const std::vector<double> dy = synthetic_tokens(kStreamUpstreamGrad, T * d);
    const Result r = run(c, 2, x, dy, params);
    double dot = 0;
    for (int64_t n = 0; n < T * d; ++n) dot += dy[n] * r.y[n];
    EXPECT_NEAR(r.objective, dot + c.aux_loss_coef * r.aux + c.z_loss_coef * r.z, 1e-12);
    EXPECT_GT(r.aux, 0.0);
    EXPECT_GT(r.z, 0.0);
}

// ------------------------------------------------------------------ capacity

struct CapacityCase {
    double capacity_factor;
    int64_t tokens;  // N of the single global group
    int top_k;
    int64_t num_experts;
    int64_t capacity;
};

// Every token routes slot j to expert j: a zero router plus a steep skew orders the experts 0, 1, 2, ...
Result run_all_to_low_experts(LayerConfig c, int num_ranks) {
    c.d_model = 2;
    c.d_ff = 2;
    c.skew = 2.0;
    const int64_t T = num_ranks * c.tokens_per_rank;
    Params params = reference_params_init<double>(c, kSeed);
    std::fill(params.router_w.begin(), params.router_w.end(), 0.0);
    return run(c, num_ranks, synthetic_tokens(kStreamTokens, T * 2),
               synthetic_tokens(kStreamUpstreamGrad, T * 2), params);
}

// With a zero router every token has the same gate weights, so the probs policy ties everywhere and
// falls back to token order: both policies must keep exactly the first `capacity` tokens.
TEST(ReferenceLayer, CapacityFormulaExamples) {
    const std::vector<CapacityCase> cases = {
        {1.1, 1000, 1, 10, 110},  // cf*N*k/E = 110 exactly in double
        {1.1, 200, 1, 2, 110},    // 110.00000000000001 in double: must not become 111
        {1.1, 100, 1, 1, 110},    // same rounding, E = 1 (nothing is dropped: 100 < 110)
        {1.0, 1000, 1, 10, 100}, {1.25, 100, 1, 8, 16},  // 15.625
        {0.5, 10, 1, 4, 2},                              // 1.25
        {1.0, 100, 2, 8, 25},
    };
    for (DropPolicy policy : {DropPolicy::position, DropPolicy::probs})
        for (const CapacityCase& cc : cases) {
            LayerConfig c;
            c.num_experts = cc.num_experts;
            c.top_k = cc.top_k;
            c.capacity_factor = cc.capacity_factor;
            c.capacity_scope = CapacityScope::global;
            c.drop_policy = policy;
            c.tokens_per_rank = cc.tokens;
            const Result r = run_all_to_low_experts(c, 1);
            for (int j = 0; j < cc.top_k; ++j) {
                SCOPED_TRACE(std::string(to_string(policy)) + " cf " + std::to_string(cc.capacity_factor) +
                             " N " + std::to_string(cc.tokens) + " expert " + std::to_string(j));
                EXPECT_EQ(r.requested[j], cc.tokens);
                EXPECT_EQ(r.received[j], std::min(cc.tokens, cc.capacity));
                for (int64_t t = 0; t < cc.tokens; ++t)
                    ASSERT_EQ(r.kept[t * cc.top_k + j], t < cc.capacity ? 1 : 0) << "token " << t;
            }
        }
}

TEST(ReferenceLayer, DroplessKeepsEverything) {
    LayerConfig c;
    c.num_experts = 10;
    c.top_k = 1;
    c.capacity_factor = 0;
    c.tokens_per_rank = 1000;
    const Result r = run_all_to_low_experts(c, 1);
    EXPECT_EQ(r.requested[0], 1000);
    EXPECT_EQ(r.received[0], 1000);
}

TEST(ReferenceLayer, LocalScopeRationsEachRank) {
    for (DropPolicy policy : {DropPolicy::position, DropPolicy::probs}) {
        LayerConfig c;
        c.num_experts = 10;
        c.top_k = 1;
        c.capacity_factor = 1.1;
        c.capacity_scope = CapacityScope::local;
        c.drop_policy = policy;
        c.tokens_per_rank = 200;  // per rank: 1.1 * 200 / 10 = 22.000000000000004 in double -> capacity 22
        const Result r = run_all_to_low_experts(c, 5);
        EXPECT_EQ(r.requested[0], 1000);
        EXPECT_EQ(r.received[0], 5 * 22);
        for (int64_t t = 0; t < 1000; ++t) ASSERT_EQ(r.kept[t], t % 200 < 22 ? 1 : 0) << "token " << t;
    }
}

// Invariants and policy order on random routing, checked from expert/weight/routed/kept alone.
TEST(ReferenceLayer, CapacityInvariantsAndPolicyOrder) {
    for (GateKind gate : {GateKind::topk, GateKind::gshard, GateKind::switch_top1, GateKind::noisy_topk})
        for (CapacityScope scope : {CapacityScope::local, CapacityScope::global})
            for (DropPolicy policy : {DropPolicy::position, DropPolicy::probs})
                for (double cf : {0.0, 0.5, 1.0}) {
                    LayerConfig c = small_config();
                    c.gate = gate;
                    c.top_k = gate == GateKind::switch_top1 ? 1 : 2;
                    c.num_experts = 8;
                    c.tokens_per_rank = 64;
                    c.capacity_factor = cf;
                    c.capacity_scope = scope;
                    c.drop_policy = policy;
                    c.skew = 0.5;
                    const int num_ranks = 2;
                    const int64_t T = num_ranks * c.tokens_per_rank, d = c.d_model, E = c.num_experts;
                    const int k = c.top_k;
                    SCOPED_TRACE(std::string(to_string(gate)) + " " + to_string(scope) + " " +
                                 to_string(policy) + " cf " + std::to_string(cf));
                    const Params params = reference_params_init<double>(c, kSeed);
                    const Result r = run(c, num_ranks, synthetic_tokens(kStreamTokens, T * d),
                                         synthetic_tokens(kStreamUpstreamGrad, T * d), params);

                    int64_t requested_sum = 0;
                    for (int64_t e = 0; e < E; ++e) requested_sum += r.requested[e];
                    EXPECT_EQ(requested_sum + count_skipped(r), T * k);
                    if (gate != GateKind::gshard) {
                        EXPECT_EQ(count_skipped(r), 0);
                    }

                    const int64_t groups = scope == CapacityScope::local ? num_ranks : 1;
                    const int64_t n = T / groups;
                    const int64_t capacity = cf == 0 ? T * k : int64_t(std::ceil(cf * n * k / E - 1e-9));
                    for (int64_t e = 0; e < E; ++e) {
                        int64_t expected_received = 0, requested = 0;
                        for (int64_t g = 0; g < groups; ++g) {
                            // (token, weight, kept) of the routed assignments to e in group g, token order.
                            std::vector<int64_t> kept_t, dropped_t;
                            std::vector<double> kept_w, dropped_w;
                            for (int64_t t = g * n; t < (g + 1) * n; ++t)
                                for (int j = 0; j < k; ++j) {
                                    const int64_t s = t * k + j;
                                    if (!r.routed[s]) {
                                        EXPECT_FALSE(r.kept[s]);
                                        continue;
                                    }
                                    if (r.expert[s] != e) continue;
                                    (r.kept[s] ? kept_t : dropped_t).push_back(t);
                                    (r.kept[s] ? kept_w : dropped_w).push_back(r.weight[s]);
                                }
                            const int64_t group_requested = int64_t(kept_t.size() + dropped_t.size());
                            requested += group_requested;
                            expected_received += std::min(group_requested, capacity);
                            EXPECT_EQ(int64_t(kept_t.size()), std::min(group_requested, capacity));
                            for (size_t a = 0; a < kept_t.size(); ++a)
                                for (size_t b = 0; b < dropped_t.size(); ++b) {
                                    if (policy == DropPolicy::position) {
                                        EXPECT_LT(kept_t[a], dropped_t[b]);
                                    } else {
                                        EXPECT_TRUE(kept_w[a] > dropped_w[b] ||
                                                    (kept_w[a] == dropped_w[b] && kept_t[a] < dropped_t[b]));
                                    }
                                }
                        }
                        EXPECT_EQ(r.requested[e], requested);
                        EXPECT_EQ(r.received[e], expected_received);
                    }
                    if (cf == 0.5) {
                        EXPECT_GT(count_dropped(r), 0) << "the case should drop";
                    }
                }
}

// ------------------------------------------------------------------ output

// y is exactly the kept slots' weighted expert outputs; dropped and skipped slots add nothing.
TEST(ReferenceLayer, OutputSumsOnlyKeptSlots) {
    for (GateKind gate : {GateKind::topk, GateKind::gshard})
        for (Activation act : {Activation::gelu, Activation::relu, Activation::silu, Activation::swiglu}) {
            LayerConfig c = small_config();
            c.gate = gate;
            c.activation = act;
            c.capacity_factor = 0.75;
            c.skew = 0.7;
            const int num_ranks = 2;
            const int64_t T = num_ranks * c.tokens_per_rank, d = c.d_model;
            const int k = c.top_k;
            SCOPED_TRACE(std::string(to_string(gate)) + " " + to_string(act));
            const Params params = reference_params_init<double>(c, kSeed);
            const std::vector<double> x = synthetic_tokens(kStreamTokens, T * d);
            const Result r = run(c, num_ranks, x, synthetic_tokens(kStreamUpstreamGrad, T * d), params);
            ASSERT_GT(count_dropped(r), 0);
            int64_t partially_kept = 0;
            for (int64_t t = 0; t < T; ++t) {
                std::vector<double> expected(d, 0.0), pre;
                int kept = 0, routed = 0;
                for (int j = 0; j < k; ++j) {
                    routed += r.routed[t * k + j];
                    if (!r.kept[t * k + j]) continue;
                    ++kept;
                    const std::vector<double> o = expert_ffn(c, params, r.expert[t * k + j], &x[t * d], &pre);
                    for (int64_t i = 0; i < d; ++i) expected[i] += r.weight[t * k + j] * o[i];
                }
                partially_kept += kept > 0 && kept < routed;
                for (int64_t i = 0; i < d; ++i)
                    EXPECT_NEAR(r.y[t * d + i], expected[i], 1e-12) << "token " << t;
            }
            EXPECT_GT(partially_kept, 0) << "no token had one slot kept and one dropped";
        }
}

// --renormalize belongs to topk: switch's weight stays p[t, e_0] (with k = 1 renormalising would give 1).
TEST(ReferenceLayer, SwitchIgnoresRenormalize) {
    LayerConfig c = small_config();
    c.gate = GateKind::switch_top1;
    c.top_k = 1;
    const int64_t T = c.tokens_per_rank, d = c.d_model;
    const Params params = reference_params_init<double>(c, kSeed);
    const std::vector<double> x = synthetic_tokens(kStreamTokens, T * d);
    const std::vector<double> dy = synthetic_tokens(kStreamUpstreamGrad, T * d);
    const Result plain = run(c, 1, x, dy, params);
    c.renormalize = true;
    const Result renormalized = run(c, 1, x, dy, params);
    EXPECT_EQ(renormalized.weight, plain.weight);
    for (double w : plain.weight) EXPECT_LT(w, 1.0);
}

// ------------------------------------------------------------------ gate randomness

// Zero router, skew 1: p_e ∝ 1/(e+1), so w_1 = (1/2)/(1 + 1/2) = 1/3 and slot 1 is routed iff U[t] < 2/3.
TEST(ReferenceLayer, GshardCoinUsesPerStepStream) {
    LayerConfig c = small_config();
    c.gate = GateKind::gshard;
    c.skew = 1.0;
    c.tokens_per_rank = 64;
    const int64_t T = c.tokens_per_rank, d = c.d_model;
    Params params = reference_params_init<double>(c, kSeed);
    std::fill(params.router_w.begin(), params.router_w.end(), 0.0);
    const Result r = run(c, 1, synthetic_tokens(kStreamTokens, T * d),
                         synthetic_tokens(kStreamUpstreamGrad, T * d), params);
    int64_t routed = 0;
    for (int64_t t = 0; t < T; ++t) {
        EXPECT_EQ(r.expert[t * 2], 0);
        EXPECT_EQ(r.expert[t * 2 + 1], 1);
        EXPECT_NEAR(r.weight[t * 2], 2.0 / 3.0, 1e-15);
        EXPECT_NEAR(r.weight[t * 2 + 1], 1.0 / 3.0, 1e-15);
        EXPECT_EQ(r.routed[t * 2], 1);
        const double u = rng_uniform(kSeed, rng_per_step(kStreamGshardUniform, kStep), t);
        EXPECT_EQ(r.routed[t * 2 + 1], u < 2.0 / 3.0 ? 1 : 0) << "token " << t;
        routed += r.routed[t * 2 + 1];
    }
    EXPECT_GT(routed, 0);
    EXPECT_LT(routed, T);
}

// Zero router and zero noise weights: h[t,e] = eps[t,e]·ln 2, so selection and weights follow eps alone.
TEST(ReferenceLayer, NoisyTopkUsesPerStepNoise) {
    LayerConfig c = small_config();
    c.gate = GateKind::noisy_topk;
    c.num_experts = 6;
    c.top_k = 2;
    const int64_t T = c.tokens_per_rank, d = c.d_model, E = c.num_experts;
    Params params = reference_params_init<double>(c, kSeed);
    std::fill(params.router_w.begin(), params.router_w.end(), 0.0);
    std::fill(params.router_noise_w.begin(), params.router_noise_w.end(), 0.0);
    const Result r = run(c, 1, synthetic_tokens(kStreamTokens, T * d),
                         synthetic_tokens(kStreamUpstreamGrad, T * d), params);
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> h(E);
        for (int64_t e = 0; e < E; ++e)
            h[e] = rng_normal(kSeed, rng_per_step(kStreamGateNoise, kStep), t * E + e) * std::log(2.0);
        std::vector<int64_t> order(E);
        for (int64_t e = 0; e < E; ++e) order[e] = e;
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return h[a] > h[b]; });
        EXPECT_EQ(r.expert[t * 2], order[0]);
        EXPECT_EQ(r.expert[t * 2 + 1], order[1]);
        const double w0 = 1.0 / (1.0 + std::exp(h[order[1]] - h[order[0]]));
        EXPECT_NEAR(r.weight[t * 2], w0, 1e-12);
        EXPECT_NEAR(r.weight[t * 2 + 1], 1.0 - w0, 1e-12);
    }
}

// ------------------------------------------------------------------ parameters and precision

TEST(ReferenceLayer, ParamsInitFollowsDocsAndMatchesAcrossPrecisions) {
    LayerConfig c = small_config();
    c.gate = GateKind::noisy_topk;
    c.activation = Activation::swiglu;
    c.expert_bias = true;
    const Params pd = reference_params_init<double>(c, kSeed);
    const ReferenceParams<float> pf = reference_params_init<float>(c, kSeed);
    const int64_t E = c.num_experts, d = c.d_model, f = c.d_ff;
    ASSERT_EQ(int64_t(pd.router_w.size()), d * E);
    ASSERT_EQ(int64_t(pd.router_noise_w.size()), d * E);
    ASSERT_EQ(int64_t(pd.w1.size()), E * d * f);
    ASSERT_EQ(int64_t(pd.w2.size()), E * f * d);
    ASSERT_EQ(int64_t(pd.w3.size()), E * d * f);
    ASSERT_EQ(int64_t(pd.b1.size()), E * f);
    ASSERT_EQ(int64_t(pd.b2.size()), E * d);
    for (size_t n = 0; n < pd.w1.size(); ++n) ASSERT_EQ(pd.w1[n], double(pf.w1[n]));
    for (size_t n = 0; n < pd.w2.size(); ++n) ASSERT_EQ(pd.w2[n], double(pf.w2[n]));
    for (size_t n = 0; n < pd.w3.size(); ++n) ASSERT_EQ(pd.w3[n], double(pf.w3[n]));
    for (size_t n = 0; n < pd.router_w.size(); ++n) ASSERT_EQ(pd.router_w[n], double(pf.router_w[n]));
    for (size_t n = 0; n < pd.router_noise_w.size(); ++n)
        ASSERT_EQ(pd.router_noise_w[n], double(pf.router_noise_w[n]));
    for (size_t n = 0; n < pd.b1.size(); ++n) ASSERT_EQ(pd.b1[n], double(pf.b1[n]));
    for (size_t n = 0; n < pd.b2.size(); ++n) ASSERT_EQ(pd.b2[n], double(pf.b2[n]));
    // Spot-check the documented keys and scales.
    const float sqrt_d = std::sqrt(float(d)), sqrt_f = std::sqrt(float(f));
    EXPECT_EQ(pf.router_w[1 * E + 2], rng_normal(kSeed, kStreamRouterW, 1 * E + 2) / sqrt_d);
    EXPECT_EQ(pf.router_noise_w[3 * E + 1],
              0.1f * rng_normal(kSeed, kStreamRouterNoiseW, 3 * E + 1) / sqrt_d);
    EXPECT_EQ(pf.w1[(2 * d + 1) * f + 3], rng_normal(kSeed, kStreamW1, (2 * d + 1) * f + 3) / sqrt_d);
    EXPECT_EQ(pf.w2[(1 * f + 4) * d + 5], rng_normal(kSeed, kStreamW2, (1 * f + 4) * d + 5) / sqrt_f);
    EXPECT_EQ(pf.w3[(3 * d + 0) * f + 2], rng_normal(kSeed, kStreamW3, (3 * d + 0) * f + 2) / sqrt_d);
    EXPECT_EQ(pf.b1[2 * f + 1], 0.02f * rng_normal(kSeed, kStreamB1, 2 * f + 1));
    EXPECT_EQ(pf.b2[3 * d + 4], 0.02f * rng_normal(kSeed, kStreamB2, 3 * d + 4));

    LayerConfig plain = small_config();
    plain.activation = Activation::gelu;
    plain.expert_bias = false;
    const Params pp = reference_params_init<double>(plain, kSeed);
    EXPECT_TRUE(pp.router_noise_w.empty());
    EXPECT_TRUE(pp.w3.empty());
    EXPECT_TRUE(pp.b1.empty());
    EXPECT_TRUE(pp.b2.empty());
}

// The float instantiation agrees with the double one to float accuracy on the same data.
TEST(ReferenceLayer, FloatMatchesDouble) {
    LayerConfig c = small_config();
    c.activation = Activation::swiglu;
    c.capacity_factor = 1.0;
    c.skew = 0.5;
    const int num_ranks = 2;
    const int64_t T = num_ranks * c.tokens_per_rank, d = c.d_model;
    const Params pd = reference_params_init<double>(c, kSeed);
    const ReferenceParams<float> pf = reference_params_init<float>(c, kSeed);
    const std::vector<double> xd = synthetic_tokens(kStreamTokens, T * d);
    const std::vector<double> dyd = synthetic_tokens(kStreamUpstreamGrad, T * d);
    const std::vector<float> xf(xd.begin(), xd.end()), dyf(dyd.begin(), dyd.end());
    const Result rd = run(c, num_ranks, xd, dyd, pd);
    ReferenceResult<float> rf;
    reference_layer<float>(c, num_ranks, kSeed, kStep, xf, dyf, pf, &rf);
    ASSERT_EQ(rf.expert, rd.expert);
    ASSERT_EQ(rf.kept, rd.kept);
    EXPECT_EQ(rf.requested, rd.requested);
    EXPECT_EQ(rf.received, rd.received);
    for (size_t n = 0; n < rd.y.size(); ++n) EXPECT_NEAR(rf.y[n], rd.y[n], 1e-5);
    for (size_t n = 0; n < rd.dx.size(); ++n) EXPECT_NEAR(rf.dx[n], rd.dx[n], 1e-5);
    for (size_t n = 0; n < rd.grad.w1.size(); ++n) EXPECT_NEAR(rf.grad.w1[n], rd.grad.w1[n], 1e-5);
    EXPECT_NEAR(rf.objective, rd.objective, 1e-4);
}

// One call is one forward and backward: a reused result holds the same values, not a sum.
TEST(ReferenceLayer, GradientsAreWrittenFresh) {
    LayerConfig c = small_config();
    c.expert_bias = true;
    const int64_t T = c.tokens_per_rank, d = c.d_model;
    const Params params = reference_params_init<double>(c, kSeed);
    const std::vector<double> x = synthetic_tokens(kStreamTokens, T * d);
    const std::vector<double> dy = synthetic_tokens(kStreamUpstreamGrad, T * d);
    Result r;
    reference_layer<double>(c, 1, kSeed, kStep, x, dy, params, &r);
    const Result first = r;
    reference_layer<double>(c, 1, kSeed, kStep, x, dy, params, &r);
    EXPECT_EQ(r.dx, first.dx);
    EXPECT_EQ(r.grad.router_w, first.grad.router_w);
    EXPECT_EQ(r.grad.w1, first.grad.w1);
    EXPECT_EQ(r.grad.b2, first.grad.b2);
    EXPECT_EQ(r.requested, first.requested);
}

}  // namespace
}  // namespace expar
