#include "topology.h"

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <sstream>

#include "check.h"
#include "quantity.h"
#include "text_file.h"

namespace expar {

namespace {

// ------------------------------------------------------------------------------------------------
// Reading one YAML map: every key must be allowed, and every error names file, line and key path.

std::string location(const std::string& origin, const YAML::Mark& mark) {
    return mark.is_null() ? origin : origin + ":" + std::to_string(mark.line + 1);
}

std::string location(const std::string& origin, const YAML::Node& node) {
    return location(origin, node.Mark());
}

std::string join(const std::vector<std::string>& words) {
    std::string out;
    for (const std::string& word : words) out += (out.empty() ? "" : ", ") + word;
    return out;
}

class MapReader {
   public:
    // `path` is the key path of `node` ("" at the top, "links.nic" below).
    MapReader(const std::string& origin,
              const YAML::Node& node,
              const std::string& path,
              const std::vector<std::string>& allowed)
        : origin_(origin), node_(node), path_(path) {
        const std::string what = path.empty() ? "the file" : path;
        if (!node.IsMap())
            EXPAR_FAIL(location(origin, node)
                       << ": " << what << ": expected a map with the keys " << join(allowed));
        for (const auto& entry : node) {
            const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "?";
            const std::string key_path = path.empty() ? key : path + "." + key;
            if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
                EXPAR_FAIL(location(origin, entry.first)
                           << ": " << key_path << ": unknown key (allowed: " << join(allowed) << ")");
            if (!key_marks_.emplace(key, entry.first.Mark()).second)
                EXPAR_FAIL(location(origin, entry.first) << ": " << key_path << ": duplicate key");
        }
    }

    bool has(const std::string& key) const { return bool(node_[key]); }
    std::string path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
    // "FILE:LINE: key.path", with the line of the key, or of the map itself when the key is absent.
    std::string where(const std::string& key) const {
        const auto it = key_marks_.find(key);
        return location(origin_, it == key_marks_.end() ? node_.Mark() : it->second) + ": " + path(key);
    }

    YAML::Node required(const std::string& key) const {
        if (!has(key)) EXPAR_FAIL(where(key) << ": missing required key");
        return node_[key];
    }
    MapReader map(const std::string& key, const std::vector<std::string>& allowed) const {
        return MapReader(origin_, required(key), path(key), allowed);
    }
    std::string text(const std::string& key) const { return scalar(required(key), where(key)); }
    std::string text_or(const std::string& key, const std::string& fallback) const {
        return has(key) ? text(key) : fallback;
    }
    double quantity(const std::string& key, QuantityKind kind) const {
        return parse_quantity(text(key), kind, where(key));
    }
    int positive_int(const std::string& key) const {
        const std::string s = text(key);
        char* end = nullptr;
        const long value = std::strtol(s.c_str(), &end, 10);
        if (*end != '\0' || end == s.c_str() || value <= 0)
            EXPAR_FAIL(where(key) << ": must be a positive whole number, got '" << s << "'");
        // The device count (nodes x devices_per_node) is capped at 2^24 below; no one count may be more.
        if (value > 1 << 24) EXPAR_FAIL(where(key) << ": " << s << " is above 2^24 (16,777,216)");
        return int(value);
    }
    double number(const std::string& key) const { return plain_number(text(key), where(key)); }

    static std::string scalar(const YAML::Node& node, const std::string& where) {
        if (node.IsNull()) EXPAR_FAIL(where << ": has no value");
        if (!node.IsScalar()) EXPAR_FAIL(where << ": expected a single value, not a list or map");
        return node.Scalar();
    }
    static double plain_number(const std::string& s, const std::string& where) {
        char* end = nullptr;
        const double value = std::strtod(s.c_str(), &end);
        if (*end != '\0' || end == s.c_str() || !std::isfinite(value))
            EXPAR_FAIL(where << ": expected a plain number, got '" << s << "'");
        return value;
    }

    const std::string& origin() const { return origin_; }

