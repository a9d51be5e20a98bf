// A cluster read from topology/*.yaml (format: docs/topology.md): nodes × devices per node, the intra- and
// inter-node fabrics, one-direction link bandwidths (GB/s) and latencies (µs) per link class, the device
// compute rate per precision, and an optional calibration block. The MoE layer and the simulator read it.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "enum_names.h"

namespace expar {

enum class IntraFabric { nvswitch, ring, pcie, shared_memory };
enum class InterFabric { single_switch, fat_tree };

// The names in topology files (fabric: intra, inter).
inline const auto& enum_names(IntraFabric) {
    static constexpr EnumName<IntraFabric> names[] = {{IntraFabric::nvswitch, "nvswitch"},
                                                      {IntraFabric::ring, "ring"},
                                                      {IntraFabric::pcie, "pcie"},
                                                      {IntraFabric::shared_memory, "shared_memory"}};
    return names;
}
inline const auto& enum_names(InterFabric) {
    static constexpr EnumName<InterFabric> names[] = {{InterFabric::single_switch, "single_switch"},
                                                      {InterFabric::fat_tree, "fat_tree"}};
    return names;
}

// One link class, one direction.
struct Link {
    double bandwidth_GBps = 0;  // > 0
    double latency_us = 0;      // >= 0
};

// Measured figures that replace or refine the nominal ones (written by `expar calibrate`).
struct Calibration {
    std::string when;                // free text, ISO date recommended
    std::string how;                 // command line and host
    std::string measured_topology;   // name of the topology the measurement ran on
    std::optional<Link> intra, nic;  // alpha-beta fit per link class, if measured
    // (bytes each rank sends to each peer, efficiency in (0, 1]), ascending in bytes.
    std::vector<std::pair<double, double>> alltoall_efficiency;
    std::optional<double> gemm_efficiency;    // achieved / nominal dense rate, in (0, 1]
    std::optional<double> gemm_gflops;        // achieved expert GEMM rate per device [GFLOP/s]
    std::optional<double> gemm_alone_gflops;  // the same with the host's other ranks idle [GFLOP/s]
    // The layer's own row work on a device (packing rows to send, combining the returned ones, their
    // backward), bytes read + written per second with every device at it at once [GB/s]; unset = free.
    std::optional<double> row_work_GBps;
    // The MoE layer's router code (gate forward and backward) per device, as router FLOPs per second
    // (2·T·d·E forward, 4·T·d·E backward) [GFLOP/s]; unset = the GEMM rate.
    std::optional<double> router_forward_gflops, router_backward_gflops;
    // Whether a posted transfer moves while its ranks compute. False for a transport that progresses
    // only inside MPI calls (Open MPI's shared memory): transfers move only while both ends wait.
    bool async_progress = true;
    // CPU ranks that share a host's cores (absent: every rank has its own device). Hosts are blocks of
    // ranks_per_host consecutive ranks with cores_per_host cores; the calibrated rates are per rank with
    // every rank of the host computing at once, so one that computes while others wait runs faster: up
    // to gemm_alone_gflops when measured, else a core's worth (ranks_per_host / min(ranks_per_host,
    // cores_per_host) times the calibrated rate).
    struct SharedCores {
        int ranks_per_host = 1;
        int cores_per_host = 1;
    };
    std::optional<SharedCores> shared_cores;
    // What an exchange right after compute takes beyond the same exchange after a barrier [us]: ranks
    // that outnumber cores reach it late and in turns. Unset = 0.
    std::optional<double> exchange_wait_us;
};

struct Topology {
    std::string name;
    std::string description;
    std::string device;  // e.g. "H100 SXM"; may be empty
    std::string origin;  // file it was read from
    int num_nodes = 1;
    int devices_per_node = 1;
    IntraFabric intra_fabric = IntraFabric::shared_memory;
    InterFabric inter_fabric = InterFabric::single_switch;
    double oversubscription = 1;  // >= 1; only fat_tree may exceed 1
    int nics_per_node = 1;
    Link intra;                                  // per device into the intra-node fabric
    Link nic;                                    // per NIC
    std::map<std::string, double> dense_gflops;  // precision ("fp32", "bf16", ...) → GFLOP/s per device
    std::optional<Calibration> calibration;

    int num_devices() const { return num_nodes * devices_per_node; }
    // The share of the inter-node network one device gets when all devices send off-node at once:
    // nics_per_node · nic bandwidth / devices_per_node / oversubscription.
    double net_GBps_per_device() const;
    // What one device can send into its node's fabric: the intra link bandwidth.
    double local_GBps_per_device() const { return intra.bandwidth_GBps; }
    // Nominal dense rate of one device in FLOP/s; throws (all ranks) if the precision is not listed.
    double device_flops_per_s(const std::string& precision = "fp32") const;
    // The precision training runs at on these devices: bf16 if dense_rate lists it, else fp16 (the other
    // 16-bit float), else fp32 (always listed). `expar simulate --precision` defaults to it.
    std::string training_precision() const;
};

// Reads a topology file. Throws an all-ranks expar::Error, "FILE:LINE: key.path: what is wrong", on an
// unreadable file, bad YAML, an unknown or missing key, a missing unit or an out-of-range value.
Topology load_topology(const std::string& path);

// The same from text; `origin` names it in error messages.
Topology parse_topology(const std::string& yaml_text, const std::string& origin);

// A few lines for people: shape, fabrics, links, rates, derived per-device bandwidths, calibration.
std::string describe(const Topology& topology);

}  // namespace expar
