// Test-only twin of FlowSim (src/sim/flow_sim.h): weighted max-min fair rates by textbook progressive
// filling, recomputed from scratch with plain loops, and the finish times of flows that start at given
// times, stepped from event to event. Owns nothing; shares only the FlowHop type with the production code.
#pragma once

#include <algorithm>
#include <limits>
#include <vector>

#include "flow_sim.h"

namespace expar::test {

struct RefFlow {
    double weight = 1;              // runs at weight × the level of its bottleneck
    std::vector<FlowHop> hops;      // loads hop.link with hop.share × its rate
    double bytes = 0, start_s = 0;  // for flow_finish_times_ref only
};

// Rates [bytes/s] of `flows`, all active together. Every flow crosses at least one link, as
// FlowSim::start requires (a flow on no link would have no finite max-min rate).
inline std::vector<double> max_min_rates_ref(const std::vector<double>& capacity,
                                             const std::vector<RefFlow>& flows) {
    const size_t L = capacity.size(), F = flows.size();
    std::vector<double> rate(F, 0), left = capacity;
    std::vector<bool> frozen(F, false);
    for (size_t num_frozen = 0; num_frozen < F;) {
        // The bottleneck: the link whose remaining capacity runs out at the lowest common level.
        std::vector<double> demand(L, 0);
        for (size_t f = 0; f < F; ++f)
            if (!frozen[f])
                for (const FlowHop& hop : flows[f].hops) demand[hop.link] += hop.share * flows[f].weight;
        int bottleneck = -1;
        double level = std::numeric_limits<double>::infinity();
        for (size_t l = 0; l < L; ++l)
            if (demand[l] > 0 && std::max(0.0, left[l]) / demand[l] < level) {
                level = std::max(0.0, left[l]) / demand[l];
                bottleneck = static_cast<int>(l);
            }
        for (size_t f = 0; f < F; ++f) {
            if (frozen[f]) continue;
            const auto& hops = flows[f].hops;
            if (std::none_of(hops.begin(), hops.end(),
                             [&](const FlowHop& h) { return h.link == bottleneck; }))
                continue;
            frozen[f] = true;
            ++num_frozen;
            rate[f] = flows[f].weight * level;
            for (const FlowHop& hop : hops) left[hop.link] -= hop.share * rate[f];
        }
    }
    return rate;
}

// Finish time of every flow of `bytes` starting at `start_s`: between two events (a start, a finish)
// the rates are constant, the max-min rates of the flows active then. Flows due within a relative 1e-12
// of an event finish at it, as FlowSim::advance_to rounds, so that near-ties make no extra event.
inline std::vector<double> flow_finish_times_ref(const std::vector<double>& capacity,
                                                 const std::vector<RefFlow>& flows) {
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<double> finish(flows.size(), inf), remaining(flows.size());
    std::vector<size_t> active;
    std::vector<bool> started(flows.size(), false);
    double now = 0;
    for (;;) {
        std::vector<RefFlow> running;
        for (size_t f : active) running.push_back(flows[f]);
        const std::vector<double> rate = max_min_rates_ref(capacity, running);
        double next = inf;
        for (size_t f = 0; f < flows.size(); ++f)
            if (!started[f]) next = std::min(next, flows[f].start_s);
        for (size_t i = 0; i < active.size(); ++i)
            next = std::min(next, now + remaining[active[i]] / rate[i]);
        if (next == inf) return finish;
        std::vector<size_t> still;
        for (size_t i = 0; i < active.size(); ++i) {
            const size_t f = active[i];
            const double due = now + remaining[f] / rate[i];
            if (due <= next + 1e-12 * next) {
                finish[f] = std::min(due, next);
            } else {
                remaining[f] -= rate[i] * (next - now);
                still.push_back(f);
            }
        }
        active.swap(still);
        now = next;
        for (size_t f = 0; f < flows.size(); ++f)
            if (!started[f] && flows[f].start_s <= now) {
                started[f] = true;
                remaining[f] = flows[f].bytes;
                active.push_back(f);
            }
    }
}

}  // namespace expar::test
