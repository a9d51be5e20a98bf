// Why it is a bound: a max-min allocation never exceeds a link's capacity, so a link that must carry
// B bytes is busy at least B / capacity, and its first byte moves only after some message's α; a device
// runs one compute task at a time (on shared cores: at most a core, a host at most its cores). Sharing,
// dependencies and idle time only add to these.
#include "bound.h"

#include <algorithm>
#include <limits>

#include "check.h"

namespace expar {

LowerBound lower_bound(const Network& network,
                       const std::vector<double>& link_load_bytes,
                       const std::vector<double>& rank_flops,
                       double min_latency_s) {
    EXPAR_ASSERT(static_cast<int>(link_load_bytes.size()) == network.num_links());
    LowerBound b;
    const std::vector<NetLink>& links = network.links();
    const int N = network.num_nodes(), ports = network.nic_ports_per_node();
    for (int l = 0; l < network.num_links(); ++l) {
        const double s = link_load_bytes[l] / links[l].capacity_Bps;
        switch (links[l].link_class) {
            case LinkClass::intra:
                b.intra_s = std::max(b.intra_s, s);
                break;
            case LinkClass::core:
                b.core_s = std::max(b.core_s, s);
                break;
            case LinkClass::nic:
                if (l < network.nic_egress_link(0, 0) + N * ports)
                    b.nic_send_s = std::max(b.nic_send_s, s);
                else
                    b.nic_recv_s = std::max(b.nic_recv_s, s);
                break;
        }
    }
    if (network.shares_cores()) {
        // A rank computes at most rank_max_flops_per_s(), a host's ranks together host_flops_per_s().
        const size_t R = static_cast<size_t>(network.ranks_per_host());
        for (size_t first = 0; first < rank_flops.size(); first += R) {
            double host_flops = 0;
            for (size_t r = first; r < std::min(rank_flops.size(), first + R); ++r) {
                b.compute_s = std::max(b.compute_s, rank_flops[r] / network.rank_max_flops_per_s());
                host_flops += rank_flops[r];
            }
            b.compute_s = std::max(b.compute_s, host_flops / network.host_flops_per_s());
        }
    } else {
        for (double flops : rank_flops)
            b.compute_s = std::max(b.compute_s, flops / network.device_flops_per_s());
    }
    const double links_s = std::max({b.nic_send_s, b.nic_recv_s, b.intra_s, b.core_s});
    b.latency_s = min_latency_s;
    b.total_s = std::max(links_s > 0 ? links_s + min_latency_s : 0.0, b.compute_s);
    return b;
}

double min_message_latency_s(const TaskGraph& graph, const Network& network) {
    double alpha = std::numeric_limits<double>::infinity();
    for (int32_t t = 0; t < graph.num_tasks(); ++t) {
        if (graph.kind(t) == TaskKind::transfer)
            alpha = std::min(alpha, network.latency_s(graph.rank(t), graph.peer(t)));
        else if (graph.kind(t) == TaskKind::bundle)
            alpha = std::min(alpha, graph.bundle_latency_s(t));
    }
    return alpha == std::numeric_limits<double>::infinity() ? 0.0 : alpha;
}

}  // namespace expar
