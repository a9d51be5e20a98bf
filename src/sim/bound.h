// The closed-form lower bound of a simulated step (docs/simulator.md "Bound"): no schedule can beat the
// busiest link's bytes over its capacity (per-GPU NIC send and receive, intra-node ports, the core),
// nor the busiest device's FLOPs over its rate; the first byte also waits one α. Every prediction
// reports efficiency = bound / predicted, in (0, 1].
#pragma once

#include <vector>

#include "network.h"
#include "task_graph.h"

namespace expar {

struct LowerBound {
    double nic_send_s = 0;  // max over NIC egress ports: bytes / capacity (per GPU when rail-aligned)
    double nic_recv_s = 0;  // max over NIC ingress ports
    double intra_s = 0;     // max over intra-node links (NVLink/PCIe ports, ring links)
    double core_s = 0;      // oversubscribed fat-tree core
    double compute_s = 0;   // max over ranks: FLOPs / device rate (shared cores: a core, a host)
    double latency_s = 0;   // smallest α of any message (0 without messages)
    double total_s = 0;     // max(max link term + latency_s, compute_s)
};

// link_load_bytes: bytes per link (TaskGraph::link_load_bytes); rank_flops: [P] FLOPs per device.
LowerBound lower_bound(const Network& network,
                       const std::vector<double>& link_load_bytes,
                       const std::vector<double>& rank_flops,
                       double min_latency_s);

// The smallest α of the graph's transfers and bundles (0 when it has none).
double min_message_latency_s(const TaskGraph& graph, const Network& network);

}  // namespace expar
