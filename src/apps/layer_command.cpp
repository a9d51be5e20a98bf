#include "layer_command.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <vector>

#include "blas.h"
#include "check.h"
#include "comm.h"
#include "expert_ffn.h"
#include "layer_io.h"
#include "moe_layer.h"
#include "options.h"
#include "output_paths.h"
#include "rng.h"
#include "sample_stats.h"
#include "synthetic.h"
#include "timer.h"
#include "topology.h"

namespace expar {

namespace {

// GFLOP/s the expert GEMMs achieve on n rows in isolation: one expert's forward, backward_data and
// backward_weights through `experts` (the layer's own expert compute: GEMMs, bias and activation, no
// exchange), best of `repeats`. FLOPs as the layer counts them: expert_ffn_forward_flops, backward twice.
double measure_expert_gflops(ExpertCompute& experts, int64_t n, const LayerConfig& c, int repeats) {
    if (n <= 0) return 0;
    const int64_t d = c.d_model, f = c.d_ff;
    const ExpertShape shape{d, f, c.activation};
    const bool gated = has_gate_matrix(c.activation), bias = c.expert_bias;
    std::vector<float> x(n * d, 0.5f), dy(n * d, 0.5f), y(n * d), dx(n * d);
    std::vector<float> w1(d * f, 0.01f), b1(bias ? f : 0, 0.01f), w2(f * d, 0.01f), b2(bias ? d : 0, 0.01f),
        w3(gated ? d * f : 0, 0.01f);
    std::vector<float> dw1(d * f), db1(b1.size()), dw2(f * d), db2(b2.size()), dw3(w3.size());
    std::vector<float> h(n * f), g(gated ? n * f : 0), a(n * f), dh(n * f);
    auto or_null = [](std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
    const ExpertWeights w{w1.data(), or_null(b1), w2.data(), or_null(b2), or_null(w3)};
    const ExpertGrads grads{dw1.data(), or_null(db1), dw2.data(), or_null(db2), or_null(dw3)};
    const ExpertActivations acts{h.data(), or_null(g), a.data(), dh.data()};
    double best = std::numeric_limits<double>::max();
    for (int r = 0; r < repeats; ++r) {
        const double t0 = now_s();
        experts.forward(y.data(), acts, x.data(), w, n, shape);
        experts.backward_data(dx.data(), dy.data(), acts, w, n, shape);
        experts.backward_weights(grads, dy.data(), x.data(), acts, n, shape);
        best = std::min(best, now_s() - t0);
    }
    return 3.0 * expert_ffn_forward_flops(n, shape) / best / 1e9;
}

// The node map (real or emulated) and the rates of the topology file, if one is given.
LayerCluster make_cluster(const LayerRunOptions& options, int rank) {
    NodeMap nodes = make_node_map(MPI_COMM_WORLD, options.cluster.ranks_per_node);
    if (options.cluster.topology_path.empty()) return LayerCluster{std::move(nodes)};
    const Topology topology = load_topology(options.cluster.topology_path);
    const LayerCluster cluster = cluster_with_topology_rates(std::move(nodes), topology, kLayerPrecision);
    if (rank == 0 && topology.devices_per_node != cluster.nodes.ranks_per_node)
        std::fprintf(stderr,
                     "expar: note: %s describes %d devices per node, this run has %d ranks per node; "
                     "its rates are used as given\n",
                     options.cluster.topology_path.c_str(), topology.devices_per_node,
                     cluster.nodes.ranks_per_node);
    return cluster;
}

}  // namespace

int run_layer_command(int argc, char** argv, bool print_help) {
    LayerRunOptions options;
    Attributes attributes;
    if (!parse_layer_options(argc, argv, print_help, &options, &attributes)) return 0;
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), rank = comm.rank();
    const LayerConfig& c = options.layer;
    validate(c, P);
    require_distinct_paths(comm,
                           {{"--config", options.config_file}, {"--topology", options.cluster.topology_path}},
                           {{"--log", options.output.log_path}, {"--dump", options.output.dump_path}});
    blas_set_num_threads(options.output.blas_threads);

    const LayerCluster cluster = make_cluster(options, rank);
    BlasExpertCompute experts;
    MoeLayer layer(c, comm, experts, 0, &cluster);
    layer.init_params(options.seed);
    const int64_t T = c.tokens_per_rank, d = c.d_model, E = c.num_experts;
    std::vector<float> x(T * d), dy(T * d), y(T * d), dx(T * d);
    std::unique_ptr<LayerLog> log;
    if (!options.output.log_path.empty())
        log = std::make_unique<LayerLog>(comm, options.output.log_path, attributes, c);

