// The simulator's link graph of a cluster (docs/simulator.md "Network"): one-direction links with a
// capacity in bytes/s and a link class, built from a Topology for P ranks, and the route (list of links),
// latency α and message-size efficiency of a transfer between two ranks. Owns no traffic and no time.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "enum_names.h"
#include "node_map.h"
#include "topology.h"

namespace expar {

// intra: a device's port into or out of its node fabric (NVSwitch port, ring link, PCIe link);
// nic: a node's NIC port, one direction; core: the shared core of an oversubscribed fat tree.
enum class LinkClass : uint8_t { intra, nic, core };
constexpr int kNumLinkClasses = 3;
inline const auto& enum_names(LinkClass) {
    static constexpr EnumName<LinkClass> names[] = {
        {LinkClass::intra, "intra"}, {LinkClass::nic, "nic"}, {LinkClass::core, "core"}};
    return names;
}

struct NetLink {
    double capacity_Bps;  // one direction [bytes/s]
    LinkClass link_class;
};

// How a node's NICs appear: per_port = min(nics, devices) ports per node, device with local index l on
// port l % ports (rail-aligned when nics == devices); pooled = one port per node with every NIC's
// bandwidth (exact when the node's inter-node traffic is spread evenly over its devices).
enum class NicModel { per_port, pooled };
inline const auto& enum_names(NicModel) {
    static constexpr EnumName<NicModel> names[] = {
        {NicModel::per_port, "per-port", "each device on its NIC port"},
        {NicModel::pooled, "pooled", "one port per node with all NIC bandwidth"}};
    return names;
}

class Network {
   public:
    // Ranks placed by `map` (every node holds map.ranks_per_node ranks, which need not equal the file's
    // devices_per_node: a sweep may scale the cluster). Bandwidths and latencies are the topology's
    // nominal ones, replaced per link class by its calibration block where it has one. `precision` picks
    // the dense rate (times the calibrated GEMM efficiency, default 1).
    Network(const Topology& topology,
            const NodeMap& map,
            NicModel nic_model = NicModel::per_port,
            const std::string& precision = "fp32");

    int num_ranks() const { return map_.num_ranks; }
    int num_nodes() const { return map_.num_nodes; }
    int ranks_per_node() const { return map_.ranks_per_node; }
    const NodeMap& node_map() const { return map_; }
    const std::vector<NetLink>& links() const { return links_; }
    int num_links() const { return static_cast<int>(links_.size()); }
    NicModel nic_model() const { return nic_model_; }

    // Links a message from src to dst crosses, appended to `out` (nothing for src == dst).
    void route(int src, int dst, std::vector<int32_t>& out) const;
    // α of a message src → dst [s]: the file's device-to-device latency of the link class
    // (intra-node or inter-node), not a sum over hops.
    double latency_s(int src, int dst) const;
    double intra_latency_s() const { return intra_latency_s_; }
    double inter_latency_s() const { return inter_latency_s_; }

    // Message-size efficiency in (0, 1] from calibration.alltoall_efficiency (bytes per message,
    // interpolated in log(bytes), clamped outside the table); 1 without a table. A message of m bytes
    // occupies its links as m / efficiency(m) bytes.
    double efficiency(double message_bytes) const;

    // Expert/gate compute rate of one device [FLOP/s]: dense rate × calibrated GEMM efficiency.
    double device_flops_per_s() const { return flops_per_s_; }
    // The router's rate [router FLOP/s] forward and backward: calibration.router_rate, else the device rate.
    double router_flops_per_s(bool backward) const {
        return backward ? router_backward_flops_per_s_ : router_forward_flops_per_s_;
    }
    // The layer's local row work (packing, combining) per device [bytes/s]; 0 = not modelled (free).
    double row_work_Bps() const { return row_work_Bps_; }
    // Calibrated: what each exchange that follows compute waits beyond its transfers [s] (0 = none).
    double exchange_wait_s() const { return exchange_wait_s_; }
    // False: transfers progress only while both ends wait in MPI, not while they compute (calibration).
    bool async_progress() const { return async_progress_; }

    // Processor sharing (calibration.shared_cores, when a rank alone computes faster than with all of its
    // host's ranks computing): hosts are blocks of ranks_per_host() consecutive ranks whose compute shares
    // the host, max-min fair. The device rate is then the rate with every rank of the host computing.
    bool shares_cores() const { return ranks_per_host_ > 0; }
    int ranks_per_host() const { return ranks_per_host_; }
    // The most one rank computes [FLOP/s]: gemm_rate_alone when calibrated (scaled like the device rate),
    // else a core's share of the host, R / min(R, C) × the device rate.
    double rank_max_flops_per_s() const { return rank_max_flops_per_s_; }
    // What a host's ranks compute together at most: R × the device rate (all of them computing).
    double host_flops_per_s() const { return ranks_per_host_ * flops_per_s_; }

    // NIC ports of a node and the one a rank uses; egress and ingress link ids.
    int nic_ports_per_node() const { return ports_per_node_; }
    int nic_port_of(int rank) const { return map_.local_index[rank] % ports_per_node_; }
    int nic_egress_link(int node, int port) const { return nic_egress_base_ + node * ports_per_node_ + port; }
    int nic_ingress_link(int node, int port) const {
        return nic_ingress_base_ + node * ports_per_node_ + port;
    }
    int core_link() const { return core_link_; }
    // True on PCIe nodes: inter-node messages also cross the device's own PCIe links (route()).
    bool nic_traffic_crosses_device_links() const { return intra_fabric_ == IntraFabric::pcie; }
    bool has_efficiency_table() const {
        return !efficiency_.empty();
    }  // -1 unless fat_tree with oversubscription > 1
    // Intra-node links of a rank into and out of its node fabric (crossbar/pcie); -1 for rings.
    int device_egress_link(int rank) const { return ring_ ? -1 : rank; }
    int device_ingress_link(int rank) const { return ring_ ? -1 : map_.num_ranks + rank; }

   private:
    NodeMap map_;
    NicModel nic_model_;
    IntraFabric intra_fabric_;
    bool ring_ = false;  // ring of >= 3 devices: links [0, P) clockwise, [P, 2P) counter-clockwise
    std::vector<NetLink> links_;
    int ports_per_node_ = 1;
    int nic_egress_base_ = 0, nic_ingress_base_ = 0, core_link_ = -1;
    double intra_latency_s_ = 0, inter_latency_s_ = 0;
    double flops_per_s_ = 0;
    double row_work_Bps_ = 0;
    double exchange_wait_s_ = 0;
    double router_forward_flops_per_s_ = 0, router_backward_flops_per_s_ = 0;
    bool async_progress_ = true;
    int ranks_per_host_ = 0;  // 0: no sharing
    double rank_max_flops_per_s_ = 0;
    std::vector<std::pair<double, double>> efficiency_;  // (log bytes, efficiency)
};

// Node map for a simulation of num_ranks ranks on a topology: contiguous blocks of devices_per_node
// ranks (one node of num_ranks ranks when num_ranks < devices_per_node). Throws (all ranks) when
// num_ranks is not positive or not a multiple of devices_per_node.
NodeMap sim_node_map(const Topology& topology, int num_ranks);

}  // namespace expar
