// The plain-loop reference MoE layer (docs/layer.md): forward, losses and exact backward over the
// global batch in one process. Every stage is a direct transcription of the contract, kept apart from
// the distributed code paths so the two can be held against each other.
//
// Precision: values that the distributed float layer stores (logits, p, gate weights, FFN
// activations, y) are stored as S; every sum runs in double and is cast to S once. Gradients are
// accumulated in double and cast at the end.
#include "reference_layer.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "check.h"
#include "rng.h"

namespace expar {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

// Stable: never exponentiates a large positive argument.
double softplus(double v) {
    return std::max(v, 0.0) + std::log1p(std::exp(-std::abs(v)));
}

double sigmoid(double v) {
    if (v >= 0) return 1.0 / (1.0 + std::exp(-v));
    const double e = std::exp(v);
    return e / (1.0 + e);
}

// Standard normal CDF, exact erf form (gelu is x * Phi(x), not the tanh approximation).
double normal_cdf(double v) {
    return 0.5 * std::erfc(-v * kInvSqrt2);
}

// The non-gated activation act(a) (for swiglu this is silu, applied to the W1 branch).
double activation(Activation kind, double a) {
    switch (kind) {
        case Activation::gelu:
            return a * normal_cdf(a);
        case Activation::relu:
            return a > 0 ? a : 0.0;
        case Activation::silu:
        case Activation::swiglu:
            return a * sigmoid(a);
    }
    return 0.0;
}

// d act / d a. relu'(0) = 0.
double activation_grad(Activation kind, double a) {
    switch (kind) {
        case Activation::gelu:
            return normal_cdf(a) + a * kInvSqrt2Pi * std::exp(-0.5 * a * a);
        case Activation::relu:
            return a > 0 ? 1.0 : 0.0;
        case Activation::silu:
        case Activation::swiglu: {
            const double s = sigmoid(a);
            return s * (1.0 + a * (1.0 - s));
        }
    }
    return 0.0;
}

// ceil(cf*N*k/E), shaved by a relative 1e-9 so that a product that is an integer up to rounding
// (1.1 * 200 / 2 = 110.00000000000001) is not bumped to the next integer.
int64_t expert_capacity(double capacity_factor, int64_t group_tokens, int top_k, int64_t num_experts) {
    const double x = capacity_factor * static_cast<double>(group_tokens) * static_cast<double>(top_k) /
                     static_cast<double>(num_experts);
    return static_cast<int64_t>(std::ceil(x - 1e-9 * std::max(1.0, x)));
}

// Softmax of row[0..n) in double with max subtraction; also returns log-sum-exp.
void softmax_row(const double* row, int64_t n, double* out, double* log_sum_exp) {
    double max_value = -std::numeric_limits<double>::infinity();
    for (int64_t e = 0; e < n; ++e) max_value = std::max(max_value, row[e]);
    double sum = 0;
    for (int64_t e = 0; e < n; ++e) {
        out[e] = std::exp(row[e] - max_value);
        sum += out[e];
    }
    for (int64_t e = 0; e < n; ++e) out[e] /= sum;
    if (log_sum_exp) *log_sum_exp = max_value + std::log(sum);
}

template <typename S>
std::vector<S> to_scalar(const std::vector<double>& v) {
    return std::vector<S>(v.begin(), v.end());
}

}  // namespace

