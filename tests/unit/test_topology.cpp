// Quantities with units, the shipped topology files (derived figures against hand-computed ones) and every
// validation error of the loader (message names the file, line and key path).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include "check.h"
#include "quantity.h"
#include "topology.h"

using expar::QuantityKind;
using testing::HasSubstr;

namespace {

double quantity(const std::string& text, QuantityKind kind) {
    return expar::parse_quantity(text, kind, "t");
}

// The message of the all-ranks expar::Error that `f` throws ("" if it throws nothing).
template <typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const expar::Error& error) {
        EXPECT_TRUE(error.all_ranks());
        return error.what();
    }
    return "";
}

std::string quantity_error(const std::string& text, QuantityKind kind) {
    return error_of([&] { expar::parse_quantity(text, kind, "f.yaml:3: links.nic.bandwidth"); });
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Quantities

TEST(Quantity, BandwidthInGigabytesPerSecond) {
    EXPECT_DOUBLE_EQ(quantity("25 GB/s", QuantityKind::bandwidth), 25.0);
    EXPECT_DOUBLE_EQ(quantity("50 Gb/s", QuantityKind::bandwidth), 6.25);  // gigabits / 8
    EXPECT_DOUBLE_EQ(quantity("400 Gb/s", QuantityKind::bandwidth), 50.0);
    EXPECT_DOUBLE_EQ(quantity("1.5 TB/s", QuantityKind::bandwidth), 1500.0);
    EXPECT_DOUBLE_EQ(quantity("800 MB/s", QuantityKind::bandwidth), 0.8);
    EXPECT_DOUBLE_EQ(quantity("1 GiB/s", QuantityKind::bandwidth), 1073741824.0 / 1e9);
    EXPECT_DOUBLE_EQ(quantity("12GB/s", QuantityKind::bandwidth), 12.0);  // the space is optional
}

TEST(Quantity, TimeInMicroseconds) {
    EXPECT_DOUBLE_EQ(quantity("1.5 us", QuantityKind::time), 1.5);
    EXPECT_DOUBLE_EQ(quantity("2 µs", QuantityKind::time), 2.0);
    EXPECT_DOUBLE_EQ(quantity("0.5 ms", QuantityKind::time), 500.0);
    EXPECT_DOUBLE_EQ(quantity("700 ns", QuantityKind::time), 0.7);
    EXPECT_DOUBLE_EQ(quantity("2e-6 s", QuantityKind::time), 2.0);
}

TEST(Quantity, RateInGflopsAndSizeInBytes) {
    EXPECT_DOUBLE_EQ(quantity("19.5 TFLOP/s", QuantityKind::rate), 19500.0);
    EXPECT_DOUBLE_EQ(quantity("78 GFLOP/s", QuantityKind::rate), 78.0);
    EXPECT_DOUBLE_EQ(quantity("64 MiB", QuantityKind::size), 64.0 * 1024 * 1024);
    EXPECT_DOUBLE_EQ(quantity("4 KiB", QuantityKind::size), 4096.0);
    EXPECT_DOUBLE_EQ(quantity("1 GB", QuantityKind::size), 1e9);
    EXPECT_DOUBLE_EQ(quantity("512 B", QuantityKind::size), 512.0);
}

TEST(Quantity, ErrorsNameTheKeyAndTheText) {
    EXPECT_THAT(quantity_error("25", QuantityKind::bandwidth),
                HasSubstr("f.yaml:3: links.nic.bandwidth: '25' has no unit (expected a bandwidth in GB/s"));
    EXPECT_THAT(quantity_error("25 Gbps", QuantityKind::bandwidth),
                HasSubstr("unknown unit 'Gbps' in '25 Gbps'"));
    EXPECT_THAT(quantity_error("2 us", QuantityKind::bandwidth),
                HasSubstr("links.nic.bandwidth: '2 us' is a time (expected a bandwidth"));
    EXPECT_THAT(quantity_error("fast GB/s", QuantityKind::bandwidth),
                HasSubstr("'fast GB/s' is not a number with a unit"));
    EXPECT_THAT(quantity_error("inf GB/s", QuantityKind::bandwidth), HasSubstr("is not a number"));
    EXPECT_THAT(quantity_error("", QuantityKind::time), HasSubstr("is not a number"));
    EXPECT_THAT(quantity_error("3 GB", QuantityKind::bandwidth), HasSubstr("'3 GB' is a size"));
}

// ------------------------------------------------------------------------------------------------
// Shipped files: every topology/*.yaml loads, is named after its file, and gives the figures computed by
// hand from its sources (models.md, fastermoe.md).

struct Expected {
    int num_nodes, devices_per_node;
    double net_GBps_per_device, local_GBps_per_device, fp32_gflops;
    std::string training_precision;
};

TEST(Topology, ShippedFilesLoadWithHandComputedFigures) {
    const std::map<std::string, Expected> expected = {
        {"local", {1, 2, 2 * 5.0 / 2, 5.0, 78.4, "fp32"}},
        {"local-2x2", {2, 2, 2 * 2.5 / 2, 2.5, 39.2, "fp32"}},
        {"dgx-a100", {20, 8, 8 * 25.0 / 8, 300.0, 19500.0, "bf16"}},    // 8 × 200 Gb/s over 8 GPUs
        {"dgx-h100", {32, 8, 8 * 50.0 / 8, 450.0, 67000.0, "bf16"}},    // 8 × 400 Gb/s over 8 GPUs
        {"h800", {256, 8, 8 * 50.0 / 8, 200.0, 67000.0, "bf16"}},       // 400 GB/s bidirectional NVLink
        {"johnny", {2, 8, 50.0 / 8 / 8, 16.0, 14000.0, "fp16"}},        // one 50 Gb/s NIC over 8 GPUs
        {"trevor", {16, 4, 100.0 / 8 / 4, 6 * 25.0, 15700.0, "fp16"}},  // one 100 Gb/s NIC over 4 GPUs
    };
    int num_files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(EXPAR_SOURCE_DIR "/topology")) {
        if (entry.path().extension() != ".yaml") continue;
        ++num_files;
        const expar::Topology t = expar::load_topology(entry.path().string());
        SCOPED_TRACE(entry.path().string());
        EXPECT_EQ(t.name, entry.path().stem().string());
        ASSERT_EQ(expected.count(t.name), 1u) << "add the hand-computed figures of " << t.name << " here";
        const Expected& e = expected.at(t.name);
        EXPECT_EQ(t.num_nodes, e.num_nodes);
        EXPECT_EQ(t.devices_per_node, e.devices_per_node);
        EXPECT_EQ(t.num_devices(), e.num_nodes * e.devices_per_node);
        EXPECT_NEAR(t.net_GBps_per_device(), e.net_GBps_per_device, 1e-12 * e.net_GBps_per_device);
        EXPECT_NEAR(t.local_GBps_per_device(), e.local_GBps_per_device, 1e-12 * e.local_GBps_per_device);
        EXPECT_NEAR(t.device_flops_per_s(), e.fp32_gflops * 1e9, 1e-12 * e.fp32_gflops * 1e9);
        EXPECT_EQ(t.training_precision(), e.training_precision);
        EXPECT_FALSE(t.description.empty());
        EXPECT_THAT(expar::describe(t), HasSubstr(t.name));
    }
    EXPECT_EQ(num_files, int(expected.size()));
}

