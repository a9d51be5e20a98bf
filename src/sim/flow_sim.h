// Flow-level network simulation with weighted max-min fair sharing (docs/simulator.md "Flows"):
// active flows cross links, each at a share of its rate; rates are recomputed by progressive filling
// whenever the set of active flows changes. Owns the active flows, their progress and the per-link
// byte counts; knows nothing of tasks, ranks or latency (the executor in task_graph.h adds those).
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

#include "network.h"

namespace expar {

// One link of a flow's route. share = the fraction of the flow's rate that crosses this link: 1 for a
// single message; for a bundle of messages (task_graph.h), the fraction of its bytes on this link.
struct FlowHop {
    int32_t link;
    float share;
};

struct FlowDone {
    int64_t id;       // as given to start()
    double finish_s;  // exact time the last byte left (may precede the time advance_to reached)
};

class FlowSim {
   public:
    explicit FlowSim(const std::vector<NetLink>& links);

    // Starts a flow of `bytes` (> 0) at now_s(). weight = how many equal member flows it stands for:
    // under max-min it gets weight × the fair share of one flow at its bottleneck.
    void start(int64_t id, double bytes, double weight, const FlowHop* hops, int num_hops);

    // Time the next active flow finishes at the current rates (+inf when none is active).
    double next_completion_s();

    // Moves time forward to t, every flow at its current rate. Flows that finish by t are reported in
    // `done` (appended) with their own finish times, and their bandwidth goes back to the others only
    // from t on: advancing straight to next_completion_s() is exact; advancing further batches rate
    // updates (task_graph.h's rate_window) at the cost of leaving the freed bandwidth idle until t.
    void advance_to(double t, std::vector<FlowDone>& done);

    double now_s() const { return now_s_; }
    int64_t num_active() const { return static_cast<int64_t>(active_.size()); }
    int64_t num_rate_computations() const { return num_rate_computations_; }
    // Rate computations that re-solved only the flows frozen from the first freeze event a change can
    // reach (flow_sim.cpp).
    int64_t num_partial_computations() const { return num_partial_computations_; }
    int64_t peak_active() const { return peak_active_; }
    // Bytes each link has carried by completed flows (weighted by share).
    const std::vector<double>& link_bytes() const { return link_bytes_; }
    // Current rate of the active flow started with `id` [bytes/s] (linear search; for tests).
    double rate_of(int64_t id);

   private:
    // Weighted max-min by progressive filling over the flows it re-solves (L links, H route entries).
    void compute_rates();
    void compact_hops();
    void release(int32_t slot);

    std::vector<double> capacity_;
    double now_s_ = 0;
    bool rates_valid_ = true;
    // Finish times: (time, slot, version) in a min-heap; an entry is current while its slot's version is
    // unchanged (a new rate or a completion bumps it); stale ones are dropped when they reach the top.
    // A full solution rebuilds the heap in O(F); a resumed one pushes only the flows whose rate changed.
    struct Finish {
        double time_s;
        int32_t slot;
        uint32_t version;
        bool operator>(const Finish& o) const {
            return time_s > o.time_s || (time_s == o.time_s && slot > o.slot);
        }
    };
    std::vector<Finish> finish_heap_;
    // A full solution's finish times when they come out in order (uniform traffic), from sorted_head_
    // on; next_finish() takes the earlier of its head and the heap's top.
    std::vector<Finish> finish_sorted_;
    size_t sorted_head_ = 0;
    void pop_finish(const Finish* next);  // removes next_finish()'s entry
    // Orders finish_sorted_ (listed in slot order) by (time, slot) when it holds at most a few distinct
    // times (a counting sort); false, untouched, otherwise.
    bool sort_few_times();
    std::vector<uint32_t> version_;
    std::vector<double> updated_s_;  // [slot] the time remaining_ refers to
    const Finish* next_finish();     // the current top, stale entries dropped; null when none
    // Flows live in slots (struct of arrays, stable while the flow is active); active_ lists the active
    // slots, active_pos_ each slot's place in it; freed slots are reused.
    std::vector<int64_t> id_;
    std::vector<double> remaining_, rate_, weight_, bytes_;  // remaining_ as of updated_s_
    std::vector<int64_t> hop_begin_;
    std::vector<int32_t> num_hops_;
    std::vector<int32_t> active_, active_pos_, free_slots_;
    std::vector<FlowHop> hops_;  // append-only pool, compacted when mostly dead
    int64_t live_hops_ = 0;
    std::vector<double> link_bytes_;
    // The last solution: active slots in the order progressive filling froze them with their levels λ,
    // and for each slot the position in that order of the first flow frozen by the same link (its
    // freeze event).
    std::vector<int32_t> freeze_order_, event_begin_;
    std::vector<double> freeze_level_;
    std::vector<double> link_used_;    // [links] Σ share × rate of the solved flows
    std::vector<double> link_weight_;  // [links] Σ share × weight of the active flows
    // Changes since the last solution: flows started and completed.
    std::vector<int32_t> started_, completed_;
    std::vector<double> link_added_;  // scratch: Σ share × weight of the started flows
    // Progressive-filling scratch, sized once per link / grown with the flows.
    std::vector<double> link_left_, link_demand_;
    std::vector<int32_t> link_unfrozen_, link_first_, adjacency_, touched_, resolve_;
    std::vector<int64_t> link_stamp_;
    std::vector<uint8_t> frozen_;
    struct Bottleneck {  // of a re-solved flow: its lowest link level, and that link
        double level;
        int32_t link;
    };
    std::vector<Bottleneck> bottleneck_;
    // Links by level for progressive filling. Levels popped never fall (a re-queued link's level rose), so
    // a radix heap on the bit patterns of the non-negative levels serves: O(1) push, amortised O(64) pop.
    struct LevelQueue {
        // (level bits, link); bucket 0: level == last popped, bucket i: highest bit differing is i − 1.
        std::vector<std::pair<uint64_t, int32_t>> bucket[65];
        uint64_t last = 0;
        size_t size = 0;
        void clear();
        void push(double level, int32_t link);
        std::pair<double, int32_t> pop();  // lowest level first
    };
    LevelQueue queue_;
    int64_t num_rate_computations_ = 0, num_partial_computations_ = 0, peak_active_ = 0;
};

}  // namespace expar
