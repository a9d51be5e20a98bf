#include "simulate_command.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "comm.h"
#include "git_revision.h"
#include "h5_file.h"
#include "layer_io.h"
#include "options.h"
#include "output_paths.h"
#include "routing.h"
#include "simulate.h"
#include "timer.h"

namespace po = boost::program_options;

namespace expar {

namespace {

// ---------------------------------------------------------------------------------------------------
// Options

struct SimulateCommandOptions {
    LayerConfig layer;
    std::string config_file;
    WorkloadOptions workload;
    RoutingOptions routing;
    std::string topology_path;
    int ranks = 0;
    int ranks_per_node = 0;
    std::string precision;  // empty = the topology's training precision (Topology::training_precision)
    NicModel nic_model = NicModel::per_port;
    Aggregation aggregation = Aggregation::automatic;
    double rate_window = 0;
    int64_t steps = 2;
    uint64_t seed = 1;
    bool backward = true;
    std::string log_path;
    int rank_detail_limit = 64;
    std::vector<std::string> sweeps;
};

po::options_description simulate_options_description(SimulateCommandOptions* o) {
    po::options_description general = general_options(&o->config_file);
    general.add_options()("topology", po::value<std::string>(&o->topology_path)->default_value(""),
                          "cluster file to simulate (topology/*.yaml, docs/topology.md); required")(
        "ranks", po::value<int>(&o->ranks)->default_value(o->ranks),
        "simulated ranks P (not the MPI size) [ranks]; 0 = the topology's nodes x devices per node")(
        "ranks-per-node", po::value<int>(&o->ranks_per_node)->default_value(o->ranks_per_node),
        "simulated ranks per node [ranks]; 0 = the topology's devices_per_node")(
        "precision", po::value<std::string>(&o->precision)->default_value(o->precision),
        "which dense_rate of the topology the expert and route FLOPs run at (fp32, fp16, bf16, ...); empty = "
        "the topology's training precision: bf16 if its dense_rate lists bf16, else fp16 if it lists fp16, "
        "else fp32. --dtype-bytes does not follow it")("nic-model", enum_value(&o->nic_model),
                                                       enum_help<NicModel>().c_str())(
        "aggregation", enum_value(&o->aggregation), enum_help<Aggregation>().c_str())(
        "rate-window", po::value<double>(&o->rate_window)->default_value(o->rate_window),
        "flow simulation: batch completions within this fraction of the interval [1]; 0 = exact max-min")(
        "steps", po::value<int64_t>(&o->steps)->default_value(o->steps), "simulated layer steps [steps]")(
        "seed", uint64_value(&o->seed), "seed of the routing draws")(
        "backward", po::value<bool>(&o->backward)->default_value(o->backward),
        "simulate the backward pass too (true|false)")(
        "log", po::value<std::string>(&o->log_path)->default_value(""),
        "HDF5 file of the results (FILE.h5; empty = none); schema in docs/hdf5.md, \"Simulator log\"")(
        "rank-detail-limit", po::value<int>(&o->rank_detail_limit)->default_value(o->rank_detail_limit),
        "write per-rank phases and count matrices to the log when P <= this [ranks]")(
        "sweep", po::value<std::vector<std::string>>(&o->sweeps)->composing(),
        "KEY=V1,V2,...: run every value of option KEY (repeatable: the cartesian product); a swept "
        "value replaces the option's value; points are spread over the MPI ranks");
    po::options_description all;
    all.add(general)
        .add(moe_layer_options(&o->layer, LayerInputs::standalone))
        .add(schedule_options(&o->layer))
        .add(workload_options_description(&o->workload))
        .add(routing_options_description(&o->routing));
    return all;
}

const char* const kUsage =
    "usage: expar simulate --topology FILE.yaml [options]\n\n"
    "Predicts steps of one MoE layer on the cluster of a topology file: who sends what is decided by the "
    "real gate, capacity and shadowing code, time by the simulator's flow-level network and schedule "
    "graphs. Prints per-phase times (max over ranks), the lower bound and efficiency = bound / "
    "predicted. docs/simulator.md.";

// A sweep point: (option, value) pairs replacing the command line's values.
using Overrides = std::vector<std::pair<std::string, std::string>>;

std::vector<std::string> split_commas(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) out.push_back(item);
    if (!text.empty() && text.back() == ',') out.push_back("");
    return out;
}

// The cartesian product of the --sweep arguments, first key slowest. One empty point without sweeps.
std::vector<Overrides> sweep_points(const std::vector<std::string>& sweeps,
                                    const po::options_description& d) {
    std::vector<Overrides> points(1);
    std::vector<std::string> keys;
    for (const std::string& sweep : sweeps) {
        const size_t eq = sweep.find('=');
        EXPAR_REQUIRE(eq != std::string::npos && eq > 0 && eq + 1 < sweep.size(),
                      "bad --sweep '" << sweep << "' (expected KEY=V1,V2,..., e.g. capacity-factor=1,1.25)");
        const std::string key = sweep.substr(0, eq);
        const std::vector<std::string> values = split_commas(sweep.substr(eq + 1));
        EXPAR_REQUIRE(d.find_nothrow(key, false) != nullptr,
                      "unknown --sweep key '" << key << "' (not an option of expar simulate)");
        EXPAR_REQUIRE(key != "sweep" && key != "config" && key != "log" && key != "help",
                      "--sweep key '" << key << "' cannot be swept");
        EXPAR_REQUIRE(std::find(keys.begin(), keys.end(), key) == keys.end(),
                      "--sweep key '" << key << "' given twice");
        for (const std::string& value : values)
            EXPAR_REQUIRE(!value.empty(), "bad --sweep '" << sweep << "': empty value");
        keys.push_back(key);
        std::vector<Overrides> next;
        for (const Overrides& point : points)
            for (const std::string& value : values) {
                next.push_back(point);
                next.back().emplace_back(key, value);
            }
        points = std::move(next);
    }
    return points;
}

std::string point_label(const Overrides& point) {
    std::string label;
    for (const auto& [key, value] : point) label += (label.empty() ? "" : ",") + key + "=" + value;
    return label;
}

// One configuration to simulate: its spec and its options as text (for the log).
struct Point {
    Overrides overrides;
    SimulateSpec spec;
    Attributes attributes;
    std::string topology_path;
    int moe_layers = 1;
    bool precision_is_default = true;  // --precision empty: the topology's training precision
};

// Parses the command line with the point's overrides first: the first stored value of an option wins, so
// a swept value beats the command line, which beats --config.
Point make_point(int argc, char** argv, const Overrides& overrides) {
    SimulateCommandOptions o;
    const po::options_description description = simulate_options_description(&o);
    po::variables_map vm;
    std::vector<std::string> override_args;
    for (const auto& [key, value] : overrides) {
        override_args.push_back("--" + key);
        override_args.push_back(value);
    }
    try {
        po::store(parse_command_line(override_args, description), vm);  // the caller names the sweep point
        po::store(parse_command_line(argc, argv, description), vm);
        store_config_file(description, &vm);
        po::notify(vm);
    } catch (const po::error& error) {
        EXPAR_FAIL(error.what());
    }

    Point point;
    point.overrides = overrides;
    point.attributes = options_as_attributes(vm);
    point.topology_path = o.topology_path;
    SimulateSpec& spec = point.spec;
    EXPAR_REQUIRE(!o.topology_path.empty(), "expar simulate needs --topology FILE.yaml (topology/*.yaml)");
    spec.topology = load_topology(o.topology_path);
    EXPAR_REQUIRE(o.ranks_per_node >= 0,
                  "--ranks-per-node must be >= 0 (0 = the topology's), got " << o.ranks_per_node);
    if (o.ranks_per_node > 0) spec.topology.devices_per_node = o.ranks_per_node;
    EXPAR_REQUIRE(o.ranks >= 0, "--ranks must be >= 0 (0 = the whole topology), got " << o.ranks);
    spec.num_ranks = o.ranks > 0 ? o.ranks : spec.topology.num_nodes * spec.topology.devices_per_node;
    point.precision_is_default = o.precision.empty();
    spec.precision = point.precision_is_default ? spec.topology.training_precision() : o.precision;
    spec.topology.device_flops_per_s(spec.precision);  // an unknown precision fails here, naming it
    spec.nic_model = o.nic_model;
    spec.aggregation = o.aggregation;
    EXPAR_REQUIRE(o.rate_window >= 0 && o.rate_window < 1,
                  "--rate-window must be in [0, 1), got " << o.rate_window);
    spec.sim.rate_window = o.rate_window;
    EXPAR_REQUIRE(o.steps > 0, "--steps must be positive (got " << o.steps << ")");
    spec.num_steps = o.steps;
    spec.backward = o.backward;
    EXPAR_REQUIRE(o.rank_detail_limit >= 0, "--rank-detail-limit must be >= 0, got " << o.rank_detail_limit);
    spec.rank_detail_limit = o.rank_detail_limit;
    finish_layer_options(vm, &o.layer);
    spec.workload = make_workload(o.workload, vm, &o.layer);  // a preset fills E, k, d, f, activation
    spec.layer = o.layer;
    validate(spec.layer, spec.num_ranks);
    spec.routing = make_routing_spec(o.routing, spec.layer.skew, o.seed);
    point.moe_layers = std::max(1, spec.workload.model.num_moe_layers);
    return point;
}

// ---------------------------------------------------------------------------------------------------
// Results as named arrays: the HDF5 log and the transfer between ranks walk the same table.

struct RunField {
    std::string name;   // dataset name
    std::string units;  // "us" fields are stored in seconds and scaled on writing
    std::vector<hsize_t> dims;
    std::vector<double>* f64 = nullptr;
    std::vector<int64_t>* i64 = nullptr;
};

std::vector<RunField> run_fields(SimulateRun& run) {
    const hsize_t S = run.num_steps, P = run.num_ranks, E = run.num_experts;
    std::vector<RunField> f = {
        {"step", "", {S}, nullptr, &run.step},
        {"phase_time_us", "us", {S, kNumSimPhases}, &run.phase_s, nullptr},
        {"phase_max_rank", "rank", {S, kNumSimPhases}, nullptr, &run.phase_rank},
        {"step_time_us", "us", {S}, &run.step_s, nullptr},
        {"bound_us", "us", {S}, &run.bound_s, nullptr},
        {"efficiency", "1", {S}, &run.efficiency, nullptr},
        {"bound_terms_us", "us", {S, kNumBoundTerms}, &run.bound_terms_s, nullptr},
        {"requested", "assignments", {S}, nullptr, &run.requested},
        {"dropped", "assignments", {S}, nullptr, &run.dropped},
        {"redirected", "assignments", {S}, nullptr, &run.redirected},
        {"shadowed", "experts", {S}, nullptr, &run.shadowed},
        {"capacity", "tokens per expert per scope group", {S}, nullptr, &run.capacity},
        {"link_bytes", "bytes", {S, kNumLinkClasses}, &run.link_bytes, nullptr},
        {"busiest_link_class", "index into classes", {S}, nullptr, &run.busiest_link_class},
        {"busiest_link_utilisation", "1", {S}, &run.busiest_link_utilisation, nullptr},
        {"sim_events", "events", {S}, nullptr, &run.num_events},
        {"sim_wall_s", "s", {S}, &run.sim_wall_s, nullptr},
    };
    if (run.has_rank_detail) {
        f.push_back({"rank_phase_time_us", "us", {S, P, kNumSimPhases}, &run.rank_phase_s, nullptr});
        f.push_back({"rank_time_us", "us", {S, P}, &run.rank_end_s, nullptr});
        f.push_back({"requested_counts", "assignments", {S, P, E}, nullptr, &run.requested_counts});
        f.push_back({"allowed_counts", "assignments", {S, P, E}, nullptr, &run.allowed_counts});
    }
    return f;
}

double mean(const std::vector<double>& values) {
    double sum = 0;
    for (double v : values) sum += v;
    return values.empty() ? 0 : sum / values.size();
}

int64_t total(const std::vector<int64_t>& values) {
    int64_t sum = 0;
    for (int64_t v : values) sum += v;
    return sum;
}

double events_per_s(const SimulateRun& run) {
    return static_cast<double>(total(run.num_events)) / std::max(1e-12, mean(run.sim_wall_s) * run.num_steps);
}

// One point's datasets under `group` (docs/hdf5.md, "Simulator log").
void write_run(H5File& file, const std::string& group, SimulateRun& run, const Point& point) {
    std::vector<double> scaled;
    for (const RunField& f : run_fields(run)) {
        const std::string path = group + "/" + f.name;
        if (f.i64) {
            file.write(path, f.dims, f.i64->data());
        } else {
            const double scale = f.units == "us" ? 1e6 : 1.0;
            scaled.resize(f.f64->size());
            for (size_t i = 0; i < scaled.size(); ++i) scaled[i] = (*f.f64)[i] * scale;
            file.write(path, f.dims, scaled.data());
        }
        if (!f.units.empty()) file.attr("units", f.units, path);
    }
    const int64_t S = run.num_steps;
    std::vector<double> model_us(S);
    for (int64_t s = 0; s < S; ++s) model_us[s] = run.step_s[s] * 1e6 * point.moe_layers;
    file.write(group + "/model_step_time_us", {static_cast<hsize_t>(S)}, model_us.data());
    file.attr("units", std::string("us"), group + "/model_step_time_us");
    file.attr("phases", enum_name_csv<SimPhase>(), group + "/phase_time_us");
    file.attr("phases", enum_name_csv<SimPhase>(), group + "/phase_max_rank");
    file.attr("terms", enum_name_csv<BoundTerm>(), group + "/bound_terms_us");
    const std::string classes = enum_name_csv<LinkClass>();
    file.attr("classes", classes, group + "/link_bytes");
    file.attr("classes", classes, group + "/busiest_link_class");
    if (run.has_rank_detail) file.attr("phases", enum_name_csv<SimPhase>(), group + "/rank_phase_time_us");
    file.attr("simulated_ranks", static_cast<int64_t>(run.num_ranks), group);
    file.attr("ranks_per_node",
              static_cast<int64_t>(std::min(run.num_ranks, point.spec.topology.devices_per_node)), group);
    file.attr("moe_layers", static_cast<int64_t>(point.moe_layers), group);
    file.attr("topology", point.spec.topology.name, group);
    file.attr("topology_file", point.topology_path, group);
    file.attr("model", point.spec.workload.model.name, group);
    file.attr("precision", point.spec.precision, group);
    file.attr("precision_source", std::string(point.precision_is_default ? "default" : "option"), group);
    file.attr("dense_rate_flops_per_s", point.spec.topology.device_flops_per_s(point.spec.precision), group);
    file.attr("wall_time_s", run.wall_s, group);
    file.attr("events_per_s", events_per_s(run), group);
    file.attr("peak_memory_bytes", run.peak_rss_bytes, group);
    for (const auto& [key, value] : point.overrides) file.attr("sweep." + key, value, group);
}

// ---------------------------------------------------------------------------------------------------
// Sweep points across MPI ranks: point i runs on rank i % size; rank 0 gathers.

void send_run(SimulateRun& run, int dest, int tag) {
    double header[6] = {static_cast<double>(run.num_ranks),
                        static_cast<double>(run.num_experts),
                        static_cast<double>(run.num_steps),
                        run.has_rank_detail ? 1.0 : 0.0,
                        run.wall_s,
                        static_cast<double>(run.peak_rss_bytes)};
    MPI_CHECK(MPI_Send(header, 6, MPI_DOUBLE, dest, tag, MPI_COMM_WORLD));
    for (const RunField& f : run_fields(run)) {
        if (f.i64)
            MPI_CHECK(MPI_Send(f.i64->data(), static_cast<int>(f.i64->size()), MPI_INT64_T, dest, tag,
                               MPI_COMM_WORLD));
        else
            MPI_CHECK(MPI_Send(f.f64->data(), static_cast<int>(f.f64->size()), MPI_DOUBLE, dest, tag,
                               MPI_COMM_WORLD));
    }
}

SimulateRun recv_run(int source, int tag) {
    double header[6];
    MPI_CHECK(MPI_Recv(header, 6, MPI_DOUBLE, source, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE));
    SimulateRun run;
    run.num_ranks = static_cast<int>(header[0]);
    run.num_experts = static_cast<int64_t>(header[1]);
    run.num_steps = static_cast<int64_t>(header[2]);
    run.has_rank_detail = header[3] != 0;
    run.wall_s = header[4];
    run.peak_rss_bytes = static_cast<int64_t>(header[5]);
    for (const RunField& f : run_fields(run)) {
        size_t count = 1;
        for (hsize_t dim : f.dims) count *= dim;
        if (f.i64) {
            f.i64->resize(count);
            MPI_CHECK(MPI_Recv(f.i64->data(), static_cast<int>(count), MPI_INT64_T, source, tag,
                               MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        } else {
            f.f64->resize(count);
            MPI_CHECK(MPI_Recv(f.f64->data(), static_cast<int>(count), MPI_DOUBLE, source, tag,
                               MPI_COMM_WORLD, MPI_STATUS_IGNORE));
        }
    }
    return run;
}

// Every rank fails with the message of the lowest failed point, if any (collective).
void fail_together(Comm& comm, int64_t failed_point, const std::string& message, int num_points) {
    int64_t first = failed_point >= 0 ? num_points - failed_point : 0;  // max = the lowest failed index
    comm.allreduce_max_i64(&first, 1);
    if (first == 0) return;
    const int64_t point = num_points - first;
    const int owner = static_cast<int>(point % comm.size());
    int64_t length = comm.rank() == owner ? static_cast<int64_t>(message.size()) : 0;
    MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT64_T, owner, MPI_COMM_WORLD));
    std::string text(length, ' ');
    if (comm.rank() == owner) text = message;
    MPI_CHECK(MPI_Bcast(&text[0], static_cast<int>(length), MPI_CHAR, owner, MPI_COMM_WORLD));
    EXPAR_FAIL(text);
}

// ---------------------------------------------------------------------------------------------------
// Printing (rank 0)

// "bf16 compute (989.0 TFLOP/s per device, the topology's training precision)": the precision, its nominal
// dense rate (and the calibrated GEMM efficiency that scales it), and where the precision came from.
std::string compute_text(const Point& point) {
    const Topology& t = point.spec.topology;
    const double rate = t.device_flops_per_s(point.spec.precision);
    char text[256];
    std::snprintf(text, sizeof text, "%s compute (%.1f %s per device", point.spec.precision.c_str(),
                  rate >= 1e12 ? rate / 1e12 : rate / 1e9, rate >= 1e12 ? "TFLOP/s" : "GFLOP/s");
    std::string out = text;
    if (t.calibration && t.calibration->gemm_efficiency) {
        std::snprintf(text, sizeof text, " x calibrated gemm_efficiency %g", *t.calibration->gemm_efficiency);
        out += text;
    }
    return out + (point.precision_is_default ? ", the topology's training precision)" : ", --precision)");
}

void print_header(const Point& point, int mpi_size) {
    const SimulateSpec& s = point.spec;
    const LayerConfig& c = s.layer;
    const ModelSpec& m = s.workload.model;
    const int P = s.num_ranks, M = std::min(P, s.topology.devices_per_node);
    std::printf("# expar simulate: topology %s (%s), %d simulated ranks = %d nodes x %d (%s / %s)\n",
                s.topology.name.c_str(), point.topology_path.c_str(), P, P / M, M,
                to_string(s.topology.intra_fabric), to_string(s.topology.inter_fabric));
    std::printf(
        "# model %s: E=%lld k=%d d=%lld f=%lld %s, %d shared, MoE layers %d; T=%lld tokens/rank, %d-byte "
        "elements, %s\n",
        m.name.c_str(), (long long)c.num_experts, c.top_k, (long long)c.d_model, (long long)c.d_ff,
        m.activation_name.c_str(), m.num_shared_experts, point.moe_layers, (long long)c.tokens_per_rank,
        s.workload.dtype_bytes, compute_text(point).c_str());
    std::printf("# schedule %s", to_string(c.schedule));
    if (c.schedule == ScheduleKind::pairwise) std::printf(" (group size %d)", effective_group_size(c, P));
    std::printf(", gate %s, cf %g (%s, %s), routing %s", to_string(c.gate), c.capacity_factor,
                to_string(c.capacity_scope), to_string(c.drop_policy), to_string(s.routing.kind));
    if (s.routing.kind == RoutingKind::zipf || s.routing.kind == RoutingKind::drift)
        std::printf(" s=%g", s.routing.zipf_s);
    std::printf(", gate-topology %s, node-limit %d, router-bias %g, shadow %s; %lld steps, seed %llu, %s\n",
                to_string(c.gate_topology), c.node_limit, c.router_bias_rate, c.shadow ? "on" : "off",
                (long long)s.num_steps, (unsigned long long)s.routing.seed,
                s.backward ? "forward + backward" : "forward only");
    if (point.overrides.empty()) return;
    std::string keys;
    for (const auto& [key, value] : point.overrides) keys += (keys.empty() ? "" : ", ") + key;
    std::printf("# sweep over %s (the values above are point 0's), spread over %d MPI rank%s\n", keys.c_str(),
                mpi_size, mpi_size > 1 ? "s" : "");
}

void print_steps(const SimulateRun& run) {
    static const char* const kShort[kNumSimPhases] = {"route",   "dispatch", "expert",   "combine",
                                                      "combine", "expert",   "dispatch", "route"};
    std::printf("\n# per step, each phase's time is the max over ranks [us]\n");
    std::printf("#      %-47s   %-47s\n", "---------------- forward [us] -----------------",
                "---------------- backward [us] ----------------");
    std::printf("#  step");
    for (int p = 0; p < kNumSimPhases; ++p) std::printf(" %11s", kShort[p]);
    std::printf(" %12s %12s %7s %11s\n", "step(us)", "bound(us)", "eff", "dropped(%)");
    for (int64_t s = 0; s < run.num_steps; ++s) {
        std::printf("%8lld", (long long)run.step[s]);
        for (int p = 0; p < kNumSimPhases; ++p)
            std::printf(" %11.2f", run.phase_s[s * kNumSimPhases + p] * 1e6);
        const double dropped_pct = run.requested[s] ? 100.0 * run.dropped[s] / run.requested[s] : 0.0;
        std::printf(" %12.2f %12.2f %7.3f %11.3f\n", run.step_s[s] * 1e6, run.bound_s[s] * 1e6,
                    run.efficiency[s], dropped_pct);
    }
    std::printf("\n# per step, the rank that sets each phase's max, and the links\n");
    std::printf("#  step");
    for (int p = 0; p < kNumSimPhases; ++p) std::printf(" %8s", kShort[p]);
    std::printf(" %11s %11s %11s %9s %8s %9s %9s\n", "intra(MB)", "nic(MB)", "core(MB)", "busiest", "util(%)",
                "shadowed", "redirect");
    for (int64_t s = 0; s < run.num_steps; ++s) {
        std::printf("%8lld", (long long)run.step[s]);
        for (int p = 0; p < kNumSimPhases; ++p)
            std::printf(" %8lld", (long long)run.phase_rank[s * kNumSimPhases + p]);
        const double* bytes = &run.link_bytes[s * kNumLinkClasses];
        const int64_t busiest = run.busiest_link_class[s];
        std::printf(" %11.3f %11.3f %11.3f %9s %8.1f %9lld %9lld\n", bytes[0] / 1e6, bytes[1] / 1e6,
                    bytes[2] / 1e6, busiest >= 0 ? to_string(static_cast<LinkClass>(busiest)) : "-",
                    100.0 * run.busiest_link_utilisation[s], (long long)run.shadowed[s],
                    (long long)run.redirected[s]);
    }
}

// How far to trust the answer: where the rates come from, how exact the graph was, what is not modelled,
// and what is known of the model's accuracy on this kind of topology (docs/simulator.md, "Validation on
// this machine"). The validation measured CPU ranks on one shared-memory host, each prediction made from a
// file `expar calibrate` wrote there, so its figures are printed only for a calibrated shared-memory file;
// any other topology is said to be unvalidated.
void print_trust(const SimulateRun& run, const Point& point) {
    const Topology& t = point.spec.topology;
    const bool validated_kind = t.calibration && t.intra_fabric == IntraFabric::shared_memory;
    if (t.calibration)
        std::printf("# trust: rates calibrated (%s, on %s); ", t.calibration->when.c_str(),
                    t.calibration->measured_topology.c_str());
    else
        std::printf("# trust: nominal rates (no calibration block; efficiencies 1: optimistic); ");
    std::printf("%s\n", run.aggregated
                            ? "node-pair bundles (on routing drawn per token: plain and hierarchical "
                              "within 1% of the exact graph, pairwise 3-6% slower at 64-512 ranks; "
                              "--aggregation none for exact)"
                            : "exact graph (one flow per message)");
    std::printf("#        not modelled: contention outside the topology file, OS scheduling of ranks that\n");
    std::printf("#        outnumber cores, kernel launches and framework overheads\n");
    if (validated_kind) {
        std::printf(
            "#        against measured expar layer runs on a 2-core VM: median error 4-13%% per layer, "
            "20-22%%\n");
        std::printf("#        per phase; run-to-run noise 18-34%% (docs/simulator.md, Validation)\n");
        return;
    }
    std::printf("#        accuracy: this topology has not been validated against measurements (%s)\n",
                t.calibration ? "calibrated rates" : "nominal rates");
    std::printf("#        (the validation covers calibrated CPU ranks on one shared-memory host only;\n");
    std::printf("#        docs/simulator.md, Validation)\n");
}

void print_summary(const SimulateRun& run, const Point& point) {
    const double step_us = mean(run.step_s) * 1e6, bound_us = mean(run.bound_s) * 1e6;
    const int64_t requested = total(run.requested), dropped = total(run.dropped);
    std::printf(
        "\n# mean over %lld steps: layer step %.2f us, bound %.2f us, efficiency %.3f; dropped %.3f %% of "
        "%lld routed assignments\n",
        (long long)run.num_steps, step_us, bound_us, mean(run.efficiency),
        requested ? 100.0 * dropped / requested : 0.0, (long long)requested);
    std::printf(
        "# model step estimate: %d MoE layers x %.2f us = %.3f ms (the MoE layers only: attention, dense "
        "FFNs and the optimizer are not simulated)\n",
        point.moe_layers, step_us, point.moe_layers * step_us / 1e3);
    std::printf("# simulation: %.1f ms wall, %.3g events/s, peak memory %.1f MiB\n", run.wall_s * 1e3,
                events_per_s(run), run.peak_rss_bytes / 1048576.0);
    print_trust(run, point);
}

void print_sweep_table(const std::vector<Point>& points, const std::vector<SimulateRun>& runs) {
    std::vector<std::string> keys;
    for (const auto& [key, value] : points[0].overrides) keys.push_back(key);
    std::vector<size_t> widths;
    for (size_t k = 0; k < keys.size(); ++k) {
        size_t w = keys[k].size();
        for (const Point& p : points) w = std::max(w, p.overrides[k].second.size());
        widths.push_back(w);
    }
    std::printf("\n# sweep: %zu points, mean over steps of each\n#%6s", points.size(), "point");
    for (size_t k = 0; k < keys.size(); ++k)
        std::printf(" %*s", static_cast<int>(widths[k]), keys[k].c_str());
    std::printf(" %12s %12s %7s %11s %12s %11s\n", "step(us)", "bound(us)", "eff", "dropped(%)", "model(ms)",
                "nic(MB)");
    for (size_t i = 0; i < points.size(); ++i) {
        const SimulateRun& run = runs[i];
        std::printf("%7zu", i);
        for (size_t k = 0; k < keys.size(); ++k)
            std::printf(" %*s", static_cast<int>(widths[k]), points[i].overrides[k].second.c_str());
        const int64_t requested = total(run.requested);
        double nic_bytes = 0;
        for (int64_t s = 0; s < run.num_steps; ++s) nic_bytes += run.link_bytes[s * kNumLinkClasses + 1];
        const double step_us = mean(run.step_s) * 1e6;
        std::printf(" %12.2f %12.2f %7.3f %11.3f %12.3f %11.3f\n", step_us, mean(run.bound_s) * 1e6,
                    mean(run.efficiency), requested ? 100.0 * total(run.dropped) / requested : 0.0,
                    points[i].moe_layers * step_us / 1e3, nic_bytes / run.num_steps / 1e6);
    }
}

}  // namespace

