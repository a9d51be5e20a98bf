// Progressive filling with weights and shares: raise a common level λ; flow f runs at weight_f·λ and
// loads link l with share_fl·weight_f·λ. The link whose capacity runs out at the lowest λ freezes its
// flows at that rate; repeat until every flow is frozen. The heap holds lower bounds of each link's
// saturation level (levels only rise as flows freeze), so a popped entry is current or re-pushed.
#include "flow_sim.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "check.h"

namespace expar {

FlowSim::FlowSim(const std::vector<NetLink>& links) {
    capacity_.reserve(links.size());
    for (const NetLink& link : links) capacity_.push_back(link.capacity_Bps);
    const size_t L = links.size();
    link_bytes_.assign(L, 0.0);
    link_left_.assign(L, 0.0);
    link_demand_.assign(L, 0.0);
    link_unfrozen_.assign(L, 0);
    link_first_.assign(L + 1, 0);
}

void FlowSim::start(int64_t id, double bytes, double weight, const FlowHop* hops, int num_hops) {
    EXPAR_ASSERT(bytes > 0 && weight > 0 && num_hops > 0);
    id_.push_back(id);
    remaining_.push_back(bytes);
    bytes_.push_back(bytes);
    rate_.push_back(0);
    weight_.push_back(weight);
    hop_begin_.push_back(static_cast<int64_t>(hops_.size()));
    num_hops_.push_back(num_hops);
    for (int h = 0; h < num_hops; ++h) {
        EXPAR_ASSERT(hops[h].link >= 0 && hops[h].link < static_cast<int32_t>(capacity_.size()));
        hops_.push_back(hops[h]);
    }
    live_hops_ += num_hops;
    peak_active_ = std::max(peak_active_, num_active());
    rates_valid_ = false;
}

double FlowSim::next_completion_s() {
    if (!rates_valid_) compute_rates();
    return next_finish_s_;
}

double FlowSim::rate_of(int64_t id) {
    if (!rates_valid_) compute_rates();
    for (size_t f = 0; f < id_.size(); ++f)
        if (id_[f] == id) return rate_[f];
    return 0;
}

void FlowSim::advance_to(double t, std::vector<FlowDone>& done) {
    if (!rates_valid_) compute_rates();
    if (t <= now_s_) return;
    const double dt = t - now_s_;
    size_t f = 0;
    while (f < id_.size()) {
        const double finish = now_s_ + remaining_[f] / rate_[f];
        // Rounding: a flow due within a relative 1e-12 of t is done at t.
        if (finish <= t + 1e-12 * t) {
            done.push_back(FlowDone{id_[f], std::min(finish, t)});
            const FlowHop* hop = hops_.data() + hop_begin_[f];
            for (int h = 0; h < num_hops_[f]; ++h) link_bytes_[hop[h].link] += bytes_[f] * hop[h].share;
            live_hops_ -= num_hops_[f];
            const size_t last = id_.size() - 1;
            id_[f] = id_[last];
            remaining_[f] = remaining_[last];
            bytes_[f] = bytes_[last];
            rate_[f] = rate_[last];
            weight_[f] = weight_[last];
            hop_begin_[f] = hop_begin_[last];
            num_hops_[f] = num_hops_[last];
            id_.pop_back();
            remaining_.pop_back();
            bytes_.pop_back();
            rate_.pop_back();
            weight_.pop_back();
            hop_begin_.pop_back();
            num_hops_.pop_back();
            rates_valid_ = false;
            continue;
        }
        remaining_[f] -= rate_[f] * dt;
        ++f;
    }
    now_s_ = t;
    if (rates_valid_) {
        next_finish_s_ = std::numeric_limits<double>::infinity();
        for (size_t g = 0; g < id_.size(); ++g)
            next_finish_s_ = std::min(next_finish_s_, now_s_ + remaining_[g] / rate_[g]);
    }
    if (hops_.size() > 1024 && static_cast<int64_t>(hops_.size()) > 4 * live_hops_) compact_hops();
}

void FlowSim::compact_hops() {
    std::vector<FlowHop> packed;
    packed.reserve(static_cast<size_t>(live_hops_));
    for (size_t f = 0; f < id_.size(); ++f) {
        const int64_t begin = static_cast<int64_t>(packed.size());
        packed.insert(packed.end(), hops_.begin() + hop_begin_[f],
                      hops_.begin() + hop_begin_[f] + num_hops_[f]);
        hop_begin_[f] = begin;
    }
    hops_.swap(packed);
}

void FlowSim::compute_rates() {
    ++num_rate_computations_;
    rates_valid_ = true;
    next_finish_s_ = std::numeric_limits<double>::infinity();
    const int64_t F = num_active();
    if (F == 0) return;
    // Link -> (flow) adjacency by counting sort over the touched links.
    touched_.clear();
    for (int64_t f = 0; f < F; ++f) {
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) {
            const int32_t l = hop[h].link;
            if (link_unfrozen_[l] == 0) {
                touched_.push_back(l);
                link_left_[l] = capacity_[l];
                link_demand_[l] = 0;
            }
            ++link_unfrozen_[l];
            link_demand_[l] += hop[h].share * weight_[f];
        }
    }
    int32_t offset = 0;
    for (int32_t l : touched_) {
        link_first_[l] = offset;
        offset += link_unfrozen_[l];
    }
    adjacency_.resize(static_cast<size_t>(offset));
    std::vector<int32_t>& cursor = link_first_;  // advanced while filling, rewound below
    for (int64_t f = 0; f < F; ++f) {
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) adjacency_[cursor[hop[h].link]++] = static_cast<int32_t>(f);
    }
    for (int32_t l : touched_) cursor[l] -= link_unfrozen_[l];

    frozen_.assign(static_cast<size_t>(F), 0);
    heap_.clear();
    auto level = [&](int32_t l) { return std::max(0.0, link_left_[l]) / link_demand_[l]; };
    for (int32_t l : touched_) heap_.emplace_back(level(l), l);
    auto later = std::greater<std::pair<double, int32_t>>();
    std::make_heap(heap_.begin(), heap_.end(), later);
    while (!heap_.empty()) {
        std::pop_heap(heap_.begin(), heap_.end(), later);
        const auto [key, l] = heap_.back();
        heap_.pop_back();
        if (link_unfrozen_[l] == 0) continue;
        const double lambda = level(l);
        if (lambda > key * (1 + 1e-12)) {  // stale lower bound: re-queue at the current level
            heap_.emplace_back(lambda, l);
            std::push_heap(heap_.begin(), heap_.end(), later);
            continue;
        }
        // Freeze every unfrozen flow through l at weight·λ. (λ > 0 in exact arithmetic; rounding in
        // link_left_ must not stall a flow.)
        const double rate_unit = std::max(lambda, capacity_[l] * 1e-15);
        for (int32_t i = link_first_[l]; link_unfrozen_[l] > 0; ++i) {
            const int32_t f = adjacency_[i];
            if (frozen_[f]) continue;
            frozen_[f] = 1;
            rate_[f] = weight_[f] * rate_unit;
            const FlowHop* hop = hops_.data() + hop_begin_[f];
            for (int h = 0; h < num_hops_[f]; ++h) {
                const int32_t m = hop[h].link;
                link_left_[m] -= hop[h].share * rate_[f];
                link_demand_[m] -= hop[h].share * weight_[f];
                --link_unfrozen_[m];
            }
        }
    }
    for (int64_t f = 0; f < F; ++f) {
        EXPAR_ASSERT(frozen_[f] && rate_[f] > 0);
        next_finish_s_ = std::min(next_finish_s_, now_s_ + remaining_[f] / rate_[f]);
    }
}

}  // namespace expar
