// `expar calibrate`: measures this machine or cluster — MPI point-to-point α (latency) and β
// (1/bandwidth) within and across nodes, all-to-all efficiency by message size, the expert FFN, router and
// row-loop rates on the real shapes, asynchronous progress, the exchange wait after compute — and writes a
// topology file (docs/topology.md) whose calibration block records them.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "comm.h"
#include "config.h"
#include "node_map.h"
#include "topology.h"

namespace expar {

struct CalibrateOptions {
    int64_t min_bytes = 8, max_bytes = 4 << 20, step_factor = 4;  // ping-pong message sizes [bytes]
    int64_t pingpong_iters = 50;                                  // round trips per repetition
    int64_t a2a_min_bytes = 1024, a2a_max_bytes = 1 << 20;        // all-to-all, bytes per peer
    int64_t a2a_iters = 20;                                       // timed exchanges per size
    int64_t repetitions = 7;                                      // medians over these
    int64_t d_model = 512, d_ff = 2048;
    Activation activation = Activation::gelu;
    int64_t gemm_tokens = 512;  // rows per expert in the GEMM measurement
    double peak_gflops = 0;     // nominal device rate; 0 = from the base file, else unknown
    int64_t num_experts = 8, top_k = 2, gate_tokens = 1024;  // the router measurement's E, k and tokens
};

// One-way time of one message size (half the median round trip).
struct PingPongPoint {
    double bytes = 0;
    double time_us = 0;
};

// t(m) = latency + m / bandwidth, fitted to minimise the relative residuals Σ((t_i − fit_i) / t_i)², so
// small messages (latency) weigh as much as large ones (bandwidth). A negative latency is refitted as 0;
// times that do not grow with size give the bandwidth's lower bound, largest size / its time.
struct AlphaBetaFit {
    double latency_us = 0;        // α
    double bandwidth_GBps = 0;    // 1 / β
    double r_squared = 0;         // of the fit in the weighted sense, 1 = perfect
    double max_rel_residual = 0;  // max_i |t_i − fit_i| / t_i
};

AlphaBetaFit fit_alpha_beta(const std::vector<PingPongPoint>& points);

struct AlltoallPoint {
    double bytes_per_peer = 0;
    double time_us = 0;     // median over iterations of the slowest rank
    double busbw_GBps = 0;  // (P − 1) · bytes_per_peer / time (nccl-tests busbw of all-to-all)
    double efficiency = 0;  // busbw / reference bandwidth, unclamped
};

struct CalibrationResult {
    std::string when;  // ISO 8601 UTC
    std::string how;   // command line, host, ranks
    std::string host;
    int num_ranks = 0, num_nodes = 0, ranks_per_node = 0;
    bool emulated = false;
    std::vector<PingPongPoint> intra_points, inter_points;  // empty when not measured
    std::optional<AlphaBetaFit> intra, inter;
    int intra_peer = -1, inter_peer = -1;  // rank 0's partner in each measurement
    std::vector<AlltoallPoint> alltoall;
    double alltoall_reference_GBps = 0;  // the slower fitted link class the all-to-all crosses
    double gemm_gflops = 0;  // slowest rank's expert FFN rate (forward + backward), from a common start
    double gemm_gflops_median_rank = 0;  // median over ranks
    double gemm_alone_gflops = 0;        // rank 0 alone, the others asleep; 0 = not measured (1 rank)
    double peak_gflops = 0;              // nominal, 0 = unknown
    // The layer's row work (pack, combine and their backward: 9 row passes per kept assignment), every
    // rank at once on gate_tokens · top_k rows of d_model floats, slowest rank [GB/s read + written]. The
    // loops run with k = 2 whatever --top-k (the rows are the same; the per-token sums are k = 2's).
    double row_work_GBps = 0;
    // Progress: rank 0 posts a max_bytes send to its intra (else inter) peer; both wait at once (transfer)
    // or compute for twice that first. Waiting >= half the transfer time after computing means the
    // transport moves bytes only inside MPI calls. -1 = not measured (1 rank).
    double progress_transfer_us = -1, progress_wait_us = -1;
    bool async_progress = true;
    // The layer's router (gate_forward, gate_backward) on gate_tokens tokens, each half after the step
    // stand-in (step_footprint_shape), every rank at once, slowest rank: router FLOPs (2·T·d·E forward,
    // 4·T·d·E backward) per second [GFLOP/s].
    double router_forward_gflops = 0, router_backward_gflops = 0;
    int ranks_per_host = 0, cores_per_host = 0;  // rank 0's host: MPI ranks on it, cores they may use
    // An exchange right after the expert phase, beyond the same exchange after a barrier [us]; -1 = not
    // measured (1 rank). Where ranks outnumber cores they reach it late and in turns.
    double exchange_wait_us = -1;
    CalibrateOptions options;
};

// The shape of calibrate's step stand-in, which leaves the caches as a layer step's other phases do before
// each timed piece: ExpertBlocks (weights, their gradients, the rows in and out, the activations) for every
// row a rank receives in a step, gate_tokens · top_k. At most 256 MiB a rank: the experts' weights take at
// most half (at least one expert, even past it), the rows the rest (at least one per expert).
struct StepFootprintShape {
    int64_t num_experts = 1, rows_per_expert = 1;
};
StepFootprintShape step_footprint_shape(const CalibrateOptions& o, int64_t num_local_experts);

// Rows of the row-work measurement: gate_tokens · top_k, made even (at least 2).
int64_t row_work_rows(const CalibrateOptions& o);

// Collective over comm (MPI_COMM_WORLD's ranks): every rank calls it; rank 0's result is complete.
CalibrationResult calibrate_measure(MpiComm& comm, const NodeMap& map, const CalibrateOptions& options);

// The calibration block (YAML text, "calibration:" at column 0) for a topology named measured_topology.
std::string calibration_yaml(const CalibrationResult& result, const std::string& measured_topology);

// A whole topology file from the measurement alone: nodes × ranks per node of the run, shared-memory
// fabric, the fitted links as nominal links, the measured (or --peak-gflops) rate as dense_rate.fp32.
std::string topology_yaml_from_measurement(const CalibrationResult& result, const std::string& name);

// base_text with its calibration block (if any) replaced by this one; everything else kept as written.
std::string topology_yaml_with_base(const std::string& base_text,
                                    const Topology& base,
                                    const CalibrationResult& result);

}  // namespace expar
