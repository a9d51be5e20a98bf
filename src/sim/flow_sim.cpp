// Progressive filling with weights and shares: raise a common level λ; flow f runs at weight_f·λ and
// loads link l with share_fl·weight_f·λ. The link whose capacity runs out at the lowest λ freezes its
// flows at that rate; repeat until every flow is frozen. The heap holds lower bounds of each link's
// saturation level (levels only rise as flows freeze), so a popped entry is current or re-pushed.
//
// After changes the solution is resumed instead of redone: the freeze events before a resume point
// happen again, identically, so those flows keep their rates and only the flows frozen from that event
// on (and the started ones) are solved again, on the capacity the others leave (link_used_). Exact up
// to rounding. The resume point is the earliest of
// - the freeze event of each completed flow: an earlier event's link carried no completed flow, and the
//   links completed flows crossed only saturate later without them;
// - the first event at a level λ ≥ λ_lb, where no link a started flow crosses can saturate below λ_lb:
//   before, the old flows loaded link l with at most min(D_l·λ, U_l) (D_l = Σ share·weight, U_l = its
//   final Σ share·rate), the started ones add a_l·λ, so l stays below its capacity c_l while
//   λ < max((c_l − U_l) / a_l, c_l / (D_l + a_l)).
// Under skew most completions are of fast flows frozen late, and a new flow on idle links changes
// nothing below its own level, so most changes re-solve a small part.
#include "flow_sim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

#include "check.h"

namespace expar {

// Up to this many flows to solve, the next link to saturate is found among the flows' bottlenecks (an
// O(flows) scan per freeze; at 4,096 ranks, skewed pairwise re-solves of 32-128 flows were 7% of the step
// in the radix heap).
constexpr size_t kScanFlows = 128;

FlowSim::FlowSim(const std::vector<NetLink>& links) {
    capacity_.reserve(links.size());
    for (const NetLink& link : links) capacity_.push_back(link.capacity_Bps);
    const size_t L = links.size();
    link_bytes_.assign(L, 0.0);
    link_left_.assign(L, 0.0);
    link_demand_.assign(L, 0.0);
    link_used_.assign(L, 0.0);
    link_weight_.assign(L, 0.0);
    link_added_.assign(L, 0.0);
    link_unfrozen_.assign(L, 0);
    link_first_.assign(L + 1, 0);
    link_stamp_.assign(L, -1);
}

void FlowSim::start(int64_t id, double bytes, double weight, const FlowHop* hops, int num_hops) {
    EXPAR_ASSERT(bytes > 0 && weight > 0 && num_hops > 0);
    int32_t f;
    if (free_slots_.empty()) {
        f = static_cast<int32_t>(id_.size());
        id_.push_back(0);
        remaining_.push_back(0);
        updated_s_.push_back(0);
        version_.push_back(0);
        bytes_.push_back(0);
        rate_.push_back(0);
        weight_.push_back(0);
        hop_begin_.push_back(0);
        num_hops_.push_back(0);
        active_pos_.push_back(-1);
        event_begin_.push_back(-1);
    } else {
        f = free_slots_.back();
        free_slots_.pop_back();
    }
    id_[f] = id;
    remaining_[f] = bytes;
    updated_s_[f] = now_s_;
    bytes_[f] = bytes;
    rate_[f] = 0;
    weight_[f] = weight;
    hop_begin_[f] = static_cast<int64_t>(hops_.size());
    num_hops_[f] = num_hops;
    event_begin_[f] = -1;
    for (int h = 0; h < num_hops; ++h) {
        EXPAR_ASSERT(hops[h].link >= 0 && hops[h].link < static_cast<int32_t>(capacity_.size()));
        hops_.push_back(hops[h]);
    }
    live_hops_ += num_hops;
    active_pos_[f] = static_cast<int32_t>(active_.size());
    active_.push_back(f);
    peak_active_ = std::max(peak_active_, num_active());
    started_.push_back(f);
    rates_valid_ = false;
}

double FlowSim::next_completion_s() {
    if (!rates_valid_) compute_rates();
    const Finish* next = next_finish();
    return next ? next->time_s : std::numeric_limits<double>::infinity();
}

const FlowSim::Finish* FlowSim::next_finish() {
    while (!finish_heap_.empty() && finish_heap_.front().version != version_[finish_heap_.front().slot]) {
        std::pop_heap(finish_heap_.begin(), finish_heap_.end(), std::greater<Finish>());
        finish_heap_.pop_back();
    }
    while (sorted_head_ < finish_sorted_.size() &&
           finish_sorted_[sorted_head_].version != version_[finish_sorted_[sorted_head_].slot])
        ++sorted_head_;
    const Finish* sorted = sorted_head_ < finish_sorted_.size() ? &finish_sorted_[sorted_head_] : nullptr;
    if (finish_heap_.empty()) return sorted;
    return sorted && finish_heap_.front() > *sorted ? sorted : &finish_heap_.front();
}

void FlowSim::pop_finish(const Finish* next) {
    if (next == finish_sorted_.data() + sorted_head_) {
        ++sorted_head_;
        return;
    }
    std::pop_heap(finish_heap_.begin(), finish_heap_.end(), std::greater<Finish>());
    finish_heap_.pop_back();
}

double FlowSim::rate_of(int64_t id) {
    if (!rates_valid_) compute_rates();
    for (int32_t f : active_)
        if (id_[f] == id) return rate_[f];
    return 0;
}

void FlowSim::advance_to(double t, std::vector<FlowDone>& done) {
    if (!rates_valid_) compute_rates();
    // Never back in time, but always pop what is due: a flow whose remaining time is below the rounding of
    // now (a huge now, a tiny message) finishes at now, and returning early here would spin forever.
    t = std::max(t, now_s_);
    for (const Finish* next = next_finish(); next && next->time_s <= t + 1e-12 * t; next = next_finish()) {
        // Rounding: a flow due within a relative 1e-12 of t is done at t.
        const int32_t f = next->slot;
        done.push_back(FlowDone{id_[f], std::min(next->time_s, t)});
        pop_finish(next);
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) link_bytes_[hop[h].link] += bytes_[f] * hop[h].share;
        const int32_t last = active_.back(), i = active_pos_[f];
        active_[i] = last;
        active_pos_[last] = i;
        active_.pop_back();
        active_pos_[f] = -1;
        ++version_[f];
        completed_.push_back(f);  // released once the next solution has taken its rate back
        rates_valid_ = false;
    }
    now_s_ = t;
}