    const int64_t total_steps = options.warmup + options.steps;
    std::vector<double> step_s(options.steps), phase_s(options.steps * kNumPhases), a2a_s(options.steps);
    std::vector<double> tokens_per_s(options.steps), a2a_gbps(options.steps), expert_gflops(options.steps);
    std::vector<double> drop_fraction(options.steps), load_min(options.steps), load_mean(options.steps),
        load_max(options.steps), redirected(options.steps), shadowed(options.steps),
        intra_bytes(options.steps), inter_bytes(options.steps);
    // Per step, max over ranks: each phase, the step, the alltoallv time (kTimes values).
    constexpr int kTimes = kNumPhases + 2;
    std::vector<double> times(kTimes);
    for (int64_t step = 0; step < total_steps; ++step) {
        synthetic_rows(x.data(), options.seed, kStreamTokens, step, rank * T, T, d);
        synthetic_rows(dy.data(), options.seed, kStreamUpstreamGrad, step, rank * T, T, d);
        if (step == options.inject_nan_step && rank == P - 1) x[0] = std::numeric_limits<float>::quiet_NaN();
        comm.barrier();
        const double t0 = now_s();
        layer.zero_grads();
        layer.forward(y.data(), x.data(), step, options.seed);
        layer.backward(dx.data(), dy.data());
        layer.allreduce_router_grads();
        const double elapsed = now_s() - t0;
        if (step == 0 && !options.output.dump_path.empty())
            write_layer_dump(comm, options.output.dump_path, attributes, layer, x.data(), dy.data(), y.data(),
                             dx.data(), options.seed, step);
        if (options.learning_rate > 0) layer.sgd_update(static_cast<float>(options.learning_rate));

        // A step that diverged (a large --lr) must not report timings as if it had run: fail on every rank.
        const LayerStepStats& st = layer.stats();
        double diverged = std::isfinite(st.aux_loss) && std::isfinite(st.z_loss) &&
                                  std::all_of(y.begin(), y.end(), [](float v) { return std::isfinite(v); })
                              ? 0.0
                              : 1.0;
        comm.allreduce_max_f64(&diverged, 1);
        EXPAR_REQUIRE(diverged == 0, "the layer's output or router losses are not finite at step "
                                         << step << (options.learning_rate > 0 ? " (--lr too large?)" : ""));
        std::copy(st.phase_s, st.phase_s + kNumPhases, times.begin());
        times[kNumPhases] = elapsed;
        times[kNumPhases + 1] = st.alltoallv_s;
        comm.allreduce_max_f64(times.data(), kTimes);
        // Rates of the slowest rank (min over ranks): alltoallv bytes/s and expert FLOP/s.
        double rates[2] = {
            static_cast<double>(st.alltoallv_bytes_sent) / std::max(st.alltoallv_s, 1e-12),
            st.expert_flops / std::max(st.phase_s[kFwdExpert] + st.phase_s[kBwdExpert], 1e-12)};
        comm.allreduce_min_f64(rates, 2);
        // Bytes on each link class: the busiest rank.
        double bytes[2] = {static_cast<double>(st.bytes_intra_node),
                           static_cast<double>(st.bytes_inter_node)};
        comm.allreduce_max_f64(bytes, 2);
        const double step_time = times[kNumPhases];
        const double rate = static_cast<double>(P * T) / step_time;
        if (log) {
            log->append(step, layer, elapsed, rate);
            if ((step + 1) % options.output.log_flush_every == 0) log->flush();
        }
        if (step < options.warmup) continue;
        const int64_t i = step - options.warmup;
        step_s[i] = step_time;
        for (int p = 0; p < kNumPhases; ++p) phase_s[i * kNumPhases + p] = times[p];
        a2a_s[i] = times[kNumPhases + 1];
        tokens_per_s[i] = rate;
        a2a_gbps[i] = rates[0] / 1e9;
        expert_gflops[i] = rates[1] / 1e9;
        redirected[i] = static_cast<double>(st.num_redirected_global);
        shadowed[i] = st.num_shadowed;
        intra_bytes[i] = bytes[0];
        inter_bytes[i] = bytes[1];
        const DispatchLayout& h = layer.layout();
        int64_t requested = 0, received = 0, lo = std::numeric_limits<int64_t>::max(), hi = 0;
        for (int64_t e = 0; e < E; ++e) {
            int64_t load = 0;
            for (int r = 0; r < P; ++r) {
                requested += h.requested[r * E + e];
                load += h.allowed[r * E + e];
            }
            received += load;
            lo = std::min(lo, load);
            hi = std::max(hi, load);
        }
        drop_fraction[i] = requested ? 1.0 - static_cast<double>(received) / requested : 0.0;
        load_min[i] = static_cast<double>(lo);
        load_max[i] = static_cast<double>(hi);
        load_mean[i] = static_cast<double>(received) / E;
    }
    if (log) log->flush();  // the partial file is complete even if what follows fails

