// A dependency graph of transfers, compute and fixed delays, and its event-driven execution on a
// Network (docs/simulator.md "Task graphs"): transfers become max-min flows (flow_sim.h) after their α,
// compute occupies its device (one task at a time, in ready order), delays just take time (0 s = join).
// Owns the tasks and edges; simulate() returns per-task times and link/rank summaries.
#pragma once

#include <cstdint>
#include <vector>

#include "flow_sim.h"
#include "network.h"

namespace expar {

enum class TaskKind : uint8_t { transfer, bundle, compute, delay };

class TaskGraph {
   public:
    TaskGraph() = default;

    // One message src → dst of `bytes` (> 0): the network's route and α; it occupies its links as
    // bytes / efficiency(bytes).
    int32_t add_transfer(int src, int dst, double bytes, uint8_t phase);
    // Many messages that start together and finish together, as one flow (task_graph.cpp explains when
    // this is exact): `bytes` in total, `effective_bytes` = Σ message bytes / efficiency(message bytes),
    // `weight` = number of messages (its max-min weight), `hops` with the share of the bundle's bytes on
    // each link, α = latency_s. rank = a rank to report it under, or -1. Consecutive hops on consecutive
    // links with equal shares are stored as one run: list a node's NIC ports in port order so that a
    // bundle spread evenly over them can cross one pooled port in simulate().
    int32_t add_bundle(const FlowHop* hops,
                       int num_hops,
                       double bytes,
                       double effective_bytes,
                       double weight,
                       double latency_s,
                       uint8_t phase,
                       int rank = -1);
    // flops on the device of `rank`, at Network::device_flops_per_s().
    int32_t add_compute(int rank, double flops, uint8_t phase);
    // A fixed duration that occupies nothing (seconds = 0: a join); rank is for reporting (-1: none).
    int32_t add_delay(double seconds, uint8_t phase, int rank = -1);
    // `after` starts when `before` (and its other predecessors) have ended. Not after finalize().
    void add_dep(int32_t before, int32_t after);
    // Optional, once the graph is complete: replaces the edge list by the successor lists simulate()
    // uses, so the two are not held at once (a third less edge memory during the simulation).
    void finalize();

    // Capacity for the given numbers of tasks, edges, bundles and bundle hops (optional; saves regrowth).
    void reserve(int64_t tasks, int64_t edges, int64_t bundles = 0, int64_t bundle_hops = 0);

    int64_t num_tasks() const { return static_cast<int64_t>(kind_.size()); }
    int64_t num_edges() const {
        return finalized_ ? static_cast<int64_t>(succ_.size()) : static_cast<int64_t>(edge_from_.size());
    }
    TaskKind kind(int32_t task) const { return kind_[task]; }
    uint8_t phase(int32_t task) const { return phase_[task]; }
    int rank(int32_t task) const { return rank_[task]; }  // compute/delay rank, transfer source
    int peer(int32_t task) const { return kind_[task] == TaskKind::transfer ? peer_[task] : -1; }
    double amount(int32_t task) const { return amount_[task]; }  // flops, bytes or seconds
    double bundle_latency_s(int32_t task) const { return bundle_latencies_[bundles_[peer_[task]].latency]; }
    // Bytes this graph puts on each link (shares applied, efficiency included), without simulating.
    std::vector<double> link_load_bytes(const Network& network) const;
    // Predecessors of each task, CSR (built on demand).
    void predecessors(std::vector<int64_t>& first, std::vector<int32_t>& list) const;

   private:
    friend struct SimRun;
    int32_t add_task(TaskKind kind, int rank, int peer, double amount, uint8_t phase);

    std::vector<TaskKind> kind_;
    std::vector<uint8_t> phase_;
    std::vector<int32_t> rank_, peer_;  // peer: transfer destination, or bundle index
    std::vector<double> amount_;
    struct Bundle {  // 24 bytes: there are millions
        int64_t hop_begin;
        double effective_bytes;
        float weight;
        uint16_t num_hops;
        uint16_t latency;  // index into bundle_latencies_
    };
    std::vector<double> bundle_latencies_;  // the distinct α of the bundles [s]
    // num_links consecutive links from `link`, each carrying `share` of the bundle.
    struct HopRun {
        int32_t link;
        int32_t num_links;
        float share;
    };
    std::vector<Bundle> bundles_;
    std::vector<HopRun> bundle_hops_;
    std::vector<int32_t> edge_from_, edge_to_;
    bool finalized_ = false;
    std::vector<int64_t> succ_first_;  // after finalize(): successors of each task, CSR
    std::vector<int32_t> succ_;
};

struct SimOptions {
    // Rate recomputations are batched: with the next completion at t, `now` being the current time, flows
    // finishing by t + rate_window·(t − now) keep their exact finish times, but the bandwidth they free
    // is handed out once, at that time. 0 = exact max-min at every completion.
    double rate_window = 0;
};

struct SimResult {
    std::vector<double> start_s, end_s;  // [tasks]
    double makespan_s = 0;
    std::vector<double> link_bytes;  // [links] bytes carried (effective, shares applied)
    double class_bytes[kNumLinkClasses] = {};
    int busiest_link = -1;
    double busiest_link_utilisation = 0;  // its bytes / (capacity × makespan)
    std::vector<double> rank_compute_s;   // [ranks] device busy time
    // Cost of the simulation itself. Events: task ends and flow starts (α expiries); rate computations:
    // max-min solutions (one per batch of simultaneous changes).
    int64_t num_events = 0, num_rate_computations = 0, peak_active_flows = 0;
    int64_t num_partial_rate_computations = 0;  // of which resumed a previous solution (flow_sim.h)
    // Node egress/ingress NIC port sets simulated as one port (exact; task_graph.cpp).
    int num_pooled_nic_groups = 0;
    double wall_s = 0, events_per_s = 0;
    int64_t peak_rss_bytes = 0;  // getrusage, the whole process
};

SimResult simulate(const TaskGraph& graph, const Network& network, const SimOptions& options = {});

// The chain of tasks that made `last` end when it did: at each step the predecessor that ended last,
// or, for a compute task that waited for its device, the compute task before it. First task first.
std::vector<int32_t> critical_path(const TaskGraph& graph, const SimResult& result, int32_t last);

int64_t peak_rss_bytes();  // getrusage(RUSAGE_SELF).ru_maxrss

}  // namespace expar
