#include "calibrate_command.h"

#include <mpi.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "blas.h"
#include "calibrate.h"
#include "check.h"
#include "comm.h"
#include "node_map.h"
#include "options.h"
#include "output_paths.h"
#include "staged_output.h"
#include "text_file.h"
#include "topology.h"

namespace po = boost::program_options;

namespace expar {

namespace {

struct CalibrateCommandOptions {
    CalibrateOptions measure;
    std::string out_path, base_path, name = "calibrated", config_file;
    int ranks_per_node = 0;
    int blas_threads = 1;
};

po::options_description calibrate_options_description(CalibrateCommandOptions* o) {
    CalibrateOptions& m = o->measure;
    po::options_description general = general_options(&o->config_file);
    general.add_options()("out", po::value<std::string>(&o->out_path)->default_value(""),
                          "topology file to write (FILE.yaml, docs/topology.md); empty = print it")(
        "base", po::value<std::string>(&o->base_path)->default_value(""),
        "topology file whose nodes, devices, fabric, links and rates are kept; only its calibration block "
        "is replaced. Empty = describe this run's ranks from the measurement")(
        "name", po::value<std::string>(&o->name)->default_value(o->name),
        "name of the written topology (without --base)")(
        "ranks-per-node", po::value<int>(&o->ranks_per_node)->default_value(o->ranks_per_node),
        kRanksPerNodeHelp)("blas-threads", po::value<int>(&o->blas_threads)->default_value(o->blas_threads),
                           kBlasThreadsHelp);
    po::options_description links("Point-to-point and all-to-all");
    links.add_options()("min-bytes", po::value<int64_t>(&m.min_bytes)->default_value(m.min_bytes),
                        "smallest ping-pong message [bytes]")(
        "max-bytes", po::value<int64_t>(&m.max_bytes)->default_value(m.max_bytes),
        "largest ping-pong message [bytes]")("step-factor",
                                             po::value<int64_t>(&m.step_factor)->default_value(m.step_factor),
                                             "each size is the previous one times this, for both sweeps [1]")(
        "pingpong-iters", po::value<int64_t>(&m.pingpong_iters)->default_value(m.pingpong_iters),
        "round trips per repetition [1]")(
        "a2a-min-bytes", po::value<int64_t>(&m.a2a_min_bytes)->default_value(m.a2a_min_bytes),
        "smallest all-to-all size: bytes each rank sends to each peer [bytes]")(
        "a2a-max-bytes", po::value<int64_t>(&m.a2a_max_bytes)->default_value(m.a2a_max_bytes),
        "largest all-to-all size [bytes per peer]")(
        "a2a-iters", po::value<int64_t>(&m.a2a_iters)->default_value(m.a2a_iters),
        "timed all-to-alls per size [1]")(
        "repetitions", po::value<int64_t>(&m.repetitions)->default_value(m.repetitions),
        "repetitions of each ping-pong and GEMM measurement; the median is kept [1]");
    po::options_description gemm("Expert GEMM and router");
    gemm.add_options()("d-model", po::value<int64_t>(&m.d_model)->default_value(m.d_model),
                       "model width d [elements]")("d-ff", po::value<int64_t>(&m.d_ff)->default_value(m.d_ff),
                                                   "expert hidden width f [elements]")(
        "activation", enum_value(&m.activation), ("expert activation: " + enum_help<Activation>()).c_str())(
        "gemm-tokens", po::value<int64_t>(&m.gemm_tokens)->default_value(m.gemm_tokens),
        "rows (tokens) of one expert block; each of the --experts / ranks local experts computes one "
        "[tokens]")(
        "experts", po::value<int64_t>(&m.num_experts)->default_value(m.num_experts),
        "experts E: the router measurement's, and E / ranks local experts for the GEMM (a multiple "
        "of the rank count) [1]")("top-k", po::value<int64_t>(&m.top_k)->default_value(m.top_k),
                                  "experts per token k of the router; the row work times T*k rows [1]")(
        "gate-tokens", po::value<int64_t>(&m.gate_tokens)->default_value(m.gate_tokens),
        "tokens per rank T of the router and row-work measurements [tokens]")(
        "peak-gflops", po::value<double>(&m.peak_gflops)->default_value(m.peak_gflops),
        "nominal dense fp32 rate of one rank for gemm_efficiency [GFLOP/s]; 0 = dense_rate.fp32 of --base, "
        "else unknown");
    po::options_description all;
    all.add(general).add(links).add(gemm);
    return all;
}

void validate(const CalibrateCommandOptions& o) {
    const CalibrateOptions& m = o.measure;
    EXPAR_REQUIRE(m.min_bytes > 0 && m.min_bytes <= (1 << 30),
                  "--min-bytes must be in 1..2^30, got " << m.min_bytes);
    EXPAR_REQUIRE(m.max_bytes >= m.min_bytes && m.max_bytes <= (1 << 30),
                  "--max-bytes must be in --min-bytes..2^30, got " << m.max_bytes);
    EXPAR_REQUIRE(m.step_factor >= 2, "--step-factor must be >= 2, got " << m.step_factor);
    EXPAR_REQUIRE(m.pingpong_iters > 0, "--pingpong-iters must be positive, got " << m.pingpong_iters);
    EXPAR_REQUIRE(m.a2a_min_bytes > 0, "--a2a-min-bytes must be positive, got " << m.a2a_min_bytes);
    EXPAR_REQUIRE(m.a2a_max_bytes >= m.a2a_min_bytes && m.a2a_max_bytes <= (1 << 28),
                  "--a2a-max-bytes must be in --a2a-min-bytes..2^28, got " << m.a2a_max_bytes);
    EXPAR_REQUIRE(m.a2a_iters > 0, "--a2a-iters must be positive, got " << m.a2a_iters);
    EXPAR_REQUIRE(m.repetitions > 0, "--repetitions must be positive, got " << m.repetitions);
    EXPAR_REQUIRE(m.d_model > 0, "--d-model must be positive, got " << m.d_model);
    EXPAR_REQUIRE(m.d_ff > 0, "--d-ff must be positive, got " << m.d_ff);
    EXPAR_REQUIRE(m.gemm_tokens > 0, "--gemm-tokens must be positive, got " << m.gemm_tokens);
    EXPAR_REQUIRE(m.num_experts >= 1 && m.num_experts <= (1 << 20),
                  "--experts must be in 1..2^20, got " << m.num_experts);
    EXPAR_REQUIRE(m.top_k >= 1 && m.top_k <= m.num_experts,
                  "--top-k must be in 1..--experts (" << m.num_experts << "), got " << m.top_k);
    EXPAR_REQUIRE(m.gate_tokens > 0, "--gate-tokens must be positive, got " << m.gate_tokens);
    EXPAR_REQUIRE(m.peak_gflops >= 0, "--peak-gflops must be >= 0 (0 = unknown), got " << m.peak_gflops);
    validate_blas_threads(o.blas_threads);
    EXPAR_REQUIRE(!o.name.empty(), "--name must not be empty");
}

std::string command_line(int argc, char** argv) {
    std::string text = "expar calibrate";
    for (int i = 1; i < argc; ++i) text += std::string(" ") + argv[i];
    return text;
}

void print_points(const char* title, const std::vector<PingPongPoint>& points, const AlphaBetaFit& fit) {
    std::printf("\n# %s\n# %12s %12s %12s %11s\n", title, "size(B)", "time(us)", "fit(us)", "GB/s");
    for (const PingPongPoint& p : points)
        std::printf("  %12.0f %12.3f %12.3f %11.3f\n", p.bytes, p.time_us,
                    fit.latency_us + p.bytes / (fit.bandwidth_GBps * 1e3), p.bytes / p.time_us / 1e3);
    std::printf("# fit: alpha %.3f us, beta %.6g us/B (%.3f GB/s); R^2 %.4f, max relative residual %.1f%%\n",
                fit.latency_us, 1.0 / (fit.bandwidth_GBps * 1e3), fit.bandwidth_GBps, fit.r_squared,
                100 * fit.max_rel_residual);
}

}  // namespace

int run_calibrate_command(int argc, char** argv, bool print_help) {
    CalibrateCommandOptions o;
    po::variables_map vm;
    if (!parse_command_options(
            argc, argv, calibrate_options_description(&o),
            "usage: expar calibrate [options]\n\nMeasures MPI point-to-point latency and "
            "bandwidth within and across nodes, all-to-all efficiency by size and the expert "
            "GEMM rate, and writes a topology file with a calibration block.",
            print_help, &vm))
        return 0;
    validate(o);
    blas_set_num_threads(o.blas_threads);
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), me = comm.rank();
    const NodeMap map = make_node_map(MPI_COMM_WORLD, o.ranks_per_node);
    // Read the base before measuring: a bad file should not cost a minute of measurement.
    Topology base;
    std::string base_text;
    if (!o.base_path.empty()) {
        base_text = read_text_file(o.base_path, "topology file");
        base = parse_topology(base_text, o.base_path);
        if (o.measure.peak_gflops == 0) o.measure.peak_gflops = base.device_flops_per_s("fp32") / 1e9;
    }
    EXPAR_REQUIRE(
        P > 1 || !o.base_path.empty(),
        "expar calibrate needs at least 2 ranks to measure links (or --base FILE.yaml to record the GEMM "
        "rate alone)");
    EXPAR_REQUIRE(o.measure.num_experts % P == 0, "--experts " << o.measure.num_experts
                                                               << " is not divisible by the " << P
                                                               << " ranks (the GEMM runs on each rank's "
                                                                  "local experts, as in a layer)");
    require_distinct_paths(comm, {{"--config", o.config_file}, {"--base", o.base_path}},
                           {{"--out", o.out_path}});
    if (me == 0 && !o.base_path.empty() &&
        (base.devices_per_node != map.ranks_per_node || base.num_nodes != map.num_nodes))
        std::fprintf(
            stderr, "expar: note: %s describes %d node(s) x %d devices, this run has %d node(s) x %d ranks\n",
            o.base_path.c_str(), base.num_nodes, base.devices_per_node, map.num_nodes, map.ranks_per_node);