// ------------------------------------------------------------------------------------------------
// A full file with every key, and the loader's errors on variations of it.

const char* kFull = R"(# an annotated example
name: test
description: two nodes of four
device: X1
nodes: 2
devices_per_node: 4
nics_per_node: 2
fabric:
  intra: ring
  inter: fat_tree
  oversubscription: 2
links:
  intra: {bandwidth: 100 GB/s, latency: 2 us}
  nic:
    bandwidth: 200 Gb/s
    latency: 5 us
dense_rate: {fp32: 10 TFLOP/s, bf16: 100 TFLOP/s}
calibration:
  when: 2026-11-23
  how: expar calibrate on host1
  topology: test
  links:
    nic: {bandwidth: 20 GB/s, latency: 8 us}
  alltoall_efficiency:
    - [4 KiB, 0.1]
    - [1 MiB, 0.75]
  gemm_efficiency: 0.9
  gemm_rate: 9 TFLOP/s
)";

// kFull with the first occurrence of `from` replaced by `to`.
std::string variant(const std::string& from, const std::string& to) {
    std::string text = kFull;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return text.replace(at, from.size(), to);
}

std::string load_error(const std::string& text) {
    return error_of([&] { expar::parse_topology(text, "bad.yaml"); });
}

TEST(Topology, ReadsEveryKey) {
    const expar::Topology t = expar::parse_topology(kFull, "full.yaml");
    EXPECT_EQ(t.description, "two nodes of four");
    EXPECT_EQ(t.device, "X1");
    EXPECT_EQ(t.intra_fabric, expar::IntraFabric::ring);
    EXPECT_EQ(t.inter_fabric, expar::InterFabric::fat_tree);
    EXPECT_DOUBLE_EQ(t.oversubscription, 2.0);
    EXPECT_DOUBLE_EQ(t.intra.bandwidth_GBps, 100.0);
    EXPECT_DOUBLE_EQ(t.intra.latency_us, 2.0);
    EXPECT_DOUBLE_EQ(t.nic.bandwidth_GBps, 25.0);
    EXPECT_DOUBLE_EQ(t.nic.latency_us, 5.0);
    EXPECT_DOUBLE_EQ(t.net_GBps_per_device(), 2 * 25.0 / 4 / 2);  // 2 NICs, 4 devices, 2:1 oversubscribed
    EXPECT_DOUBLE_EQ(t.device_flops_per_s("bf16"), 100e12);
    EXPECT_THAT(error_of([&] { t.device_flops_per_s("fp8"); }),
                HasSubstr("topology 'test' has no dense_rate.fp8 (it lists bf16, fp32)"));
    ASSERT_TRUE(t.calibration.has_value());
    const expar::Calibration& c = *t.calibration;
    EXPECT_EQ(c.when, "2026-11-23");
    EXPECT_EQ(c.how, "expar calibrate on host1");
    EXPECT_EQ(c.measured_topology, "test");
    EXPECT_FALSE(c.intra.has_value());
    ASSERT_TRUE(c.nic.has_value());
    EXPECT_DOUBLE_EQ(c.nic->bandwidth_GBps, 20.0);
    EXPECT_DOUBLE_EQ(c.nic->latency_us, 8.0);
    ASSERT_EQ(c.alltoall_efficiency.size(), 2u);
    EXPECT_DOUBLE_EQ(c.alltoall_efficiency[0].first, 4096.0);
    EXPECT_DOUBLE_EQ(c.alltoall_efficiency[1].first, 1048576.0);
    EXPECT_DOUBLE_EQ(c.alltoall_efficiency[1].second, 0.75);
    EXPECT_DOUBLE_EQ(c.gemm_efficiency.value_or(0), 0.9);
    EXPECT_DOUBLE_EQ(c.gemm_gflops.value_or(0), 9000.0);
    EXPECT_THAT(expar::describe(t), HasSubstr("network share 6.25 GB/s, local 100 GB/s"));
}

