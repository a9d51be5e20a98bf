// `expar calibrate` without MPI: the α-β fit recovers exact lines (and never returns a negative
// latency), and the topology files it writes load with load_topology's parser carrying the same figures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "calibrate.h"
#include "network.h"
#include "topology.h"

using testing::HasSubstr;

namespace expar {
namespace {

std::vector<PingPongPoint> line(double latency_us, double GBps) {
    std::vector<PingPongPoint> points;
    for (double m = 8; m <= 4 << 20; m *= 4) points.push_back({m, latency_us + m / (GBps * 1e3)});
    return points;
}

TEST(Calibrate, FitRecoversAnExactAlphaBetaLine) {
    const AlphaBetaFit fit = fit_alpha_beta(line(2.5, 5.0));
    EXPECT_NEAR(fit.latency_us, 2.5, 1e-9);
    EXPECT_NEAR(fit.bandwidth_GBps, 5.0, 1e-9);
    EXPECT_NEAR(fit.r_squared, 1.0, 1e-12);
    EXPECT_LT(fit.max_rel_residual, 1e-9);
}

TEST(Calibrate, FitNeverReturnsANegativeLatency) {
    std::vector<PingPongPoint> points = line(0.0, 10.0);
    points[0].time_us *= 0.5;  // a small message faster than the line: an unconstrained fit goes below 0
    const AlphaBetaFit fit = fit_alpha_beta(points);
    EXPECT_GE(fit.latency_us, 0.0);
    EXPECT_GT(fit.bandwidth_GBps, 0.0);
    EXPECT_LT(fit.r_squared, 1.0);
    EXPECT_GE(fit.max_rel_residual, 0.5);
}

TEST(Calibrate, FlatTimesGiveTheBandwidthsLowerBound) {
    // Noise above the transfer time: 3 us at every size, 8 B to 32 KiB, the largest a bit faster. A
    // least-squares slope is negative; the file must still hold a positive bandwidth: 32768 B / 2.9 us.
    std::vector<PingPongPoint> points;
    for (double m = 8; m <= 65536; m *= 8) points.push_back({m, 3.0});
    points.back().time_us = 2.9;
    const AlphaBetaFit fit = fit_alpha_beta(points);
    EXPECT_NEAR(fit.bandwidth_GBps, 32768 / 2.9 / 1e3, 1e-9);
    EXPECT_GE(fit.latency_us, 0.0);
    EXPECT_LT(fit.latency_us, 3.0);
}

CalibrationResult measured() {
    CalibrationResult r;
    r.when = "2026-11-23T10:00:00Z";
    r.how = "expar calibrate --out \"x.yaml\" (host h)";
    r.host = "h";
    r.num_ranks = 4;
    r.num_nodes = 2;
    r.ranks_per_node = 2;
    r.emulated = true;
    r.intra_points = line(1.5, 6.0);
    r.inter_points = line(3.0, 2.0);
    r.intra = fit_alpha_beta(r.intra_points);
    r.inter = fit_alpha_beta(r.inter_points);
    r.intra_peer = 1;
    r.inter_peer = 2;
    r.alltoall = {{1024, 10, 0.3, 0.15}, {65536, 100, 1.9, 0.95}, {1 << 20, 900, 2.4, 1.2}};
    r.alltoall_reference_GBps = 2.0;
    r.gemm_gflops = 21.5;
    r.gemm_gflops_median_rank = 22;
    return r;
}

TEST(Calibrate, StepStandInHoldsEveryRowOfAStepUpTo256MiB) {
    CalibrateOptions o;
    o.d_model = 256, o.d_ff = 512, o.activation = Activation::gelu, o.gate_tokens = 4096, o.top_k = 2;
    // The validation's layer: 8,192 rows over 4 local experts, 2,048 each; a row is 5 · 256 + 3 · 512
    // floats (gelu: no gate matrix) = 11,264 B, 92 MB in all, and the weights with gradients 8.4 MB.
    StepFootprintShape shape = step_footprint_shape(o, 4);
    EXPECT_EQ(shape.num_experts, 4);
    EXPECT_EQ(shape.rows_per_expert, 2048);
    o.gate_tokens = 4095, o.top_k = 1;
    EXPECT_EQ(step_footprint_shape(o, 4).rows_per_expert, 1024);  // rounded up
    // DeepSeekMoE-16B's experts (d 2048, f 1408, SwiGLU), 4,096 tokens, k 6: an expert's weights, biases and
    // their gradients are 4 · 2 · (3 · 2048 · 1408 + 1408 + 2048) B = 69,233,664 B, more than a quarter of
    // 256 MiB, so 1 expert; the rows (5 · 2048 + 4 · 1408 floats = 63,488 B) get the remaining
    // 199,201,792 B: 3,137 of the step's 24,576.
    o.d_model = 2048, o.d_ff = 1408, o.activation = Activation::swiglu, o.gate_tokens = 4096, o.top_k = 6;
    shape = step_footprint_shape(o, 2);
    EXPECT_EQ(shape.num_experts, 1);
    EXPECT_EQ(shape.rows_per_expert, 3137);
    // One expert's weights past the whole budget: that expert and one row.
    o.d_model = 7168, o.d_ff = 2048;
    shape = step_footprint_shape(o, 32);
    EXPECT_EQ(shape.num_experts, 1);
    EXPECT_EQ(shape.rows_per_expert, 1);
}

TEST(Calibrate, RowWorkRowsAreTheStepsRowsMadeEven) {
    CalibrateOptions o;
    o.gate_tokens = 4096, o.top_k = 2;
    EXPECT_EQ(row_work_rows(o), 8192);
    o.gate_tokens = 7, o.top_k = 1;
    EXPECT_EQ(row_work_rows(o), 6);
    o.gate_tokens = 1;
    EXPECT_EQ(row_work_rows(o), 2);
}

TEST(Calibrate, WrittenTopologyLoadsWithTheMeasuredFigures) {
    const CalibrationResult r = measured();
    const Topology t = parse_topology(topology_yaml_from_measurement(r, "here"), "here.yaml");
    EXPECT_EQ(t.name, "here");
    EXPECT_EQ(t.num_nodes, 2);
    EXPECT_EQ(t.devices_per_node, 2);
    EXPECT_NEAR(t.intra.bandwidth_GBps, 6.0, 1e-4);
    EXPECT_NEAR(t.nic.latency_us, 3.0, 1e-4);
    EXPECT_NEAR(t.device_flops_per_s("fp32"), 21.5e9, 1e4);  // no peak known: dense rate = measured
    ASSERT_TRUE(t.calibration.has_value());
    const Calibration& c = *t.calibration;
    EXPECT_EQ(c.when, r.when);
    EXPECT_EQ(c.how, r.how);  // quotes survive the YAML round trip
    EXPECT_EQ(c.measured_topology, "here");
    ASSERT_TRUE(c.intra && c.nic);
    EXPECT_NEAR(c.intra->latency_us, 1.5, 1e-4);
    EXPECT_NEAR(c.nic->bandwidth_GBps, 2.0, 1e-4);
    ASSERT_EQ(c.alltoall_efficiency.size(), 3u);
    EXPECT_DOUBLE_EQ(c.alltoall_efficiency[0].first, 1024.0);
    EXPECT_NEAR(c.alltoall_efficiency[1].second, 0.95, 1e-6);
    EXPECT_DOUBLE_EQ(c.alltoall_efficiency[2].second, 1.0) << "efficiency above 1 is clamped";
    EXPECT_FALSE(c.gemm_efficiency.has_value()) << "no nominal peak, no efficiency";
    EXPECT_NEAR(c.gemm_gflops.value_or(0), 21.5, 1e-6);
}

TEST(Calibrate, BaseFileKeepsEverythingButTheCalibrationBlock) {
    const std::string base_text = R"(name: base
nodes: 4
devices_per_node: 2
nics_per_node: 1
fabric: {intra: nvswitch, inter: single_switch}
links:
  intra: {bandwidth: 100 GB/s, latency: 1 us}
  nic: {bandwidth: 100 Gb/s, latency: 4 us}
dense_rate: {fp32: 43 GFLOP/s}
calibration:
  when: earlier
  how: by hand
  topology: base
  gemm_efficiency: 0.5
# a comment of the old block
)";
    const Topology base = parse_topology(base_text, "base.yaml");
    CalibrationResult r = measured();
    r.peak_gflops = 43;
    const std::string text = topology_yaml_with_base(base_text, base, r);
    const Topology t = parse_topology(text, "out.yaml");
    EXPECT_EQ(t.num_nodes, 4);
    EXPECT_EQ(t.intra_fabric, IntraFabric::nvswitch);
    EXPECT_DOUBLE_EQ(t.nic.bandwidth_GBps, 12.5);
    ASSERT_TRUE(t.calibration.has_value());
    EXPECT_EQ(t.calibration->measured_topology, "base");
    EXPECT_EQ(t.calibration->when, r.when);
    EXPECT_NEAR(t.calibration->gemm_efficiency.value_or(0), 21.5 / 43, 1e-4);
    EXPECT_THAT(text, testing::Not(HasSubstr("by hand")));

    // Measured above the base's nominal rate: kept as measured (it was once clamped to 1, and the
    // simulator then computed below the rate it had seen), and the network computes at that rate.
    r.peak_gflops = 10.75;
    const Topology faster = parse_topology(topology_yaml_with_base(base_text, base, r), "out.yaml");
    EXPECT_NEAR(faster.calibration->gemm_efficiency.value_or(0), 2.0, 1e-4);
    const Network network(faster, sim_node_map(faster, 8), NicModel::per_port);
    EXPECT_NEAR(network.device_flops_per_s(), 2.0 * 43e9, 1e3);
}

}  // namespace
}  // namespace expar