template <typename S>
void reference_layer(const LayerConfig& config,
                     int num_ranks,
                     uint64_t seed,
                     int64_t step,
                     const std::vector<S>& x,
                     const std::vector<S>& dy,
                     const ReferenceParams<S>& params,
                     ReferenceResult<S>* out,
                     const ReferenceRouting& routing) {
    validate(config, num_ranks);
    const int64_t E = config.num_experts;
    const int k = config.top_k;
    const int64_t d = config.d_model;
    const int64_t f = config.d_ff;
    const int64_t t_local = config.tokens_per_rank;
    const int64_t T = num_ranks * t_local;
    const bool noisy = config.gate == GateKind::noisy_topk;
    const bool gated = has_gate_matrix(config.activation);
    const bool bias = config.expert_bias;

    EXPAR_REQUIRE(out != nullptr, "reference_layer: out is null");
    EXPAR_REQUIRE(static_cast<int64_t>(x.size()) == T * d, "reference_layer: x must be [T, d]");
    EXPAR_REQUIRE(static_cast<int64_t>(dy.size()) == T * d, "reference_layer: dy must be [T, d]");
    EXPAR_REQUIRE(static_cast<int64_t>(params.router_w.size()) == d * E,
                  "reference_layer: router_w must be [d, E]");
    EXPAR_REQUIRE(!noisy || static_cast<int64_t>(params.router_noise_w.size()) == d * E,
                  "reference_layer: noisy-topk needs router_noise_w [d, E]");
    EXPAR_REQUIRE(static_cast<int64_t>(params.w1.size()) == E * d * f,
                  "reference_layer: w1 must be [E, d, f]");
    EXPAR_REQUIRE(static_cast<int64_t>(params.w2.size()) == E * f * d,
                  "reference_layer: w2 must be [E, f, d]");
    EXPAR_REQUIRE(!gated || static_cast<int64_t>(params.w3.size()) == E * d * f,
                  "reference_layer: swiglu needs w3 [E, d, f]");
    EXPAR_REQUIRE(!bias || (static_cast<int64_t>(params.b1.size()) == E * f &&
                            static_cast<int64_t>(params.b2.size()) == E * d),
                  "reference_layer: expert bias needs b1 [E, f] and b2 [E, d]");

    ReferenceResult<S>& r = *out;
    r = ReferenceResult<S>();

    // ---------------------------------------------------------------- router
    // logits [T, E] = x Wr + bias; p [T, E] = softmax(logits); lse [T] = log-sum-exp of logits.
    std::vector<S> skew_bias(E);
    for (int64_t e = 0; e < E; ++e) skew_bias[e] = static_cast<S>(-config.skew * std::log(double(e + 1)));
    std::vector<S> logits(T * E), p(T * E);
    std::vector<double> lse(T);
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t e = 0; e < E; ++e) {
            double sum = 0;
            for (int64_t i = 0; i < d; ++i) sum += double(x[t * d + i]) * double(params.router_w[i * E + e]);
            logits[t * E + e] = static_cast<S>(sum) + skew_bias[e];
        }
        std::vector<double> row(E), prob(E);
        for (int64_t e = 0; e < E; ++e) row[e] = logits[t * E + e];
        softmax_row(row.data(), E, prob.data(), &lse[t]);
        for (int64_t e = 0; e < E; ++e) p[t * E + e] = static_cast<S>(prob[e]);
    }

    // noisy-topk: noise_logit [T, E] = x Wn, eps [T, E] fixed normals, h = logits + eps *
    // softplus(noise_logit).
    std::vector<S> noise_logit, eps, h;
    if (noisy) {
        noise_logit.resize(T * E);
        eps.resize(T * E);
        h.resize(T * E);
        const uint64_t stream = rng_per_step(kStreamGateNoise, step);
        for (int64_t t = 0; t < T; ++t) {
            for (int64_t e = 0; e < E; ++e) {
                double sum = 0;
                for (int64_t i = 0; i < d; ++i)
                    sum += double(x[t * d + i]) * double(params.router_noise_w[i * E + e]);
                noise_logit[t * E + e] = static_cast<S>(sum);
                eps[t * E + e] = static_cast<S>(rng_normal(seed, stream, static_cast<uint64_t>(t * E + e)));
                const S noise_std = static_cast<S>(softplus(noise_logit[t * E + e]));
                h[t * E + e] = logits[t * E + e] + eps[t * E + e] * noise_std;
            }
        }
    }

    // ---------------------------------------------------------------- selection and gate weights
    // expert, weight, routed: [T, k].
    const std::vector<S>& score = noisy ? h : p;
    r.expert.assign(T * k, 0);
    r.weight.assign(T * k, S(0));
    r.routed.assign(T * k, 1);
    const int64_t experts_per_rank = E / num_ranks;
    auto node_of_expert = [&](int64_t e) {
        return routing.node_of_rank.empty() ? 0 : routing.node_of_rank[e / experts_per_rank];
    };
    int num_nodes = 1;
    for (int node : routing.node_of_rank) num_nodes = std::max(num_nodes, node + 1);
    std::vector<S> selection(T * E);
    for (int64_t t = 0; t < T; ++t) {
        S* sel = &selection[t * E];
        for (int64_t e = 0; e < E; ++e)
            sel[e] =
                score[t * E + e] + (routing.selection_bias.empty() ? S(0) : S(routing.selection_bias[e]));
        if (config.node_limit > 0 && config.node_limit < num_nodes) {
            // Node score = sum of the node's best max(1, k/M) selection scores, largest first.
            const int per_node = std::max(1, k / config.node_limit);
            std::vector<S> node_score(num_nodes);
            for (int n = 0; n < num_nodes; ++n) {
                std::vector<S> values;
                for (int64_t e = 0; e < E; ++e)
                    if (node_of_expert(e) == n) values.push_back(sel[e]);
                std::sort(values.begin(), values.end(), std::greater<S>());
                S sum = 0;
                for (int i = 0; i < std::min<int>(per_node, values.size()); ++i) sum += values[i];
                node_score[n] = sum;
            }
            std::vector<bool> chosen(num_nodes, false);
            for (int m = 0; m < config.node_limit; ++m) {
                int best = -1;
                for (int n = 0; n < num_nodes; ++n)
                    if (!chosen[n] && (best < 0 || node_score[n] > node_score[best])) best = n;
                chosen[best] = true;
            }
            for (int64_t e = 0; e < E; ++e)
                if (!chosen[node_of_expert(e)]) sel[e] = -std::numeric_limits<S>::infinity();
        }
        // Slot j takes the best expert not yet taken; scanning e upwards with a strict '>' makes ties
        // go to the lower expert index.
        std::vector<bool> taken(E, false);
        for (int j = 0; j < k; ++j) {
            int64_t best = -1;
            for (int64_t e = 0; e < E; ++e) {
                if (taken[e]) continue;
                if (best < 0 || sel[e] > sel[best]) best = e;
            }
            taken[best] = true;
            r.expert[t * k + j] = best;
        }
    }
    // Topology gate, per source rank: its max_offnode best-scoring off-node assignments keep their
    // expert; the rest move to the token's best on-node expert not yet taken.
    if (routing.max_offnode >= 0) {
        for (int g = 0; g < num_ranks; ++g) {
            const int home = routing.node_of_rank.empty() ? 0 : routing.node_of_rank[g];
            std::vector<int64_t> remote;
            for (int64_t slot = g * t_local * k; slot < (g + 1) * t_local * k; ++slot)
                if (node_of_expert(r.expert[slot]) != home) remote.push_back(slot);
            if (static_cast<int64_t>(remote.size()) <= routing.max_offnode) continue;
            auto slot_score = [&](int64_t slot) { return score[(slot / k) * E + r.expert[slot]]; };
            std::sort(remote.begin(), remote.end(), [&](int64_t a, int64_t b) {
                if (slot_score(a) != slot_score(b)) return slot_score(a) > slot_score(b);
                return a < b;
            });
            for (size_t i = routing.max_offnode; i < remote.size(); ++i) {
                const int64_t slot = remote[i], t = slot / k;
                int64_t best = -1;
                for (int64_t e = 0; e < E; ++e) {
                    if (node_of_expert(e) != home) continue;
                    if (selection[t * E + e] == -std::numeric_limits<S>::infinity()) continue;
                    bool taken = false;
                    for (int j = 0; j < k; ++j) taken |= r.expert[t * k + j] == e;
                    if (taken) continue;
                    if (best < 0 || selection[t * E + e] > selection[t * E + best]) best = e;
                }
                if (best < 0) continue;
                r.expert[slot] = best;
                ++r.num_redirected;
            }
        }
    }
    for (int64_t t = 0; t < T; ++t) {
        const int64_t* sel = &r.expert[t * k];
        S* w = &r.weight[t * k];
        switch (config.gate) {
            case GateKind::topk:
            case GateKind::switch_top1: {
                double sum = 0;
                for (int j = 0; j < k; ++j) sum += p[t * E + sel[j]];
                for (int j = 0; j < k; ++j) {
                    const double pj = p[t * E + sel[j]];
                    w[j] =
                        static_cast<S>(config.renormalize && config.gate == GateKind::topk ? pj / sum : pj);
                }
                break;
            }
            case GateKind::gshard: {
                const double sum = double(p[t * E + sel[0]]) + double(p[t * E + sel[1]]);
                w[0] = static_cast<S>(p[t * E + sel[0]] / sum);
                w[1] = static_cast<S>(p[t * E + sel[1]] / sum);
                const double coin =
                    rng_uniform(seed, rng_per_step(kStreamGshardUniform, step), static_cast<uint64_t>(t));
                r.routed[t * k + 1] = coin < 2.0 * double(w[1]) ? 1 : 0;
                break;
            }
            case GateKind::noisy_topk: {
                // Softmax over the kept h values; the others are -inf and get weight 0.
                // (softmax_row subtracts the largest kept value, as the layer does.)
                std::vector<double> row(k), prob(k);
                for (int j = 0; j < k; ++j) row[j] = h[t * E + sel[j]];
                softmax_row(row.data(), k, prob.data(), nullptr);
                for (int j = 0; j < k; ++j) w[j] = static_cast<S>(prob[j]);
                break;
            }
        }
    }

    // ---------------------------------------------------------------- capacity and drops
    // Each (scope group, expert) keeps its first `capacity` routed assignments in policy order.
    const bool dropless = config.capacity_factor == 0.0;
    const bool local_scope = config.capacity_scope == CapacityScope::local;
    const int64_t num_groups = local_scope ? num_ranks : 1;
    const int64_t group_tokens = local_scope ? t_local : T;
    const int64_t capacity = dropless ? std::numeric_limits<int64_t>::max()
                                      : expert_capacity(config.capacity_factor, group_tokens, k, E);
    r.kept.assign(T * k, 0);
    r.requested.assign(E, 0);
    r.received.assign(E, 0);
    for (int64_t g = 0; g < num_groups; ++g) {
        for (int64_t e = 0; e < E; ++e) {
            std::vector<int64_t> slots;  // flat [t * k + j] of the routed assignments to e from this group
            for (int64_t t = g * group_tokens; t < (g + 1) * group_tokens; ++t)
                for (int j = 0; j < k; ++j)
                    if (r.routed[t * k + j] && r.expert[t * k + j] == e) slots.push_back(t * k + j);
            // A token picks an expert at most once, so the token index breaks every tie.
            if (config.drop_policy == DropPolicy::position) {
                std::sort(slots.begin(), slots.end());
            } else {
                std::sort(slots.begin(), slots.end(), [&](int64_t a, int64_t b) {
                    if (r.weight[a] != r.weight[b]) return r.weight[a] > r.weight[b];
                    return a / k < b / k;
                });
            }
            const int64_t keep = std::min<int64_t>(capacity, slots.size());
            for (int64_t n = 0; n < keep; ++n) r.kept[slots[n]] = 1;
            r.requested[e] += static_cast<int64_t>(slots.size());
            r.received[e] += keep;
        }
    }

    // ---------------------------------------------------------------- experts and combine
    // Per slot [T, k]: pre [f] = x W1 + b1, gate_pre [f] = x W3 (swiglu), hidden [f], ffn_out [d].
    std::vector<S> pre(T * k * f, S(0)), gate_pre, hidden(T * k * f, S(0)), ffn_out(T * k * d, S(0));
    if (gated) gate_pre.assign(T * k * f, S(0));
    for (int64_t t = 0; t < T; ++t) {
        for (int j = 0; j < k; ++j) {
            const int64_t slot = t * k + j;
            if (!r.kept[slot]) continue;
            const int64_t e = r.expert[slot];
            const S* w1 = &params.w1[e * d * f];
            const S* w2 = &params.w2[e * f * d];
            for (int64_t c = 0; c < f; ++c) {
                double sum = bias ? double(params.b1[e * f + c]) : 0.0;
                for (int64_t i = 0; i < d; ++i) sum += double(x[t * d + i]) * double(w1[i * f + c]);
                pre[slot * f + c] = static_cast<S>(sum);
                double value = activation(config.activation, pre[slot * f + c]);
                if (gated) {
                    const S* w3 = &params.w3[e * d * f];
                    double gate_sum = 0;
                    for (int64_t i = 0; i < d; ++i) gate_sum += double(x[t * d + i]) * double(w3[i * f + c]);
                    gate_pre[slot * f + c] = static_cast<S>(gate_sum);
                    value *= double(gate_pre[slot * f + c]);
                }
                hidden[slot * f + c] = static_cast<S>(value);
            }
            for (int64_t i = 0; i < d; ++i) {
                double sum = bias ? double(params.b2[e * d + i]) : 0.0;
                for (int64_t c = 0; c < f; ++c) sum += double(hidden[slot * f + c]) * double(w2[c * d + i]);
                ffn_out[slot * d + i] = static_cast<S>(sum);
            }
        }
    }
    r.y.assign(T * d, S(0));
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < d; ++i) {
            double sum = 0;
            for (int j = 0; j < k; ++j)
                if (r.kept[t * k + j])
                    sum += double(r.weight[t * k + j]) * double(ffn_out[(t * k + j) * d + i]);
            r.y[t * d + i] = static_cast<S>(sum);
        }
    }

    // ---------------------------------------------------------------- losses
    // f_e = requested_e / (T k) (GShard's skipped slots are not routed); mean_p [E] = P-bar.
    std::vector<double> mean_p(E, 0.0);
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < E; ++e) mean_p[e] += p[t * E + e];
    double aux = 0;
    for (int64_t e = 0; e < E; ++e) {
        mean_p[e] /= double(T);
        aux += double(r.requested[e]) / double(T * k) * mean_p[e];
    }
    aux *= double(E);
    double z = 0;
    for (int64_t t = 0; t < T; ++t) z += lse[t] * lse[t];
    z /= double(T);
    r.aux = static_cast<S>(aux);
    r.z = static_cast<S>(z);
    double dot = 0;
    for (int64_t n = 0; n < T * d; ++n) dot += double(dy[n]) * double(r.y[n]);
    r.objective =
        static_cast<S>(dot + config.aux_loss_coef * double(r.aux) + config.z_loss_coef * double(r.z));

    // ================================================================ backward of the objective
    std::vector<double> dx(T * d, 0.0);
    std::vector<double> g_w1(E * d * f, 0.0), g_w2(E * f * d, 0.0), g_b1, g_b2, g_w3;
    if (bias) {
        g_b1.assign(E * f, 0.0);
        g_b2.assign(E * d, 0.0);
    }
    if (gated) g_w3.assign(E * d * f, 0.0);

    // Experts. dweight [T, k] = dy[t] . ffn_out for kept slots, 0 for dropped or unrouted ones.
    std::vector<double> dweight(T * k, 0.0);
    for (int64_t t = 0; t < T; ++t) {
        for (int j = 0; j < k; ++j) {
            const int64_t slot = t * k + j;
            if (!r.kept[slot]) continue;
            const int64_t e = r.expert[slot];
            const double w = r.weight[slot];
            const S* w1 = &params.w1[e * d * f];
            const S* w2 = &params.w2[e * f * d];
            // d_out [d] = w * dy[t]; the combine is linear in both w and ffn_out.
            std::vector<double> d_out(d);
            double dw = 0;
            for (int64_t i = 0; i < d; ++i) {
                dw += double(dy[t * d + i]) * double(ffn_out[slot * d + i]);
                d_out[i] = w * double(dy[t * d + i]);
                if (bias) g_b2[e * d + i] += d_out[i];
            }
            dweight[slot] = dw;
            // d_pre, d_gate [f]: through W2 and the activation (and the swiglu product).
            std::vector<double> d_pre(f), d_gate(f, 0.0);
            for (int64_t c = 0; c < f; ++c) {
                double d_hidden = 0;
                for (int64_t i = 0; i < d; ++i) {
                    d_hidden += double(w2[c * d + i]) * d_out[i];
                    g_w2[(e * f + c) * d + i] += double(hidden[slot * f + c]) * d_out[i];
                }
                const double a = pre[slot * f + c];
                if (gated) {
                    const double g = gate_pre[slot * f + c];
                    d_pre[c] = d_hidden * g * activation_grad(config.activation, a);
                    d_gate[c] = d_hidden * activation(config.activation, a);
                } else {
                    d_pre[c] = d_hidden * activation_grad(config.activation, a);
                }
                if (bias) g_b1[e * f + c] += d_pre[c];
            }
            for (int64_t i = 0; i < d; ++i) {
                const double xi = x[t * d + i];
                double sum = 0;
                for (int64_t c = 0; c < f; ++c) {
                    g_w1[(e * d + i) * f + c] += xi * d_pre[c];
                    sum += double(w1[i * f + c]) * d_pre[c];
                    if (gated) {
                        g_w3[(e * d + i) * f + c] += xi * d_gate[c];
                        sum += double(params.w3[(e * d + i) * f + c]) * d_gate[c];
                    }
                }
                dx[t * d + i] += sum;
            }
        }
    }

    // Gate weights -> dp [T, E] (topk, switch, gshard) or dh [T, E] (noisy-topk). Selections, drops
    // and gshard coins are fixed decisions: they carry no gradient.
    std::vector<double> dp(T * E, 0.0), dlogits(T * E, 0.0), dnoise_logit;
    if (noisy) dnoise_logit.assign(T * E, 0.0);
    for (int64_t t = 0; t < T; ++t) {
        const int64_t* sel = &r.expert[t * k];
        const double* dw = &dweight[t * k];
        const S* w = &r.weight[t * k];
        const bool normalised =
            config.gate == GateKind::gshard || (config.gate == GateKind::topk && config.renormalize);
        if (config.gate == GateKind::noisy_topk) {
            // w = softmax(h_sel): dh_m = w_m (dw_m - sum_j w_j dw_j); h = logits + eps * softplus(nl).
            double weighted = 0;
            for (int j = 0; j < k; ++j) weighted += double(w[j]) * dw[j];
            for (int j = 0; j < k; ++j) {
                const int64_t te = t * E + sel[j];
                const double dh = double(w[j]) * (dw[j] - weighted);
                dlogits[te] += dh;
                dnoise_logit[te] += dh * double(eps[te]) * sigmoid(noise_logit[te]);
            }
        } else if (normalised) {
            // w_j = p_j / s with s = sum of the selected p: dp_m = (dw_m - sum_j w_j dw_j) / s.
            double sum = 0, weighted = 0;
            for (int j = 0; j < k; ++j) {
                sum += double(p[t * E + sel[j]]);
                weighted += double(w[j]) * dw[j];
            }
            for (int j = 0; j < k; ++j) dp[t * E + sel[j]] += (dw[j] - weighted) / sum;
        } else {
            for (int j = 0; j < k; ++j) dp[t * E + sel[j]] += dw[j];
        }
    }

    // Aux loss through P-bar only (f_e is a constant): d aux / d p[t,e] = E f_e / T.
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < E; ++e)
            dp[t * E + e] +=
                config.aux_loss_coef * double(E) * (double(r.requested[e]) / double(T * k)) / double(T);

    // Softmax backward, plus the z-loss: d z / d logits[t,e] = (2/T) lse_t p[t,e].
    for (int64_t t = 0; t < T; ++t) {
        double weighted = 0;
        for (int64_t e = 0; e < E; ++e) weighted += double(p[t * E + e]) * dp[t * E + e];
        for (int64_t e = 0; e < E; ++e) {
            const double pe = p[t * E + e];
            dlogits[t * E + e] +=
                pe * (dp[t * E + e] - weighted) + config.z_loss_coef * 2.0 / double(T) * lse[t] * pe;
        }
    }

    // Router matmuls (the skew bias is fixed): grad Wr = x^T dlogits, dx += dlogits Wr^T; same for Wn.
    std::vector<double> g_router(d * E, 0.0), g_noise;
    if (noisy) g_noise.assign(d * E, 0.0);
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < d; ++i) {
            const double xi = x[t * d + i];
            double sum = 0;
            for (int64_t e = 0; e < E; ++e) {
                g_router[i * E + e] += xi * dlogits[t * E + e];
                sum += double(params.router_w[i * E + e]) * dlogits[t * E + e];
                if (noisy) {
                    g_noise[i * E + e] += xi * dnoise_logit[t * E + e];
                    sum += double(params.router_noise_w[i * E + e]) * dnoise_logit[t * E + e];
                }
            }
            dx[t * d + i] += sum;
        }
    }

    r.dx = to_scalar<S>(dx);
    r.grad.router_w = to_scalar<S>(g_router);
    r.grad.router_noise_w = to_scalar<S>(g_noise);
    r.grad.w1 = to_scalar<S>(g_w1);
    r.grad.b1 = to_scalar<S>(g_b1);
    r.grad.w2 = to_scalar<S>(g_w2);
    r.grad.b2 = to_scalar<S>(g_b2);
    r.grad.w3 = to_scalar<S>(g_w3);
}

