#include "gate.h"

#include <algorithm>
#include <cmath>

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

}  // namespace

void gate_forward(GateState s, GatePartialSums* sums, const GateInputs& in, const LayerConfig& config) {
    const int64_t T = in.num_tokens, E = config.num_experts, d = config.d_model;
    const int k = config.top_k;
    const bool noisy = config.gate == GateKind::noisy_topk;

    gemm(false, false, T, E, d, 1.0f, in.x, in.router_w, 0.0f, s.logits);  // [T,E]
    if (noisy) gemm(false, false, T, E, d, 1.0f, in.x, in.router_noise_w, 0.0f, s.noise_logits);

    std::fill(sums->prob_sum, sums->prob_sum + E, 0.0);
    std::fill(sums->requested, sums->requested + E, 0);
    sums->z_sum = 0;
    sums->num_skipped = 0;
    const uint64_t noise_stream = rng_per_step(kStreamGateNoise, in.step);
    const uint64_t coin_stream = rng_per_step(kStreamGshardUniform, in.step);

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
        int32_t* ex = s.expert + t * k;
        float* w = s.weight + t * k;
        uint8_t* routed = s.routed + t * k;
        select_top_k(ex, score, E, k);
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
                const float top = h[ex[0]];  // the largest kept score
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