bool FlowSim::sort_few_times() {
    constexpr int kMaxTimes = 8;
    double times[kMaxTimes];
    int64_t count[kMaxTimes] = {};
    int num = 0;
    auto index = [&](double t) {
        int k = 0;
        while (k < num && times[k] != t) ++k;
        return k;
    };
    for (const Finish& e : finish_sorted_) {
        const int k = index(e.time_s);
        if (k == num) {
            if (num == kMaxTimes) return false;
            times[num++] = e.time_s;
        }
        ++count[k];
    }
    int64_t first[kMaxTimes];  // each time's first place: after the entries of the earlier times
    for (int k = 0; k < num; ++k) {
        first[k] = 0;
        for (int j = 0; j < num; ++j)
            if (times[j] < times[k]) first[k] += count[j];
    }
    finish_heap_.resize(finish_sorted_.size());  // scratch; stable, so slots stay in order per time
    for (const Finish& e : finish_sorted_) finish_heap_[first[index(e.time_s)]++] = e;
    finish_sorted_.swap(finish_heap_);
    finish_heap_.clear();
    return true;
}

void FlowSim::LevelQueue::clear() {
    for (auto& b : bucket) b.clear();
    last = 0;
    size = 0;
}

namespace {
uint64_t level_bits(double level) {  // monotone in level for level >= 0 (IEEE 754)
    level = std::max(0.0, level);    // also maps NaN to 0
    uint64_t bits;
    std::memcpy(&bits, &level, sizeof bits);
    return bits;
}
int level_bucket(uint64_t key, uint64_t last) {
    return key == last ? 0 : 64 - __builtin_clzll(key ^ last);
}
}  // namespace

