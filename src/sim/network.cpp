// Link layout (ids): intra links first ([0, 2P): per device egress then ingress, or ring clockwise then
// counter-clockwise), then NIC egress ports [node, port], NIC ingress ports [node, port], then the core.
#include "network.h"

#include <algorithm>
#include <cmath>

#include "check.h"

namespace expar {

NodeMap sim_node_map(const Topology& topology, int num_ranks) {
    EXPAR_REQUIRE(num_ranks > 0, "the simulated rank count must be positive, got " << num_ranks);
    const int M = topology.devices_per_node;
    if (num_ranks <= M) return node_map_blocks(num_ranks, num_ranks);
    EXPAR_REQUIRE(num_ranks % M == 0, "the simulated rank count " << num_ranks << " is not a multiple of "
                                                                  << M << " devices per node (topology '"
                                                                  << topology.name << "')");
    return node_map_blocks(num_ranks, M);
}

Network::Network(const Topology& topology,
                 const NodeMap& map,
                 NicModel nic_model,
                 const std::string& precision)
    : map_(map), nic_model_(nic_model), intra_fabric_(topology.intra_fabric) {
    const int P = map.num_ranks, N = map.num_nodes, M = map.ranks_per_node;
    EXPAR_ASSERT(P == N * M && static_cast<int>(map.node_of_rank.size()) == P);
    Link intra = topology.intra, nic = topology.nic;
    const Calibration* cal = topology.calibration ? &*topology.calibration : nullptr;
    if (cal && cal->intra) intra = *cal->intra;
    if (cal && cal->nic) nic = *cal->nic;
    intra_latency_s_ = intra.latency_us * 1e-6;
    inter_latency_s_ = nic.latency_us * 1e-6;
    flops_per_s_ =
        topology.device_flops_per_s(precision) * (cal && cal->gemm_efficiency ? *cal->gemm_efficiency : 1.0);
    row_work_Bps_ = cal && cal->row_work_GBps ? *cal->row_work_GBps * 1e9 : 0.0;
    exchange_wait_s_ = cal && cal->exchange_wait_us ? *cal->exchange_wait_us * 1e-6 : 0.0;
    router_forward_flops_per_s_ =
        cal && cal->router_forward_gflops ? *cal->router_forward_gflops * 1e9 : flops_per_s_;
    router_backward_flops_per_s_ =
        cal && cal->router_backward_gflops ? *cal->router_backward_gflops * 1e9 : flops_per_s_;
    async_progress_ = !cal || cal->async_progress;
    if (cal && cal->shared_cores) {
        const int R = cal->shared_cores->ranks_per_host, C = cal->shared_cores->cores_per_host;
        double rank_max = flops_per_s_ * R / std::min(R, C);
        if (cal->gemm_alone_gflops && cal->gemm_gflops)  // measured: the alone / all-at-once ratio
            rank_max = flops_per_s_ * *cal->gemm_alone_gflops / *cal->gemm_gflops;
        rank_max = std::min(rank_max, flops_per_s_ * R);  // one rank cannot beat the whole host
        if (rank_max > flops_per_s_ * (1 + 1e-9)) {       // else every rank computes at the device rate
            ranks_per_host_ = R;
            rank_max_flops_per_s_ = rank_max;
        }
    }
    if (cal)
        for (const auto& [bytes, eff] : cal->alltoall_efficiency)
            efficiency_.emplace_back(std::log(bytes), eff);

    // A ring's file bandwidth is the sum over both neighbours: half per direction of travel.
    ring_ = topology.intra_fabric == IntraFabric::ring && M >= 3;
    const double intra_Bps = intra.bandwidth_GBps * 1e9;
    links_.assign(2 * P, NetLink{ring_ ? intra_Bps / 2 : intra_Bps, LinkClass::intra});

    const int nics = topology.nics_per_node;
    const double node_nic_Bps = nics * nic.bandwidth_GBps * 1e9;
    ports_per_node_ = nic_model == NicModel::pooled ? 1 : std::min(nics, M);
    nic_egress_base_ = static_cast<int>(links_.size());
    links_.resize(links_.size() + static_cast<size_t>(N) * ports_per_node_,
                  NetLink{node_nic_Bps / ports_per_node_, LinkClass::nic});
    nic_ingress_base_ = static_cast<int>(links_.size());
    links_.resize(links_.size() + static_cast<size_t>(N) * ports_per_node_,
                  NetLink{node_nic_Bps / ports_per_node_, LinkClass::nic});
    // Every inter-node byte goes up into and down out of the core, so one link stands for both
    // directions. At oversubscription 1 its capacity equals the sum of all NIC egress ports: it never
    // binds, so it is left out.
    if (topology.inter_fabric == InterFabric::fat_tree && topology.oversubscription > 1 && N > 1) {
        core_link_ = static_cast<int>(links_.size());
        links_.push_back(NetLink{N * node_nic_Bps / topology.oversubscription, LinkClass::core});
    }
}

void Network::route(int src, int dst, std::vector<int32_t>& out) const {
    if (src == dst) return;
    const int P = map_.num_ranks;
    const int a = map_.node_of_rank[src], b = map_.node_of_rank[dst];
    if (a == b) {
        if (!ring_) {
            out.push_back(src);      // src's egress into the node fabric
            out.push_back(P + dst);  // dst's ingress
            return;
        }
        // Shorter way round; at equal distance, even sources go clockwise, odd ones the other way.
        const int M = map_.ranks_per_node, from = map_.local_index[src], to = map_.local_index[dst];
        const int forward = (to - from + M) % M;
        const bool clockwise = 2 * forward < M || (2 * forward == M && from % 2 == 0);
        for (int l = from; l != to; l = (l + (clockwise ? 1 : M - 1)) % M)
            out.push_back(clockwise ? map_.rank_at(a, l) : P + map_.rank_at(a, l));
        return;
    }
    // GPU-to-NIC traffic crosses a PCIe node's device links; NVSwitch/ring nodes reach the NIC over PCIe
    // links the file does not describe, taken as non-binding.
    if (intra_fabric_ == IntraFabric::pcie) out.push_back(src);
    out.push_back(nic_egress_link(a, nic_port_of(src)));
    if (core_link_ >= 0) out.push_back(core_link_);
    out.push_back(nic_ingress_link(b, nic_port_of(dst)));
    if (intra_fabric_ == IntraFabric::pcie) out.push_back(P + dst);
}

double Network::latency_s(int src, int dst) const {
    return map_.same_node(src, dst) ? intra_latency_s_ : inter_latency_s_;
}

double Network::efficiency(double message_bytes) const {
    if (efficiency_.empty() || message_bytes <= 0)
        return efficiency_.empty() ? 1.0 : efficiency_.front().second;
    const double x = std::log(message_bytes);
    if (x <= efficiency_.front().first) return efficiency_.front().second;
    if (x >= efficiency_.back().first) return efficiency_.back().second;
    const auto hi = std::upper_bound(efficiency_.begin(), efficiency_.end(), std::make_pair(x, 2.0));
    const auto lo = hi - 1;
    const double t = (x - lo->first) / (hi->first - lo->first);
    return lo->second + t * (hi->second - lo->second);
}

}  // namespace expar