int run_simulate_command(int argc, char** argv, bool print_help) {
    // The command line alone first: --help, and the sweeps.
    SimulateCommandOptions base;
    const po::options_description description = simulate_options_description(&base);
    po::variables_map vm;
    if (!parse_command_options(argc, argv, description, kUsage, print_help, &vm)) return 0;
    MpiComm comm(MPI_COMM_WORLD);
    const int me = comm.rank(), size = comm.size();

    // Every rank prepares every point, so bad options fail on all ranks alike before anything runs.
    const std::vector<Overrides> overrides = sweep_points(base.sweeps, description);
    const bool sweeping = !base.sweeps.empty();
    std::vector<Point> points;
    for (const Overrides& point : overrides) {
        try {
            points.push_back(make_point(argc, argv, point));
        } catch (const Error& error) {
            if (!sweeping) throw;
            EXPAR_FAIL("sweep point " << points.size() << " (" << point_label(point)
                                      << "): " << error.what());
        }
    }
    const int num_points = static_cast<int>(points.size());
    // Every point's files (a sweep may vary --topology and --replay); the replay is read only while
    // simulating, after the log is created.
    std::vector<InputPath> inputs = {{"--config", base.config_file}};
    for (const Point& point : points) {
        inputs.push_back({"--topology", point.topology_path});
        if (point.spec.routing.kind == RoutingKind::replay)
            inputs.push_back({"--replay", replay_file(point.spec.routing.replay)});
    }
    require_distinct_paths(comm, inputs, {{"--log", base.log_path}});
    std::unique_ptr<H5File> file;
    if (!base.log_path.empty()) file = create_on_root(comm, base.log_path, "--log");

    // Run this rank's points; a failure anywhere fails every rank with one message.
    const double t0 = now_s();
    std::vector<SimulateRun> runs(num_points);
    int64_t failed_point = -1;
    std::string failure;
    for (int i = me; i < num_points && failed_point < 0; i += size) {
        try {
            runs[i] = simulate_layer_steps(points[i].spec);
        } catch (const Error& error) {
            failed_point = i;
            failure = sweeping ? "sweep point " + std::to_string(i) + " (" +
                                     point_label(points[i].overrides) + "): " + error.what()
                               : error.what();
        }
    }
    fail_together(comm, failed_point, failure, num_points);
    for (int i = 0; i < num_points; ++i) {
        const int owner = i % size;
        if (owner == 0) continue;
        if (me == owner) send_run(runs[i], 0, i);
        if (me == 0) runs[i] = recv_run(owner, i);
    }
    const double wall_s = now_s() - t0;
    if (me != 0) return 0;

    print_header(points[0], size);
    if (!sweeping) {
        print_steps(runs[0]);
        print_summary(runs[0], points[0]);
    } else {
        print_sweep_table(points, runs);
        std::printf("# %d points on %d MPI ranks in %.1f ms\n", num_points, size, wall_s * 1e3);
    }
    if (file) {
        for (const auto& [key, value] : options_as_attributes(vm))
            if (key != "sweep") file->attr(key, value);
        std::string sweeps;
        for (const std::string& sweep : base.sweeps) sweeps += (sweeps.empty() ? "" : " ") + sweep;
        file->attr("sweep", sweeps);
        file->attr("git_revision", std::string(EXPAR_GIT_REVISION));
        file->attr("mpi_ranks", static_cast<int64_t>(size));
        file->attr("wall_time_s", wall_s);
        if (!sweeping) {
            write_run(*file, "/sim", runs[0], points[0]);
        } else {
            std::string keys;
            for (const auto& [key, value] : points[0].overrides) keys += (keys.empty() ? "" : ",") + key;
            file->create_group("/sweep");
            file->attr("keys", keys, "/sweep");
            file->attr("num_points", static_cast<int64_t>(num_points), "/sweep");
            std::vector<double> step_us(num_points), bound_us(num_points), efficiency(num_points),
                dropped(num_points), model_us(num_points);
            for (int i = 0; i < num_points; ++i) {
                write_run(*file, "/sweep/" + std::to_string(i), runs[i], points[i]);
                step_us[i] = mean(runs[i].step_s) * 1e6;
                bound_us[i] = mean(runs[i].bound_s) * 1e6;
                efficiency[i] = mean(runs[i].efficiency);
                const int64_t requested = total(runs[i].requested);
                dropped[i] = requested ? static_cast<double>(total(runs[i].dropped)) / requested : 0.0;
                model_us[i] = step_us[i] * points[i].moe_layers;
            }
            const std::vector<hsize_t> dims{static_cast<hsize_t>(num_points)};
            const std::pair<const char*, std::pair<std::vector<double>*, const char*>> summary[] = {
                {"step_time_us", {&step_us, "us"}},
                {"bound_us", {&bound_us, "us"}},
                {"efficiency", {&efficiency, "1"}},
                {"dropped_fraction", {&dropped, "fraction of routed assignments"}},
                {"model_step_time_us", {&model_us, "us"}}};
            for (const auto& [name, data] : summary) {
                const std::string path = std::string("/summary/") + name;
                file->write(path, dims, data.first->data());
                file->attr("units", std::string(data.second), path);
            }
            for (size_t k = 0; k < points[0].overrides.size(); ++k) {
                std::string values;
                for (const Point& p : points) values += (values.empty() ? "" : ",") + p.overrides[k].second;
                file->attr(points[0].overrides[k].first, values, "/summary");
            }
        }
        file->commit();  // rank 0 alone by now: every rank's points succeeded (fail_together)
        std::printf("# log %s\n", base.log_path.c_str());
    }
    return 0;
}

}  // namespace expar