    CalibrationResult result = calibrate_measure(comm, map, o.measure);
    if (me != 0) return 0;
    std::ostringstream how;
    how << command_line(argc, argv) << " (host " << result.host << ", " << P << " ranks, " << map.num_nodes
        << " node(s) x " << map.ranks_per_node << " ranks"
        << (map.emulated ? " emulated by --ranks-per-node" : "") << ", " << blas_description() << ")";
    result.how = how.str();

    std::printf("# expar calibrate: %d ranks, %d node(s) x %d ranks (%s), host %s, %s\n", P, map.num_nodes,
                map.ranks_per_node, map.emulated ? "emulated by --ranks-per-node" : "MPI shared-memory split",
                result.host.c_str(), result.when.c_str());
    if (result.intra)
        print_points("point-to-point within a node (one-way time)", result.intra_points, *result.intra);
    if (result.inter)
        print_points("point-to-point across nodes (one-way time)", result.inter_points, *result.inter);
    if (!result.alltoall.empty()) {
        std::printf("\n# all-to-all (MPI_Alltoallv through TokenExchange plain), efficiency vs %.3f GB/s\n",
                    result.alltoall_reference_GBps);
        std::printf("# %12s %12s %12s %11s\n", "bytes/peer", "time(us)", "busbw(GB/s)", "efficiency");
        for (const AlltoallPoint& p : result.alltoall)
            std::printf("  %12.0f %12.2f %12.3f %11.3f\n", p.bytes_per_peer, p.time_us, p.busbw_GBps,
                        p.efficiency);
    }
    std::printf(
        "\n# expert GEMM (forward + backward), d_model %lld, d_ff %lld, %s, %lld rows: %.2f GFLOP/s "
        "slowest rank, %.2f median over ranks",
        (long long)o.measure.d_model, (long long)o.measure.d_ff, to_string(o.measure.activation),
        (long long)o.measure.gemm_tokens, result.gemm_gflops, result.gemm_gflops_median_rank);
    if (result.peak_gflops > 0)
        std::printf(" = %.1f%% of %.2f GFLOP/s nominal", 100 * result.gemm_gflops / result.peak_gflops,
                    result.peak_gflops);
    std::printf("\n");
    if (result.peak_gflops > 0 && result.gemm_gflops > result.peak_gflops)
        std::fprintf(stderr,
                     "expar: note: the measured GEMM rate %.2f GFLOP/s is above the nominal %.2f GFLOP/s "
                     "(gemm_efficiency %.3g > 1): the nominal rate is not this machine's peak\n",
                     result.gemm_gflops, result.peak_gflops, result.gemm_gflops / result.peak_gflops);
    std::printf(
        "# router (gate forward, backward), %lld tokens, E %lld, k %lld: %.2f, %.2f GFLOP/s slowest rank\n",
        (long long)o.measure.gate_tokens, (long long)o.measure.num_experts, (long long)o.measure.top_k,
        result.router_forward_gflops, result.router_backward_gflops);

    const std::string yaml = o.base_path.empty() ? topology_yaml_from_measurement(result, o.name)
                                                 : topology_yaml_with_base(base_text, base, result);
    parse_topology(yaml, o.out_path.empty() ? "calibration" : o.out_path);  // what we write must load
    if (o.out_path.empty()) {
        std::printf("\n%s", yaml.c_str());
        return 0;
    }
    write_text_file_staged(o.out_path, "--out", yaml);  // FILE.partial, renamed onto FILE when complete
    std::printf("# wrote %s\n", o.out_path.c_str());
    return 0;
}

}  // namespace expar
