#include "shadow_policy.h"

#include <algorithm>
#include <cmath>

#include "check.h"

namespace expar {

int shadow_tree_segments(double bytes) {
    constexpr double kSegmentBytes = 1 << 20;
    return static_cast<int>(std::clamp(std::ceil(bytes / kSegmentBytes), 1.0, 16.0));
}

int shadow_tree_depth(int num_ranks) {
    int depth = 0;
    for (int64_t last = num_ranks - 1; last > 0; last = (last - 1) / 2) ++depth;
    return depth;
}

double pipelined_tree_factor(int num_ranks, double bytes) {
    if (num_ranks <= 1) return 0.0;
    const int segments = shadow_tree_segments(bytes);
    const double fan_out = num_ranks > 2 ? 2.0 : 1.0;
    return fan_out * (segments + shadow_tree_depth(num_ranks) - 1) / segments;
}

ShadowPolicy::ShadowPolicy(int num_ranks, int64_t num_experts, const ShadowCostModel& model)
    : num_ranks_(num_ranks), num_experts_(num_experts), model_(model) {
    EXPAR_ASSERT(num_ranks > 0 && num_experts % num_ranks == 0);
    compute_.resize(num_ranks);
    send_.resize(num_ranks);
    recv_.resize(num_ranks);
    expert_load_.resize(num_experts);
    order_.resize(num_experts);
}

void ShadowPolicy::load_without_shadows(const int64_t* tokens) {
    const int P = num_ranks_;
    const int64_t E = num_experts_, EL = E / P;
    std::fill(compute_.begin(), compute_.end(), 0);
    std::fill(send_.begin(), send_.end(), 0);
    std::fill(recv_.begin(), recv_.end(), 0);
    for (int src = 0; src < P; ++src)
        for (int64_t e = 0; e < E; ++e) {
            const int64_t n = tokens[src * E + e];
            const int owner = static_cast<int>(e / EL);
            compute_[owner] += n;
            if (owner != src) {
                send_[src] += n;
                recv_[owner] += n;
            }
        }
}

void ShadowPolicy::move_to_senders(const int64_t* tokens, int64_t e) {
    const int P = num_ranks_;
    const int64_t E = num_experts_;
    const int owner = static_cast<int>(e / (E / P));
    for (int src = 0; src < P; ++src) {
        const int64_t n = tokens[src * E + e];
        if (src == owner) continue;  // the owner's own tokens stay where they are
        compute_[owner] -= n;
        compute_[src] += n;
        send_[src] -= n;
        recv_[owner] -= n;
    }
}

double ShadowPolicy::latency_s(int num_shadowed) const {
    const ShadowCostModel& m = model_;
    double worst = 0;
    for (int w = 0; w < num_ranks_; ++w) {
        const double compute_s = 3.0 * m.expert_flops_per_token * compute_[w] / m.device_flops_per_s;
        const double traffic = static_cast<double>(std::max(send_[w], recv_[w]));
        const double exchange_s = 4.0 * m.bytes_per_token * traffic / m.network_bytes_per_s;
        worst = std::max(worst, compute_s + exchange_s);
    }
    return worst + 2.0 * num_shadowed * m.collective_factor * m.bytes_per_expert / m.network_bytes_per_s;
}

double ShadowPolicy::predicted_latency_s(const int64_t* tokens, const uint8_t* shadowed) {
    load_without_shadows(tokens);
    int r = 0;
    for (int64_t e = 0; e < num_experts_; ++e)
        if (shadowed[e]) {
            move_to_senders(tokens, e);
            ++r;
        }
    return latency_s(r);
}

int ShadowPolicy::select(uint8_t* shadowed, const int64_t* tokens, int max_shadowed) {
    const int64_t E = num_experts_;
    std::fill(shadowed, shadowed + E, 0);
    load_without_shadows(tokens);
    std::fill(expert_load_.begin(), expert_load_.end(), 0);
    for (int src = 0; src < num_ranks_; ++src)
        for (int64_t e = 0; e < E; ++e) expert_load_[e] += tokens[src * E + e];
    for (int64_t e = 0; e < E; ++e) order_[e] = e;
    // Ties go to the lower index (std::sort, not stable_sort: that one allocates).
    std::sort(order_.begin(), order_.end(), [&](int64_t a, int64_t b) {
        if (expert_load_[a] != expert_load_[b]) return expert_load_[a] > expert_load_[b];
        return a < b;
    });
    double latency = latency_s(0);
    int num_shadowed = 0;
    for (int64_t i = 0; i < E && num_shadowed < max_shadowed; ++i) {
        const int64_t e = order_[i];
        move_to_senders(tokens, e);  // a rejected candidate ends the search, so no undo is needed
        const double candidate = latency_s(num_shadowed + 1);
        if (!(candidate < latency)) break;  // Algorithm 1 stops at the first expert that does not pay
        latency = candidate;
        shadowed[e] = 1;
        ++num_shadowed;
    }
    return num_shadowed;
}

}  // namespace expar