// bf16 where dense_rate lists it, else fp16, else fp32; other precisions (tf32, fp8) never.
TEST(Topology, TrainingPrecisionPrefersBf16ThenFp16ThenFp32) {
    const auto training = [](const std::string& rates) {
        return expar::parse_topology(variant("dense_rate: {fp32: 10 TFLOP/s, bf16: 100 TFLOP/s}",
                                             "dense_rate: {" + rates + "}"),
                                     "rates.yaml")
            .training_precision();
    };
    EXPECT_EQ(training("fp32: 10 TFLOP/s, bf16: 100 TFLOP/s"), "bf16");
    EXPECT_EQ(training("fp32: 10 TFLOP/s, fp16: 200 TFLOP/s, bf16: 100 TFLOP/s"), "bf16");
    EXPECT_EQ(training("fp32: 10 TFLOP/s, fp16: 100 TFLOP/s, tf32: 50 TFLOP/s"), "fp16");
    EXPECT_EQ(training("fp32: 10 TFLOP/s, tf32: 50 TFLOP/s, fp8: 400 TFLOP/s"), "fp32");
    EXPECT_EQ(training("fp32: 10 TFLOP/s"), "fp32");
}

TEST(Topology, DefaultsWhenOptionalKeysAreAbsent) {
    std::string text = variant("  oversubscription: 2\n", "");
    text = text.substr(0, text.find("calibration:"));
    const std::string description = "description: two nodes of four\n";
    text = text.replace(text.find(description), description.size(), "");
    const expar::Topology t = expar::parse_topology(text, "min.yaml");
    EXPECT_DOUBLE_EQ(t.oversubscription, 1.0);
    EXPECT_FALSE(t.calibration.has_value());
    EXPECT_EQ(t.description, "");
}

