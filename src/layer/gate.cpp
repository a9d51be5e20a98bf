#include "gate.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "blas.h"
#include "rng.h"

namespace expar {

namespace {

float softplus(float v) {
    return std::max(v, 0.0f) + std::log1p(std::exp(-std::fabs(v)));
}
float sigmoid(float v) {
    return 1.0f / (1.0f + std::exp(-v));
}

// The k largest scores in descending order; strict '>' keeps the lower expert index on ties.
void select_top_k(int32_t* expert, const float* score, int64_t num_experts, int k) {
    for (int j = 0; j < k; ++j) {
        int32_t best = -1;
        for (int64_t e = 0; e < num_experts; ++e) {
            bool taken = false;
            for (int i = 0; i < j; ++i) taken |= expert[i] == e;
            if (taken) continue;
            if (best < 0 || score[e] > score[best]) best = static_cast<int32_t>(e);
        }
        expert[j] = best;
    }
}

// DeepSeek-V3 node-limited routing on one token's selection scores: rank nodes by the sum of their
// best max(1, k / M) scores and send every expert off the M best nodes to -inf. Ties: lower node.
void limit_to_nodes(
    float* selection, const GateRouting& routing, int64_t num_experts, int k, float* scratch) {
    const int N = routing.num_nodes, M = routing.node_limit;
    const int per_node = std::max(1, k / M);
    float* node_score = scratch;  // [N]
    float* values = scratch + N;  // [E]
    for (int n = 0; n < N; ++n) {
        int64_t count = 0;
        for (int64_t e = 0; e < num_experts; ++e)
            if (routing.node_of_expert[e] == n) values[count++] = selection[e];
        const int64_t top = std::min<int64_t>(per_node, count);
        std::partial_sort(values, values + top, values + count, std::greater<float>());
        float sum = 0;
        for (int64_t i = 0; i < top; ++i) sum += values[i];
        node_score[n] = count > 0 ? sum : -INFINITY;
    }
    // Mark the M best nodes with +inf (scores are finite), then mask the rest.
    for (int m = 0; m < M; ++m) {
        int best = -1;
        for (int n = 0; n < N; ++n)
            if (node_score[n] != INFINITY && (best < 0 || node_score[n] > node_score[best])) best = n;
        node_score[best] = INFINITY;
    }
    for (int64_t e = 0; e < num_experts; ++e)
        if (node_score[routing.node_of_expert[e]] != INFINITY) selection[e] = -INFINITY;
}

// The FasterMoE topology gate over this rank's tokens: at most max_offnode assignments may leave the
// node, the highest-scoring ones; the others move to the best on-node expert the token has not taken.
int64_t limit_offnode(
    GateState s, const float* score, const GateRouting& routing, int64_t T, int64_t E, int k) {
    int64_t n = 0;
    for (int64_t slot = 0; slot < T * k; ++slot)
        if (routing.node_of_expert[s.expert[slot]] != routing.home_node) s.order[n++] = slot;
    if (n <= routing.max_offnode) return 0;
    auto slot_score = [&](int64_t slot) { return score[(slot / k) * E + s.expert[slot]]; };
    std::sort(s.order, s.order + n, [&](int64_t a, int64_t b) {
        const float sa = slot_score(a), sb = slot_score(b);
        if (sa != sb) return sa > sb;
        return a < b;
    });
    int64_t redirected = 0;
    for (int64_t i = routing.max_offnode; i < n; ++i) {
        const int64_t slot = s.order[i], t = slot / k;
        const float* sel = s.selection + t * E;
        const int32_t* taken = s.expert + t * k;
        int32_t best = -1;
        for (int64_t e = 0; e < E; ++e) {
            if (routing.node_of_expert[e] != routing.home_node || sel[e] == -INFINITY) continue;
            if (std::find(taken, taken + k, static_cast<int32_t>(e)) != taken + k) continue;
            if (best < 0 || sel[e] > sel[best]) best = static_cast<int32_t>(e);
        }
        if (best < 0) continue;  // no on-node expert left for this token: it stays off-node
        s.expert[slot] = best;
        ++redirected;
    }
    return redirected;
}

}  // namespace

void gate_forward(GateState s, GatePartialSums* sums, const GateInputs& in, const LayerConfig& config) {
    const int64_t T = in.num_tokens, E = config.num_experts, d = config.d_model;
    const int k = config.top_k;
    const bool noisy = config.gate == GateKind::noisy_topk;
    const GateRouting& routing = in.routing;

    gemm(false, false, T, E, d, 1.0f, in.x, in.router_w, 0.0f, s.logits);  // [T,E]
    if (noisy) gemm(false, false, T, E, d, 1.0f, in.x, in.router_noise_w, 0.0f, s.noise_logits);

    std::fill(sums->prob_sum, sums->prob_sum + E, 0.0);
    std::fill(sums->requested, sums->requested + E, 0);
    sums->z_sum = 0;
    sums->num_skipped = 0;
    sums->num_redirected = 0;
    const uint64_t noise_stream = rng_per_step(kStreamGateNoise, in.step);
    const uint64_t coin_stream = rng_per_step(kStreamGshardUniform, in.step);

    // Pass 1, per token: probabilities, scores, top-k selection under the routing constraints.
    for (int64_t t = 0; t < T; ++t) {
        const int64_t global_t = in.first_token + t;
        float* logit = s.logits + t * E;
        float* prob = s.probs + t * E;
        float max_logit = -INFINITY;
        for (int64_t e = 0; e < E; ++e) {
            logit[e] += in.router_bias[e];
            max_logit = std::max(max_logit, logit[e]);
        }
        float denom = 0;
        for (int64_t e = 0; e < E; ++e) {
            prob[e] = std::exp(logit[e] - max_logit);
            denom += prob[e];
        }
        const float inv = 1.0f / denom;
        for (int64_t e = 0; e < E; ++e) {
            prob[e] *= inv;
            sums->prob_sum[e] += prob[e];
        }
        s.lse[t] = max_logit + std::log(denom);
        sums->z_sum += static_cast<double>(s.lse[t]) * s.lse[t];

        const float* score = prob;
        if (noisy) {
            float* h = s.scores + t * E;
            for (int64_t e = 0; e < E; ++e) {
                const float eps = rng_normal(in.seed, noise_stream, static_cast<uint64_t>(global_t * E + e));
                h[e] = logit[e] + eps * softplus(s.noise_logits[t * E + e]);
            }
            score = h;
        }
        float* sel = s.selection + t * E;
        for (int64_t e = 0; e < E; ++e)
            sel[e] = score[e] + (routing.selection_bias ? routing.selection_bias[e] : 0.0f);
        if (routing.node_limit > 0 && routing.node_limit < routing.num_nodes)
            limit_to_nodes(sel, routing, E, k, s.node_scratch);
        select_top_k(s.expert + t * k, sel, E, k);
    }

    // Pass 2, over the rank's tokens together: the topology gate.
    if (routing.max_offnode >= 0)
        sums->num_redirected = limit_offnode(s, noisy ? s.scores : s.probs, routing, T, E, k);

    // Pass 3, per token: gate weights, gshard's coin, counts.
    for (int64_t t = 0; t < T; ++t) {
        const int64_t global_t = in.first_token + t;
        const float* prob = s.probs + t * E;
        int32_t* ex = s.expert + t * k;
        float* w = s.weight + t * k;
        uint8_t* routed = s.routed + t * k;
        for (int j = 0; j < k; ++j) routed[j] = 1;

        switch (config.gate) {
            case GateKind::topk:
            case GateKind::switch_top1: {
                float sum = 0;
                for (int j = 0; j < k; ++j) sum += (w[j] = prob[ex[j]]);
                if (config.renormalize && config.gate == GateKind::topk)
                    for (int j = 0; j < k; ++j) w[j] /= sum;
                break;
            }
            case GateKind::gshard: {
                const float sum = prob[ex[0]] + prob[ex[1]];
                w[0] = prob[ex[0]] / sum;
                w[1] = prob[ex[1]] / sum;
                const float coin = rng_uniform(in.seed, coin_stream, static_cast<uint64_t>(global_t));
                if (!(coin < 2.0f * w[1])) {
                    routed[1] = 0;
                    ++sums->num_skipped;
                }
                break;
            }
            case GateKind::noisy_topk: {
                const float* h = s.scores + t * E;
                float top = -INFINITY;  // the largest kept score (not always slot 0 once rerouted)
                for (int j = 0; j < k; ++j) top = std::max(top, h[ex[j]]);
                float sum = 0;
                for (int j = 0; j < k; ++j) sum += (w[j] = std::exp(h[ex[j]] - top));
                for (int j = 0; j < k; ++j) w[j] /= sum;
                break;
            }
        }
        for (int j = 0; j < k; ++j)
            if (routed[j]) ++sums->requested[ex[j]];
    }
}

void router_bias_update(float* selection_bias,
                        const int64_t* expert_load,
                        int64_t num_experts,
                        double gamma) {
    const int64_t E = num_experts;
    int64_t total = 0;
    for (int64_t e = 0; e < E; ++e) total += expert_load[e];
    const float step = static_cast<float>(gamma);
    for (int64_t e = 0; e < E; ++e) {
        const int64_t scaled = expert_load[e] * E;  // compare load with total / E exactly, in integers
        if (scaled > total) selection_bias[e] -= step;
        if (scaled < total) selection_bias[e] += step;
    }
}

void gate_backward(float* dx,
                   float* d_router_w,
                   float* d_router_noise_w,
                   float* dlogits,
                   float* dnoise,
                   const float* dweight,
                   GateState s,
                   const GateInputs& in,
                   const GateLossGrads& loss,
                   const LayerConfig& config) {
    const int64_t T = in.num_tokens, E = config.num_experts, d = config.d_model;
    const int k = config.top_k;
    const bool noisy = config.gate == GateKind::noisy_topk;
    const bool renormalized =
        config.gate == GateKind::gshard || (config.gate == GateKind::topk && config.renormalize);
    const uint64_t noise_stream = rng_per_step(kStreamGateNoise, in.step);

    for (int64_t t = 0; t < T; ++t) {
        const float* prob = s.probs + t * E;
        const int32_t* ex = s.expert + t * k;
        const float* w = s.weight + t * k;
        const float* dw = dweight + t * k;
        float* dl = dlogits + t * E;
        const float z_term = static_cast<float>(loss.z_scale) * s.lse[t];  // d(z)/dlogit = z_scale·lse·p
        if (noisy) {
            // Softmax over all logits sees only the aux term; the weights are a softmax over the kept
            // scores h = logits + eps·softplus(noise_logits), so dh flows to logits and noise logits.
            float* dn = dnoise + t * E;
            float dot = 0, c = 0;
            for (int64_t e = 0; e < E; ++e) dot += prob[e] * static_cast<float>(loss.aux_dprob[e]);
            for (int64_t e = 0; e < E; ++e) {
                dl[e] = prob[e] * (static_cast<float>(loss.aux_dprob[e]) - dot + z_term);
                dn[e] = 0;
            }
            for (int j = 0; j < k; ++j) c += w[j] * dw[j];
            const int64_t global_t = in.first_token + t;
            for (int j = 0; j < k; ++j) {
                const int64_t e = ex[j];
                const float dh = w[j] * (dw[j] - c);
                const float eps = rng_normal(in.seed, noise_stream, static_cast<uint64_t>(global_t * E + e));
                dl[e] += dh;
                dn[e] = dh * eps * sigmoid(s.noise_logits[t * E + e]);
            }
            continue;
        }
        float* dp = dnoise + t * E;  // scratch row: dL/dp
        for (int64_t e = 0; e < E; ++e) dp[e] = static_cast<float>(loss.aux_dprob[e]);
        if (renormalized) {
            // w_j = p_j / S with S = Σ_j p_j over the selected slots.
            float sum = 0, c = 0;
            for (int j = 0; j < k; ++j) {
                sum += prob[ex[j]];
                c += dw[j] * w[j];
            }
            for (int j = 0; j < k; ++j) dp[ex[j]] += (dw[j] - c) / sum;
        } else {
            for (int j = 0; j < k; ++j) dp[ex[j]] += dw[j];
        }
        float dot = 0;
        for (int64_t e = 0; e < E; ++e) dot += prob[e] * dp[e];
        for (int64_t e = 0; e < E; ++e) dl[e] = prob[e] * (dp[e] - dot + z_term);
    }
    gemm(true, false, d, E, T, 1.0f, in.x, dlogits, 1.0f, d_router_w);  // dWr += xᵀ·dlogits   [d,E]
    gemm(false, true, T, d, E, 1.0f, dlogits, in.router_w, 1.0f, dx);   // dx += dlogits·Wrᵀ   [T,d]
    if (noisy) {
        gemm(true, false, d, E, T, 1.0f, in.x, dnoise, 1.0f, d_router_noise_w);
        gemm(false, true, T, d, E, 1.0f, dnoise, in.router_noise_w, 1.0f, dx);
    }
}

}  // namespace expar
