// build/sim_scale_bench: how long the simulator takes for one MoE layer step (forward + backward) at
// thousands of ranks, on one core. Prints graph size, rate computations (and how many resumed a previous
// solution), the wall and CPU time of predict_layer() (graph build + simulation + bound) and the wall
// time of the simulation alone, events/s and peak memory per configuration (docs/simulator.md "Scale").
// From 16,384 ranks the traffic matrix is int32 (LayerWork::rows32). Usage:
//   sim_scale_bench [--ranks 4096,16384] [--schedule plain,pairwise,hierarchical] [--skew 0,1.2]
//                   [--topology topology/dgx-h100.yaml] [--tokens 4096] [--top-k 2] [--window 0]
//                   [--dump FILE]
// --dump appends, per case, the step, the bound and every rank's end and phases as raw doubles, to
// compare predictions across engine versions.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <sstream>
#include <string>
#include <vector>

#include "check.h"
#include "schedule_graph.h"
#include "timer.h"
#include "topology.h"

namespace {

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');) out.push_back(item);
    return out;
}

// Rows rank a sends to rank b: tokens·k assignments of every rank spread over destinations with
// Zipf(skew) weights over ranks (rank 0 hottest, 1/(b+1)^skew), rounded down, remainders to the hottest.
template <typename Count>
void make_rows(int P, int64_t tokens, int k, double skew, std::vector<Count>& rows) {
    std::vector<double> weight(P);
    double total = 0;
    for (int b = 0; b < P; ++b) total += weight[b] = std::pow(b + 1.0, -skew);
    std::vector<int64_t> row(P);
    int64_t assigned = 0;
    for (int b = 0; b < P; ++b) assigned += row[b] = static_cast<int64_t>(tokens * k * weight[b] / total);
    row[0] += tokens * k - assigned;
    rows.resize(static_cast<size_t>(P) * P);
    for (int a = 0; a < P; ++a)
        for (int b = 0; b < P; ++b)
            rows[static_cast<size_t>(a) * P + b] = static_cast<Count>(row[(b + a % 7) % P]);
}

}  // namespace

int main(int argc, char** argv) {
    std::string ranks = "4096", schedules = "plain,pairwise,hierarchical", skews = "0,1.2";
    std::string topology_path = std::string(EXPAR_SOURCE_DIR) + "/topology/dgx-h100.yaml";
    int64_t tokens = 4096;
    int top_k = 2;
    double window = 0;
    std::string dump_path;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string key = argv[i], value = argv[i + 1];
        if (key == "--ranks")
            ranks = value;
        else if (key == "--schedule")
            schedules = value;
        else if (key == "--skew")
            skews = value;
        else if (key == "--topology")
            topology_path = value;
        else if (key == "--tokens")
            tokens = std::atoll(value.c_str());
        else if (key == "--top-k")
            top_k = std::atoi(value.c_str());
        else if (key == "--window")
            window = std::atof(value.c_str());
        else if (key == "--dump")
            dump_path = value;
        else {
            std::fprintf(stderr, "sim_scale_bench: unknown option '%s'\n", key.c_str());
            return 1;
        }
    }
    try {
        const expar::Topology topology = expar::load_topology(topology_path);
        std::printf("%-7s %-13s %5s %10s %10s %9s %9s %9s %8s %8s %8s %11s %12s %9s %10s %6s\n", "ranks",
                    "schedule", "skew", "tasks", "events", "rate_comp", "partial", "peak_flows", "total_s",
                    "cpu_s", "sim_s", "events/s", "peak_MiB", "step_ms", "bound_ms", "eff");
        for (const std::string& r : split(ranks)) {
            const int P = std::atoi(r.c_str());
            const expar::Network net(topology, expar::sim_node_map(topology, P));
            // From 16,384 ranks the matrix is int32 (LayerWork::rows32): 1 GiB instead of 2.
            const bool narrow = P >= 16384;
            std::vector<int64_t> rows;
            std::vector<int32_t> rows32;
            for (const std::string& skew : split(skews)) {
                if (narrow)
                    make_rows(P, tokens, top_k, std::atof(skew.c_str()), rows32);
                else
                    make_rows(P, tokens, top_k, std::atof(skew.c_str()), rows);
                expar::LayerWork w;
                w.num_ranks = P;
                w.rows = narrow ? nullptr : rows.data();
                w.rows32 = narrow ? rows32.data() : nullptr;
                w.bytes_per_row = 4096 * 2;                // d_model 4096, bf16
                w.flops_per_row = 2 * 2 * 4096.0 * 14336;  // two matrices, d_ff 14336
                w.route_flops = 2.0 * tokens * 4096 * P;
                w.count_bytes = 8.0 * P;
                for (const std::string& name : split(schedules)) {
                    expar::ScheduleSpec spec;
                    spec.kind = expar::parse_enum<expar::ScheduleKind>(name, "schedule");
                    spec.group_size = net.ranks_per_node();
                    expar::SimOptions options;
                    options.rate_window = window;
                    const double t0_s = expar::now_s();
                    const std::clock_t cpu0 = std::clock();
                    const expar::LayerPrediction p = expar::predict_layer(net, w, spec, options);
                    const double total_s = expar::now_s() - t0_s;
                    const double cpu_s = static_cast<double>(std::clock() - cpu0) / CLOCKS_PER_SEC;
                    std::printf(
                        "%-7d %-13s %5s %10lld %10lld %9lld %9lld %9lld %8.3f %8.3f %8.3f %11.3g %12.1f "
                        "%9.3f "
                        "%10.3f "
                        "%6.3f\n",
                        P, name.c_str(), skew.c_str(), static_cast<long long>(p.num_tasks),
                        static_cast<long long>(p.sim.num_events),
                        static_cast<long long>(p.sim.num_rate_computations),
                        static_cast<long long>(p.sim.num_partial_rate_computations),
                        static_cast<long long>(p.sim.peak_active_flows), total_s, cpu_s, p.sim.wall_s,
                        p.sim.events_per_s, p.sim.peak_rss_bytes / 1048576.0, p.step_s * 1e3,
                        p.bound.total_s * 1e3, p.efficiency);
                    std::fflush(stdout);
                    if (!dump_path.empty()) {
                        std::FILE* f = std::fopen(dump_path.c_str(), "ab");
                        EXPAR_REQUIRE(f, "sim_scale_bench: cannot write " << dump_path);
                        const double head[2] = {p.step_s, p.bound.total_s};
                        std::fwrite(head, sizeof(double), 2, f);
                        std::fwrite(p.rank_end_s.data(), sizeof(double), p.rank_end_s.size(), f);
                        std::fwrite(p.phase_s.data(), sizeof(double), p.phase_s.size(), f);
                        std::fclose(f);
                    }
                }
            }
        }
    } catch (const expar::Error& e) {
        std::fprintf(stderr, "sim_scale_bench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