TEST(Topology, RejectsUnknownKeysEverywhere) {
    EXPECT_THAT(load_error(variant("nodes: 2", "nodes: 2\nnode: 3")),
                HasSubstr("bad.yaml:6: node: unknown key (allowed: name, description, device, nodes,"));
    EXPECT_THAT(load_error(variant("latency: 5 us", "latncy: 5 us")),
                HasSubstr("bad.yaml:16: links.nic.latncy: unknown key (allowed: bandwidth, latency)"));
    EXPECT_THAT(load_error(variant("  intra: ring", "  intra: ring\n  kind: x")),
                HasSubstr("fabric.kind: unknown key (allowed: intra, inter, oversubscription)"));
    EXPECT_THAT(load_error(variant("bf16:", "bf61:")),
                HasSubstr("dense_rate.bf61: unknown key (allowed: fp64, fp32, tf32, fp16, bf16, fp8)"));
    EXPECT_THAT(load_error(variant("  gemm_efficiency", "  gemm_eff")),
                HasSubstr("calibration.gemm_eff: unknown key"));
    EXPECT_THAT(load_error(variant("    nic: {bandwidth: 20", "    nix: {bandwidth: 20")),
                HasSubstr("calibration.links.nix: unknown key (allowed: intra, nic)"));
    EXPECT_THAT(load_error(variant("nodes: 2", "nodes: 2\nnodes: 3")),
                HasSubstr("bad.yaml:6: nodes: duplicate key"));
}

TEST(Topology, RejectsMissingKeysAndValues) {
    EXPECT_THAT(load_error(variant("nics_per_node: 2\n", "")),
                HasSubstr("bad.yaml:2: nics_per_node: missing required key"));
    EXPECT_THAT(load_error(variant("    latency: 5 us\n", "")),
                HasSubstr("links.nic.latency: missing required key"));
    EXPECT_THAT(load_error(variant("fp32: 10 TFLOP/s, ", "")),
                HasSubstr("dense_rate.fp32: missing required key"));
    EXPECT_THAT(load_error(variant("  how: expar calibrate on host1\n", "")),
                HasSubstr("calibration.how: missing required key"));
    EXPECT_THAT(load_error(variant("nodes: 2", "nodes:")), HasSubstr("bad.yaml:5: nodes: has no value"));
    EXPECT_THAT(load_error(variant(
                    "links:\n  intra: {bandwidth: 100 GB/s, latency: 2 us}\n  nic:\n    bandwidth: 200 Gb/s\n"
                    "    latency: 5 us\n",
                    "links: 3\n")),
                HasSubstr("bad.yaml:12: links: expected a map with the keys intra, nic"));
    EXPECT_THAT(load_error(""), HasSubstr("bad.yaml: the file: expected a map with the keys name,"));
}

TEST(Topology, RejectsBadValues) {
    EXPECT_THAT(load_error(variant("bandwidth: 200 Gb/s", "bandwidth: 200")),
                HasSubstr("bad.yaml:15: links.nic.bandwidth: '200' has no unit (expected a bandwidth"));
    EXPECT_THAT(
        load_error(variant("bandwidth: 200 Gb/s", "bandwidth: -200 Gb/s")),
        HasSubstr(
            "bad.yaml:15: links.nic.bandwidth: bandwidth must be in [1e-06, 1e+07] GB/s, got '-200 Gb/s'"));
    EXPECT_THAT(load_error(variant("bandwidth: 100 GB/s", "bandwidth: 0 GB/s")),
                HasSubstr("links.intra.bandwidth: bandwidth must be in [1e-06, 1e+07] GB/s"));
    EXPECT_THAT(load_error(variant("latency: 2 us", "latency: -2 us")),
                HasSubstr("links.intra.latency: latency must be in [0, 1e+06] us, got '-2 us'"));
    // Values no machine has, which would also leave simulated times without precision (a 1e13 s latency
    // once made the engine spin: a message's microseconds vanish in the rounding of the clock).
    EXPECT_THAT(load_error(variant("latency: 2 us", "latency: 10000000000000 s")),
                HasSubstr("links.intra.latency: latency must be in [0, 1e+06] us, got '10000000000000 s'"));
    EXPECT_THAT(load_error(variant("bandwidth: 100 GB/s", "bandwidth: 1e-300 GB/s")),
                HasSubstr("links.intra.bandwidth: bandwidth must be in [1e-06, 1e+07] GB/s"));
    EXPECT_THAT(load_error(variant("fp32: 10 TFLOP/s", "fp32: 1e-9 GFLOP/s")),
                HasSubstr("dense_rate.fp32: compute rate must be in [1e-06, 1e+09] GFLOP/s"));
    EXPECT_THAT(load_error(variant("latency: 2 us", "latency: 2 GB/s")),
                HasSubstr("links.intra.latency: '2 GB/s' is a bandwidth (expected a time in ns, us"));
    EXPECT_THAT(load_error(variant("devices_per_node: 4", "devices_per_node: 0")),
                HasSubstr("bad.yaml:6: devices_per_node: must be a positive whole number, got '0'"));
    EXPECT_THAT(
        load_error(variant("nodes: 2", "nodes: 10000000")),  // x 4 devices: once an int overflow
        HasSubstr("bad.yaml:5: nodes: nodes x devices_per_node = 10000000 x 4 is above 2^24 devices"));
    EXPECT_THAT(load_error(variant("devices_per_node: 4", "devices_per_node: 2147483647")),
                HasSubstr("bad.yaml:6: devices_per_node: 2147483647 is above 2^24 (16,777,216)"));
    EXPECT_THAT(load_error(variant("nodes: 2", "nodes: 2.5")),
                HasSubstr("nodes: must be a positive whole number, got '2.5'"));
    EXPECT_THAT(
        load_error(variant("intra: ring", "intra: mesh")),
        HasSubstr("fabric.intra: unknown fabric 'mesh' (expected nvswitch, ring, pcie or shared_memory)"));
    EXPECT_THAT(load_error(variant("inter: fat_tree", "inter: dragonfly")),
                HasSubstr("fabric.inter: unknown fabric 'dragonfly' (expected single_switch or fat_tree)"));
    EXPECT_THAT(load_error(variant("oversubscription: 2", "oversubscription: 0.5")),
                HasSubstr("bad.yaml:11: fabric.oversubscription: must be in [1, 1e+06]"));
    EXPECT_THAT(load_error(variant("inter: fat_tree", "inter: single_switch")),
                HasSubstr("fabric.oversubscription: applies to fabric.inter: fat_tree only"));
    EXPECT_THAT(load_error(variant("fp32: 10 TFLOP/s", "fp32: 10 TB/s")),
                HasSubstr("dense_rate.fp32: '10 TB/s' is a bandwidth (expected a compute rate"));
    EXPECT_THAT(load_error(variant("fp32: 10 TFLOP/s", "fp32: -1 TFLOP/s")),
                HasSubstr("dense_rate.fp32: compute rate must be in [1e-06, 1e+09] GFLOP/s"));
}