void FlowSim::LevelQueue::push(double level, int32_t link) {
    const uint64_t key = level_bits(level);
    bucket[level_bucket(key, last)].emplace_back(key, link);
    ++size;
}

std::pair<double, int32_t> FlowSim::LevelQueue::pop() {
    if (bucket[0].empty()) {  // the lowest non-empty bucket holds the minimum: spread it below it
        int i = 1;
        while (bucket[i].empty()) ++i;
        uint64_t lowest = bucket[i][0].first;
        for (const auto& e : bucket[i]) lowest = std::min(lowest, e.first);
        last = lowest;
        for (const auto& e : bucket[i]) bucket[level_bucket(e.first, last)].push_back(e);
        bucket[i].clear();
    }
    const auto [key, link] = bucket[0].back();
    bucket[0].pop_back();
    --size;
    double level;
    std::memcpy(&level, &key, sizeof level);
    return {level, link};
}

void FlowSim::release(int32_t slot) {
    live_hops_ -= num_hops_[slot];
    num_hops_[slot] = 0;
    event_begin_[slot] = -1;
    rate_[slot] = 0;
    free_slots_.push_back(slot);
}

void FlowSim::compact_hops() {
    std::vector<FlowHop> packed;
    packed.reserve(static_cast<size_t>(live_hops_));
    for (int32_t f : active_) {
        const int64_t begin = static_cast<int64_t>(packed.size());
        packed.insert(packed.end(), hops_.begin() + hop_begin_[f],
                      hops_.begin() + hop_begin_[f] + num_hops_[f]);
        hop_begin_[f] = begin;
    }
    hops_.swap(packed);
}