    // The expert FFN alone on the same shapes: rows per expert of a balanced step.
    const int64_t rows_per_expert =
        std::max<int64_t>(1, static_cast<int64_t>(std::llround(median(load_mean))));
    double alone_gflops = measure_expert_gflops(experts, rows_per_expert, c, 3);
    comm.allreduce_min_f64(&alone_gflops, 1);

    if (rank == 0) {
        const double step_median = median(step_s);
        std::printf(
            "expar layer: %d ranks, E=%lld k=%d gate=%s cf=%g (%s, %s) d_model=%lld d_ff=%lld %s, "
            "%lld tokens/rank, %lld steps (+%lld warm-up)\n",
            P, (long long)E, c.top_k, to_string(c.gate), c.capacity_factor, to_string(c.capacity_scope),
            to_string(c.drop_policy), (long long)c.d_model, (long long)c.d_ff, to_string(c.activation),
            (long long)T, (long long)options.steps, (long long)options.warmup);
        std::printf("%s\n", blas_description().c_str());
        std::printf("schedule %s", to_string(c.schedule));
        if (c.schedule == ScheduleKind::pairwise) std::printf(" (group size %d)", effective_group_size(c, P));
        std::printf(", %d node%s x %d ranks%s", cluster.nodes.num_nodes,
                    cluster.nodes.num_nodes > 1 ? "s" : "", cluster.nodes.ranks_per_node,
                    cluster.nodes.emulated ? " (emulated)" : "");
        if (!options.cluster.topology_path.empty())
            std::printf(", topology %s", options.cluster.topology_path.c_str());
        std::printf(", gate-topology %s, node-limit %d, router-bias %g, shadow %s\n",
                    to_string(c.gate_topology), c.node_limit, c.router_bias_rate, c.shadow ? "on" : "off");
        std::printf("\n%-24s %12s %8s\n", "phase", "time (ms)", "share");
        for (int p = 0; p < kNumPhases; ++p) {
            std::vector<double> values(options.steps);
            for (int64_t i = 0; i < options.steps; ++i) values[i] = phase_s[i * kNumPhases + p];
            const double ms = median(values) * 1e3;
            std::printf("%-24s %12.3f %7.1f%%\n", to_string(static_cast<Phase>(p)), ms,
                        100.0 * ms / (step_median * 1e3));
        }
        std::printf("%-24s %12.3f %7.1f%%\n", "step", step_median * 1e3, 100.0);
        std::printf("(median over steps of the max over ranks)\n\n");
        std::printf("throughput          %12.0f tokens/s (forward + backward, %lld tokens per step)\n",
                    median(tokens_per_s), (long long)(P * T));
        std::printf(
            "dropped             %12.2f %% of routed assignments (capacity %lld tokens per expert per %s "
            "group)\n",
            100.0 * median(drop_fraction), (long long)layer.layout().capacity, to_string(c.capacity_scope));
        std::printf("expert load         %12.0f min / %.0f mean / %.0f max tokens received per step\n",
                    median(load_min), median(load_mean), median(load_max));
        std::printf(
            "expert GEMM rate    %12.1f GFLOP/s per rank (slowest rank); the expert FFN alone (forward + "
            "backward, %lld rows) %.1f GFLOP/s (%.0f%%)\n",
            median(expert_gflops), (long long)rows_per_expert, alone_gflops,
            100.0 * median(expert_gflops) / std::max(alone_gflops, 1e-12));
        std::printf(
            "token exchange      %12.2f GB/s per rank (bytes sent to other ranks / time in or waiting on the "
            "exchange, slowest rank; %.3f ms per step over 4 exchanges)\n",
            median(a2a_gbps), median(a2a_s) * 1e3);
        std::printf("link bytes          %12.3f MB intra-node, %.3f MB inter-node per step (busiest rank)\n",
                    median(intra_bytes) / 1e6, median(inter_bytes) / 1e6);
        if (c.gate_topology != GateTopology::none)
            std::printf(
                "redirected          %12.0f assignments per step moved on-node (limit L = %lld per rank)\n",
                median(redirected), (long long)layer.max_offnode());
        if (c.shadow) std::printf("shadowed            %12.1f experts per step (median)\n", median(shadowed));
        if (log) std::printf("log                 %s\n", options.output.log_path.c_str());
        if (!options.output.dump_path.empty())
            std::printf("dump                %s\n", options.output.dump_path.c_str());
    }
    if (log) log->commit(comm);  // the run succeeded: the log replaces the file (docs/hdf5.md, Output files)
    return 0;
}

}  // namespace expar