TEST(Topology, RejectsBadCalibration) {
    EXPECT_THAT(
        load_error(variant("[1 MiB, 0.75]", "[1 MiB, 1.5]")),
        HasSubstr("bad.yaml:26: calibration.alltoall_efficiency[1]: efficiency must be in [1e-06, 1]"));
    EXPECT_THAT(load_error(variant("[1 MiB, 0.75]", "[2 KiB, 0.75]")),
                HasSubstr("calibration.alltoall_efficiency[1]: sizes must be strictly ascending"));
    EXPECT_THAT(load_error(variant("[1 MiB, 0.75]", "[1048576, 0.75]")),
                HasSubstr("calibration.alltoall_efficiency[1]: '1048576' has no unit (expected a size"));
    EXPECT_THAT(load_error(variant("[1 MiB, 0.75]", "[1 MiB]")),
                HasSubstr("calibration.alltoall_efficiency[1]: expected a [size, efficiency] pair"));
    EXPECT_THAT(load_error(variant("gemm_efficiency: 0.9", "gemm_efficiency: 90%")),
                HasSubstr("calibration.gemm_efficiency: expected a plain number, got '90%'"));
    EXPECT_THAT(load_error(variant("gemm_efficiency: 0.9", "gemm_efficiency: 1000")),
                HasSubstr("calibration.gemm_efficiency: must be in [1e-06, 100], got 1000"));
    EXPECT_THAT(load_error(variant("gemm_efficiency: 0.9", "gemm_efficiency: 1e-300")),
                HasSubstr("calibration.gemm_efficiency: must be in [1e-06, 100]"));
    EXPECT_THAT(load_error(variant("gemm_rate: 9 TFLOP/s", "gemm_rate: 9")),
                HasSubstr("calibration.gemm_rate: '9' has no unit"));
    EXPECT_THAT(load_error(variant("bandwidth: 20 GB/s", "bandwidth: -20 GB/s")),
                HasSubstr("calibration.links.nic.bandwidth: bandwidth must be in [1e-06, 1e+07] GB/s"));
}

TEST(Topology, ReportsYamlSyntaxErrorsAndUnreadableFiles) {
    EXPECT_THAT(
        load_error(variant("  intra: {bandwidth: 100 GB/s, latency: 2 us}", "  intra: {bandwidth: 100 GB/s")),
        HasSubstr("bad.yaml:14: YAML syntax error: "));
    EXPECT_THAT(error_of([] { expar::load_topology("/nonexistent/x.yaml"); }),
                HasSubstr("cannot read topology file '/nonexistent/x.yaml'"));
}