template <typename S>
ReferenceParams<S> reference_params_init(const LayerConfig& config, uint64_t seed) {
    const int64_t E = config.num_experts;
    const int64_t d = config.d_model;
    const int64_t f = config.d_ff;
    // Drawn and scaled in float, then cast, so float and double parameters hold identical values.
    auto draw = [&](uint64_t stream, int64_t count, float scale, float divisor) {
        std::vector<S> v(count);
        for (int64_t n = 0; n < count; ++n)
            v[n] = static_cast<S>(scale * rng_normal(seed, stream, static_cast<uint64_t>(n)) / divisor);
        return v;
    };
    const float sqrt_d = std::sqrt(static_cast<float>(d));
    const float sqrt_f = std::sqrt(static_cast<float>(f));
    ReferenceParams<S> params;
    params.router_w = draw(kStreamRouterW, d * E, 1.0f, sqrt_d);
    if (config.gate == GateKind::noisy_topk)
        params.router_noise_w = draw(kStreamRouterNoiseW, d * E, 0.1f, sqrt_d);
    params.w1 = draw(kStreamW1, E * d * f, 1.0f, sqrt_d);
    params.w2 = draw(kStreamW2, E * f * d, 1.0f, sqrt_f);
    if (has_gate_matrix(config.activation)) params.w3 = draw(kStreamW3, E * d * f, 1.0f, sqrt_d);
    if (config.expert_bias) {
        params.b1 = draw(kStreamB1, E * f, 0.02f, 1.0f);
        params.b2 = draw(kStreamB2, E * d, 0.02f, 1.0f);
    }
    return params;
}

template void reference_layer<float>(const LayerConfig&,
                                     int,
                                     uint64_t,
                                     int64_t,
                                     const std::vector<float>&,
                                     const std::vector<float>&,
                                     const ReferenceParams<float>&,
                                     ReferenceResult<float>*,
                                     const ReferenceRouting&);
template void reference_layer<double>(const LayerConfig&,
                                      int,
                                      uint64_t,
                                      int64_t,
                                      const std::vector<double>&,
                                      const std::vector<double>&,
                                      const ReferenceParams<double>&,
                                      ReferenceResult<double>*,
                                      const ReferenceRouting&);
template ReferenceParams<float> reference_params_init<float>(const LayerConfig&, uint64_t);
template ReferenceParams<double> reference_params_init<double>(const LayerConfig&, uint64_t);

}  // namespace expar