   private:
    std::string origin_;
    YAML::Node node_;
    std::string path_;
    std::map<std::string, YAML::Mark> key_marks_;
};

// ------------------------------------------------------------------------------------------------

const std::vector<std::string> kLinkKeys = {"bandwidth", "latency"};
const std::vector<std::string> kPrecisions = {"fp64", "fp32", "tf32", "fp16", "bf16", "fp8"};

// What a machine can have, generous by orders of magnitude either way. Outside, a value is a typo (GB/s
// for kB/s), and simulated times would lose their precision: a 1e13 s latency leaves no bits for a
// message's microseconds.
struct Range {
    double lo, hi;
    const char* unit;
};
constexpr Range kBandwidthRange{1e-6, 1e7, "GB/s"};  // 1 kB/s to 10 PB/s
constexpr Range kTimeRange{0, 1e6, "us"};            // up to 1 s
constexpr Range kRateRange{1e-6, 1e9, "GFLOP/s"};    // 1 kFLOP/s to 1 EFLOP/s

// map's quantity at key, which must lie in range.
double quantity_in(
    const MapReader& map, const std::string& key, QuantityKind kind, const char* what, Range range) {
    const double value = map.quantity(key, kind);
    if (!(value >= range.lo && value <= range.hi))
        EXPAR_FAIL(map.where(key) << ": " << what << " must be in [" << range.lo << ", " << range.hi << "] "
                                  << range.unit << ", got '" << map.text(key) << "'");
    return value;
}

Link read_link(const MapReader& link) {
    Link out;
    out.bandwidth_GBps =
        quantity_in(link, "bandwidth", QuantityKind::bandwidth, "bandwidth", kBandwidthRange);
    out.latency_us = quantity_in(link, "latency", QuantityKind::time, "latency", kTimeRange);
    return out;
}

IntraFabric read_intra_fabric(const MapReader& fabric) {
    const std::string name = fabric.text("intra");
    IntraFabric value{};
    if (parse_enum_name(name, &value)) return value;
    EXPAR_FAIL(fabric.where("intra") << ": unknown fabric '" << name << "' (expected "
                                     << enum_name_list<IntraFabric>() << ")");
}

InterFabric read_inter_fabric(const MapReader& fabric) {
    const std::string name = fabric.text("inter");
    InterFabric value{};
    if (parse_enum_name(name, &value)) return value;
    EXPAR_FAIL(fabric.where("inter") << ": unknown fabric '" << name << "' (expected "
                                     << enum_name_list<InterFabric>() << ")");
}

Calibration read_calibration(const MapReader& block) {
    Calibration out;
    out.when = block.text("when");
    out.how = block.text("how");
    out.measured_topology = block.text("topology");
    if (block.has("links")) {
        const MapReader links = block.map("links", {"intra", "nic"});
        if (links.has("intra")) out.intra = read_link(links.map("intra", kLinkKeys));
        if (links.has("nic")) out.nic = read_link(links.map("nic", kLinkKeys));
    }
    if (block.has("alltoall_efficiency")) {
        const YAML::Node table = block.required("alltoall_efficiency");
        if (!table.IsSequence() || table.size() == 0)
            EXPAR_FAIL(block.where("alltoall_efficiency") << ": expected a list of [size, efficiency] pairs");
        for (size_t i = 0; i < table.size(); ++i) {
            const std::string where = location(block.origin(), table[i]) + ": " +
                                      block.path("alltoall_efficiency") + "[" + std::to_string(i) + "]";
            if (!table[i].IsSequence() || table[i].size() != 2)
                EXPAR_FAIL(where << ": expected a [size, efficiency] pair such as [64 KiB, 0.5]");
            const double bytes =
                parse_quantity(MapReader::scalar(table[i][0], where), QuantityKind::size, where);
            const double efficiency = MapReader::plain_number(MapReader::scalar(table[i][1], where), where);
            if (!(bytes > 0)) EXPAR_FAIL(where << ": size must be positive");
            if (!(efficiency >= 1e-6 && efficiency <= 1))
                EXPAR_FAIL(where << ": efficiency must be in [1e-06, 1]");
            if (!out.alltoall_efficiency.empty() && bytes <= out.alltoall_efficiency.back().first)
                EXPAR_FAIL(where << ": sizes must be strictly ascending");
            out.alltoall_efficiency.emplace_back(bytes, efficiency);
        }
    }
    if (block.has("gemm_efficiency")) {
        // Above 1 when a machine measures faster than the nominal dense_rate it was given (calibrate --base).
        const double efficiency = block.number("gemm_efficiency");
        if (!(efficiency >= 1e-6 && efficiency <= 100))
            EXPAR_FAIL(block.where("gemm_efficiency") << ": must be in [1e-06, 100], got " << efficiency);
        out.gemm_efficiency = efficiency;
    }
    if (block.has("gemm_rate")) {
        out.gemm_gflops = quantity_in(block, "gemm_rate", QuantityKind::rate, "compute rate", kRateRange);
    }
    if (block.has("gemm_rate_alone")) {
        out.gemm_alone_gflops =
            quantity_in(block, "gemm_rate_alone", QuantityKind::rate, "compute rate", kRateRange);
    }
    if (block.has("row_work_bandwidth")) {
        out.row_work_GBps =
            quantity_in(block, "row_work_bandwidth", QuantityKind::bandwidth, "bandwidth", kBandwidthRange);
    }
    if (block.has("exchange_wait")) {
        out.exchange_wait_us = quantity_in(block, "exchange_wait", QuantityKind::time, "time", kTimeRange);
    }
    if (block.has("async_progress")) {
        const std::string value = block.text("async_progress");
        if (value != "true" && value != "false")
            EXPAR_FAIL(block.where("async_progress") << ": expected true or false, got '" << value << "'");
        out.async_progress = value == "true";
    }
    if (block.has("router_rate")) {
        const MapReader router = block.map("router_rate", {"forward", "backward"});
        out.router_forward_gflops =
            quantity_in(router, "forward", QuantityKind::rate, "compute rate", kRateRange);
        out.router_backward_gflops =
            quantity_in(router, "backward", QuantityKind::rate, "compute rate", kRateRange);
    }
    if (block.has("shared_cores")) {
        const MapReader shared = block.map("shared_cores", {"ranks_per_host", "cores_per_host"});
        auto whole = [&](const char* key) {
            const double n = shared.number(key);
            if (!(n >= 1 && n == std::floor(n) && n < 1e9))
                EXPAR_FAIL(shared.where(key) << ": expected a whole number >= 1, got " << shared.text(key));
            return static_cast<int>(n);
        };
        Calibration::SharedCores cores;
        cores.ranks_per_host = whole("ranks_per_host");
        cores.cores_per_host = whole("cores_per_host");
        out.shared_cores = cores;
    }
    return out;
}

}  // namespace

double Topology::net_GBps_per_device() const {
    return nics_per_node * nic.bandwidth_GBps / devices_per_node / oversubscription;
}

double Topology::device_flops_per_s(const std::string& precision) const {
    const auto it = dense_gflops.find(precision);
    if (it == dense_gflops.end()) {
        std::vector<std::string> listed;
        for (const auto& entry : dense_gflops) listed.push_back(entry.first);
        EXPAR_FAIL(origin << ": topology '" << name << "' has no dense_rate." << precision << " (it lists "
                          << join(listed) << ")");
    }
    return it->second * 1e9;
}

std::string Topology::training_precision() const {
    for (const char* precision : {"bf16", "fp16"})
        if (dense_gflops.count(precision)) return precision;
    return "fp32";
}

Topology parse_topology(const std::string& yaml_text, const std::string& origin) {
    YAML::Node root;
    try {
        root = YAML::Load(yaml_text);
    } catch (const YAML::DeepRecursion& error) {
        // yaml-cpp's parser recurses once per level and stops at a fixed depth with the message "bad file".
        EXPAR_FAIL(origin << (error.mark.is_null() ? "" : ":" + std::to_string(error.mark.line + 1))
                          << ": YAML nested more than " << error.depth()
                          << " levels deep (a topology file nests a few); not a topology file?");
    } catch (const YAML::Exception& error) {
        EXPAR_FAIL(origin << (error.mark.is_null() ? "" : ":" + std::to_string(error.mark.line + 1))
                          << ": YAML syntax error: " << error.msg);
    }
    const MapReader top(origin, root, "",
                        {"name", "description", "device", "nodes", "devices_per_node", "nics_per_node",
                         "fabric", "links", "dense_rate", "calibration"});
    Topology t;
    t.origin = origin;
    t.name = top.text("name");
    t.description = top.text_or("description", "");
    t.device = top.text_or("device", "");
    t.num_nodes = top.positive_int("nodes");
    t.devices_per_node = top.positive_int("devices_per_node");
    t.nics_per_node = top.positive_int("nics_per_node");
    // Ranks are ints everywhere (MPI's too); the simulator's scale tests stop at 16,384.
    if (static_cast<int64_t>(t.num_nodes) * t.devices_per_node > (int64_t{1} << 24))
        EXPAR_FAIL(top.where("nodes") << ": nodes x devices_per_node = " << t.num_nodes << " x "
                                      << t.devices_per_node << " is above 2^24 devices");

    const MapReader fabric = top.map("fabric", {"intra", "inter", "oversubscription"});
    t.intra_fabric = read_intra_fabric(fabric);
    t.inter_fabric = read_inter_fabric(fabric);
    if (fabric.has("oversubscription")) {
        if (t.inter_fabric != InterFabric::fat_tree)
            EXPAR_FAIL(fabric.where("oversubscription") << ": applies to fabric.inter: fat_tree only");
        t.oversubscription = fabric.number("oversubscription");
        if (!(t.oversubscription >= 1 && t.oversubscription <= 1e6))
            EXPAR_FAIL(fabric.where("oversubscription")
                       << ": must be in [1, 1e+06] (2 means 2:1, half the bandwidth up the tree), got "
                       << t.oversubscription);
    }

    const MapReader links = top.map("links", {"intra", "nic"});
    t.intra = read_link(links.map("intra", kLinkKeys));
    t.nic = read_link(links.map("nic", kLinkKeys));

    const MapReader rates = top.map("dense_rate", kPrecisions);
    for (const std::string& precision : kPrecisions) {
        if (!rates.has(precision) && precision != "fp32") continue;  // fp32 is required
        t.dense_gflops[precision] =
            quantity_in(rates, precision, QuantityKind::rate, "compute rate", kRateRange);
    }

    if (top.has("calibration"))
        t.calibration = read_calibration(
            top.map("calibration", {"when", "how", "topology", "links", "alltoall_efficiency",
                                    "gemm_efficiency", "gemm_rate", "gemm_rate_alone", "row_work_bandwidth",
                                    "async_progress", "router_rate", "shared_cores", "exchange_wait"}));
    return t;
}

Topology load_topology(const std::string& path) {
    return parse_topology(read_text_file(path, "topology file"), path);
}

std::string describe(const Topology& t) {
    std::ostringstream out;
    out << t.name << " (" << t.origin << ")" << (t.description.empty() ? "" : ": " + t.description) << "\n";
    out << "  nodes x devices: " << t.num_nodes << " x " << t.devices_per_node
        << (t.device.empty() ? "" : " (" + t.device + ")") << " = " << t.num_devices() << " devices\n";
    out << "  intra-node: " << to_string(t.intra_fabric) << ", " << t.intra.bandwidth_GBps << " GB/s, "
        << t.intra.latency_us << " us per device (one direction)\n";
    out << "  inter-node: " << to_string(t.inter_fabric);
    if (t.inter_fabric == InterFabric::fat_tree) out << " (oversubscription " << t.oversubscription << ")";
    out << ", " << t.nics_per_node << " NIC" << (t.nics_per_node > 1 ? "s" : "") << " per node x "
        << t.nic.bandwidth_GBps << " GB/s, " << t.nic.latency_us << " us\n";
    out << "  per device: network share " << t.net_GBps_per_device() << " GB/s, local "
        << t.local_GBps_per_device() << " GB/s\n";
    out << "  dense rate per device:";
    const char* separator = " ";
    for (const std::string& precision : kPrecisions) {
        const auto it = t.dense_gflops.find(precision);
        if (it == t.dense_gflops.end()) continue;
        out << separator << precision << " " << it->second << " GFLOP/s";
        separator = ", ";
    }
    out << "\n";
    if (!t.calibration) {
        out << "  calibration: none (nominal figures)\n";
        return out.str();
    }
    const Calibration& c = *t.calibration;
    out << "  calibration: " << c.when << ", on " << c.measured_topology << ", by `" << c.how << "`\n";
    if (c.intra)
        out << "    intra: " << c.intra->bandwidth_GBps << " GB/s, " << c.intra->latency_us << " us\n";
    if (c.nic) out << "    nic: " << c.nic->bandwidth_GBps << " GB/s, " << c.nic->latency_us << " us\n";
    if (!c.alltoall_efficiency.empty()) {
        out << "    all-to-all efficiency (bytes per peer: efficiency):";
        for (const auto& point : c.alltoall_efficiency) out << " " << point.first << ": " << point.second;
        out << "\n";
    }
    if (c.gemm_efficiency) out << "    GEMM efficiency: " << *c.gemm_efficiency << "\n";
    if (c.gemm_gflops) out << "    GEMM rate: " << *c.gemm_gflops << " GFLOP/s\n";
    if (c.gemm_alone_gflops) out << "    GEMM rate alone: " << *c.gemm_alone_gflops << " GFLOP/s\n";
    if (c.row_work_GBps) out << "    row work: " << *c.row_work_GBps << " GB/s\n";
    if (!c.async_progress) out << "    transfers progress only inside MPI calls (no async progress)\n";
    if (c.router_forward_gflops)
        out << "    router: " << *c.router_forward_gflops << " GFLOP/s forward, " << *c.router_backward_gflops
            << " GFLOP/s backward\n";
    if (c.shared_cores)
        out << "    " << c.shared_cores->ranks_per_host << " ranks share each host's "
            << c.shared_cores->cores_per_host << " cores\n";
    if (c.exchange_wait_us) out << "    exchange after compute: " << *c.exchange_wait_us << " us more\n";
    return out.str();
}

}  // namespace expar