void FlowSim::compute_rates() {
    ++num_rate_computations_;
    const int64_t stamp = num_rate_computations_;
    rates_valid_ = true;
    size_t resume = freeze_order_.size();
    for (int32_t f : completed_) {
        EXPAR_ASSERT(event_begin_[f] >= 0);
        resume = std::min(resume, static_cast<size_t>(event_begin_[f]));
    }
    if (!started_.empty() && resume > 0) {
        touched_.clear();
        for (int32_t f : started_) {
            const FlowHop* hop = hops_.data() + hop_begin_[f];
            for (int h = 0; h < num_hops_[f]; ++h) {
                if (link_added_[hop[h].link] == 0) touched_.push_back(hop[h].link);
                link_added_[hop[h].link] += hop[h].share * weight_[f];
            }
        }
        double level_bound = std::numeric_limits<double>::infinity();
        for (int32_t l : touched_) {
            const double a = link_added_[l], c = capacity_[l];
            level_bound = std::min(level_bound, std::max((c - link_used_[l]) / a, c / (link_weight_[l] + a)));
            link_added_[l] = 0;
        }
        // Levels rise along freeze_order_ up to rounding; the margin keeps the resume point early.
        const size_t p =
            static_cast<size_t>(std::lower_bound(freeze_level_.begin(), freeze_level_.begin() + resume,
                                                 level_bound * (1 - 1e-9)) -
                                freeze_level_.begin());
        if (p < resume) resume = static_cast<size_t>(event_begin_[freeze_order_[p]]);
    }
    for (int32_t f : started_) {
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) link_weight_[hop[h].link] += hop[h].share * weight_[f];
    }
    for (int32_t f : completed_) {
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) link_weight_[hop[h].link] -= hop[h].share * weight_[f];
    }
    const bool partial = resume > 0;
    if (partial) ++num_partial_computations_;
    resolve_.clear();
    for (size_t i = resume; i < freeze_order_.size(); ++i)
        if (active_pos_[freeze_order_[i]] >= 0) resolve_.push_back(freeze_order_[i]);
    resolve_.insert(resolve_.end(), started_.begin(), started_.end());
    freeze_order_.resize(resume);
    freeze_level_.resize(resume);

    // Capacity left to the re-solved flows, their demand, and the link -> (flow) adjacency by counting
    // sort over the touched links.
    touched_.clear();
    auto touch = [&](int32_t l) {
        if (link_stamp_[l] == stamp) return;
        link_stamp_[l] = stamp;
        touched_.push_back(l);
        if (!partial) link_used_[l] = 0;
        link_left_[l] = capacity_[l] - link_used_[l];
        link_demand_[l] = 0;
        link_unfrozen_[l] = 0;
    };
    // Completed flows hand their rate back (a full solution resets the links they touched).
    for (int32_t f : completed_) {
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) {
            touch(hop[h].link);
            if (!partial) continue;
            link_left_[hop[h].link] += hop[h].share * rate_[f];
            link_used_[hop[h].link] -= hop[h].share * rate_[f];
        }
    }
    for (int32_t f : resolve_) {
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) {
            const int32_t l = hop[h].link;
            touch(l);
            if (partial) {
                link_left_[l] += hop[h].share * rate_[f];
                link_used_[l] -= hop[h].share * rate_[f];
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
    for (size_t i = 0; i < resolve_.size(); ++i) {
        const int32_t f = resolve_[i];
        const FlowHop* hop = hops_.data() + hop_begin_[f];
        for (int h = 0; h < num_hops_[f]; ++h) adjacency_[cursor[hop[h].link]++] = static_cast<int32_t>(i);
    }
    for (int32_t l : touched_) cursor[l] -= link_unfrozen_[l];

    frozen_.assign(resolve_.size(), 0);
    auto level = [&](int32_t l) { return std::max(0.0, link_left_[l]) / link_demand_[l]; };
    // Freezes every unfrozen flow through l at weight·λ. (λ > 0 in exact arithmetic; rounding in
    // link_left_ must not stall a flow.)
    auto freeze = [&](int32_t l, double lambda) {
        const double rate_unit = std::max(lambda, capacity_[l] * 1e-15);
        const int32_t event = static_cast<int32_t>(freeze_order_.size());
        for (int32_t i = link_first_[l]; link_unfrozen_[l] > 0; ++i) {
            const int32_t k = adjacency_[i];
            if (frozen_[k]) continue;
            frozen_[k] = 1;
            const int32_t f = resolve_[k];
            const double rate = weight_[f] * rate_unit;
            if (rate != rate_[f]) {  // the bytes moved at the old rate, then a new finish time
                remaining_[f] -= rate_[f] * (now_s_ - updated_s_[f]);
                updated_s_[f] = now_s_;
                rate_[f] = rate;
                ++version_[f];
                if (partial) {
                    finish_heap_.push_back(Finish{now_s_ + remaining_[f] / rate, f, version_[f]});
                    std::push_heap(finish_heap_.begin(), finish_heap_.end(), std::greater<Finish>());
                }
            }
            event_begin_[f] = event;
            freeze_order_.push_back(f);
            freeze_level_.push_back(rate_unit);
            const FlowHop* hop = hops_.data() + hop_begin_[f];
            for (int h = 0; h < num_hops_[f]; ++h) {
                const int32_t m = hop[h].link;
                link_left_[m] -= hop[h].share * rate_[f];
                link_used_[m] += hop[h].share * rate_[f];
                link_demand_[m] -= hop[h].share * weight_[f];
                --link_unfrozen_[m];
            }
        }
    };
    if (resolve_.size() <= kScanFlows) {
        // Few flows (most resumed solutions): the next link to saturate is the lowest of the flows'
        // bottlenecks, (level, link) ordered as the heap would pop them; cheaper than the heap. A flow's
        // bottleneck changes only when a freeze changed one of its links, i.e. when it shares a link with
        // a frozen flow (under skew re-solved flows rarely share one): only those flows are redone.
        auto bottleneck = [&](size_t k) {
            const int32_t f = resolve_[k];
            const FlowHop* hop = hops_.data() + hop_begin_[f];
            int32_t best = -1;
            double best_level = 0;
            for (int h = 0; h < num_hops_[f]; ++h) {
                const int32_t l = hop[h].link;
                const double lambda = level(l);
                if (best < 0 || lambda < best_level || (lambda == best_level && l < best)) {
                    best = l;
                    best_level = lambda;
                }
            }
            bottleneck_[k] = Bottleneck{best_level, best};
        };
        bottleneck_.resize(resolve_.size());
        for (size_t k = 0; k < resolve_.size(); ++k) bottleneck(k);
        for (size_t num_frozen = 0; num_frozen < resolve_.size();) {
            int32_t best = -1;
            double best_level = 0;
            for (size_t k = 0; k < resolve_.size(); ++k) {
                if (frozen_[k]) continue;
                const auto [lambda, l] = bottleneck_[k];
                if (best < 0 || lambda < best_level || (lambda == best_level && l < best)) {
                    best = l;
                    best_level = lambda;
                }
            }
            const size_t before = freeze_order_.size();
            freeze(best, best_level);
            num_frozen += freeze_order_.size() - before;
            // The unfrozen flows that cross a link a frozen flow crossed: their bottleneck may have risen.
            for (size_t i = before; i < freeze_order_.size(); ++i) {
                const int32_t f = freeze_order_[i];
                const FlowHop* hop = hops_.data() + hop_begin_[f];
                for (int h = 0; h < num_hops_[f]; ++h) {
                    const int32_t m = hop[h].link;
                    for (int32_t j = link_first_[m], found = 0; found < link_unfrozen_[m]; ++j) {
                        const int32_t k = adjacency_[j];
                        if (frozen_[k]) continue;
                        ++found;
                        bottleneck(static_cast<size_t>(k));
                    }
                }
            }
        }
    } else {
        queue_.clear();
        for (int32_t l : touched_)
            if (link_unfrozen_[l] > 0) queue_.push(level(l), l);
        // Done once every re-solved flow is frozen: the links left in the queue carry none.
        const size_t all_frozen = freeze_order_.size() + resolve_.size();
        while (freeze_order_.size() < all_frozen) {
            const auto [key, l] = queue_.pop();
            if (link_unfrozen_[l] == 0) continue;
            const double lambda = level(l);
            if (lambda > key * (1 + 1e-12)) {  // stale lower bound: re-queue at the current level
                queue_.push(lambda, l);
                continue;
            }
            freeze(l, lambda);
        }
    }
    for (size_t k = 0; k < resolve_.size(); ++k) EXPAR_ASSERT(frozen_[k] && rate_[resolve_[k]] > 0);
    if (!partial || finish_heap_.size() + finish_sorted_.size() - sorted_head_ > 2 * active_.size() + 1024) {
        // Rebuild, no stale entries, in O(F). Listed in slot order when most slots are active: under
        // uniform traffic the finish times are then in order already, or take a few values that a
        // counting sort puts in order, and serve as a sorted run (a 260k-entry heap missed cache at
        // every level of every pop); otherwise a heap.
        finish_heap_.clear();
        finish_sorted_.clear();
        sorted_head_ = 0;
        auto add = [&](int32_t f) {
            finish_sorted_.push_back(Finish{updated_s_[f] + remaining_[f] / rate_[f], f, version_[f]});
        };
        const bool slot_order = 2 * active_.size() > active_pos_.size();
        if (slot_order) {
            for (int32_t f = 0; f < static_cast<int32_t>(active_pos_.size()); ++f)
                if (active_pos_[f] >= 0) add(f);
        } else {
            for (int32_t f : active_) add(f);
        }
        if (!std::is_sorted(finish_sorted_.begin(), finish_sorted_.end(),
                            [](const Finish& a, const Finish& b) { return b > a; }) &&
            !(slot_order && sort_few_times())) {
            finish_heap_.swap(finish_sorted_);
            std::make_heap(finish_heap_.begin(), finish_heap_.end(), std::greater<Finish>());
        }
    }
    for (int32_t f : completed_) release(f);
    completed_.clear();
    started_.clear();
    if (hops_.size() > 1024 && static_cast<int64_t>(hops_.size()) > 4 * live_hops_) compact_hops();
}

}  // namespace expar
