#include "alltoall_command.h"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "apportion.h"
#include "check.h"
#include "comm.h"
#include "git_revision.h"
#include "h5_file.h"
#include "h5_log_table.h"
#include "layer_io.h"
#include "node_map.h"
#include "options.h"
#include "output_paths.h"
#include "rng.h"
#include "sample_stats.h"
#include "schedule.h"
#include "text_file.h"
#include "timer.h"

namespace po = boost::program_options;

namespace expar {

namespace {

enum PatternKind : int { kUniform, kZipf, kFile, kNumPatterns };
inline const auto& enum_names(PatternKind) {
    static constexpr EnumName<PatternKind> names[] = {
        {kUniform, "uniform", "equal rows to every rank"},
        {kZipf, "zipf", "tokens routed to Zipf-popular experts"},
        {kFile, "file", "--matrix-file weights"}};
    return names;
}
// Indices 0..2 are the TokenExchange schedules (as ScheduleKind); 3 calls MPI_Alltoallv directly, the
// baseline that shows what the Comm seam and the schedule bookkeeping cost.
enum AlltoallRoute : int { kRoutePlain, kRoutePairwise, kRouteHierarchical, kMpiBaseline, kNumSchedules };
inline const auto& enum_names(AlltoallRoute) {
    static constexpr EnumName<AlltoallRoute> names[] = {
        {kRoutePlain, "plain"},
        {kRoutePairwise, "pairwise"},
        {kRouteHierarchical, "hierarchical"},
        {kMpiBaseline, "mpi", "MPI_Alltoallv called directly"}};
    return names;
}
// The first three are TokenExchange's schedules, by value.
static_assert(kRoutePlain == static_cast<int>(ScheduleKind::plain) &&
                  kRoutePairwise == static_cast<int>(ScheduleKind::pairwise) &&
                  kRouteHierarchical == static_cast<int>(ScheduleKind::hierarchical),
              "AlltoallRoute's schedules must match ScheduleKind");
constexpr uint64_t kStreamZipfTokens = 0xA2A00;  // rng stream of the Zipf routing, + the size's index
constexpr float kUnwritten = -1.0f;              // never a value of the self-checking data

struct AlltoallOptions {
    int64_t min_bytes = 64 * 1024, max_bytes = 64 * 1024 * 1024, step_factor = 2;
    int64_t iters = 20, warmup_iters = 5;
    std::string patterns = "uniform", schedules = "plain,pairwise,hierarchical,mpi";
    double zipf_s = 1.0;
    int64_t experts = 0;
    uint64_t seed = 1;
    std::string matrix_file;
    int group_size = 0, ranks_per_node = 0;
    int64_t row_bytes = 4096;
    std::string log_path, config_file;
};

po::options_description alltoall_options_description(AlltoallOptions* o) {
    po::options_description general = general_options(&o->config_file);
    po::options_description sweep("Sizes and timing");
    sweep.add_options()("min-bytes", po::value<int64_t>(&o->min_bytes)->default_value(o->min_bytes),
                        "smallest size: bytes each rank sends in one exchange, self included [bytes]; "
                        "rounded down to whole rows")(
        "max-bytes", po::value<int64_t>(&o->max_bytes)->default_value(o->max_bytes), "largest size [bytes]")(
        "step-factor", po::value<int64_t>(&o->step_factor)->default_value(o->step_factor),
        "each size is the previous one times this [1]")(
        "row-bytes", po::value<int64_t>(&o->row_bytes)->default_value(o->row_bytes),
        "bytes per row (token), a multiple of 4: 4096 = 1024 floats [bytes]")(
        "iters", po::value<int64_t>(&o->iters)->default_value(o->iters), "timed exchanges per size [1]")(
        "warmup-iters", po::value<int64_t>(&o->warmup_iters)->default_value(o->warmup_iters),
        "untimed exchanges before them [1]");
    po::options_description traffic("Traffic");
    const std::string pattern_help = "comma-separated list of: " + enum_help<PatternKind>();
    const std::string schedules_help = "comma-separated list of: " + enum_help<AlltoallRoute>();
    traffic.add_options()("pattern", po::value<std::string>(&o->patterns)->default_value(o->patterns),
                          pattern_help.c_str())(
        "zipf-s", po::value<double>(&o->zipf_s)->default_value(o->zipf_s),
        "zipf: exponent s, expert of popularity rank j drawn with probability ~ (j+1)^-s [1]")(
        "experts", po::value<int64_t>(&o->experts)->default_value(o->experts),
        "zipf: experts E, E/P per rank; 0 = 8 per rank [experts]")(
        "seed", uint64_value(&o->seed), "zipf: seed of the expert popularity order and the routing")(
        "matrix-file", po::value<std::string>(&o->matrix_file)->default_value(""),
        "file: text file of P lines of P non-negative weights (line i: rank i's traffic to each rank, "
        "scaled to the size); '#' starts a comment");
    po::options_description schedule("Schedules");
    schedule.add_options()("schedules", po::value<std::string>(&o->schedules)->default_value(o->schedules),
                           schedules_help.c_str())(
        // 0, not the layer's 4: a benchmark runs at any rank count (6, say), where 4 would not divide it.
        "group-size", po::value<int>(&o->group_size)->default_value(o->group_size), kGroupSizeHelp)(
        "ranks-per-node", po::value<int>(&o->ranks_per_node)->default_value(o->ranks_per_node),
        kRanksPerNodeHelp)("log", po::value<std::string>(&o->log_path)->default_value(""),
                           "HDF5 file of the table (FILE.h5; empty = none); schema in docs/hdf5.md");
    po::options_description all;
    all.add(general).add(sweep).add(traffic).add(schedule);
    return all;
}

// ---------------------------------------------------------------------------------------------------
// Traffic matrices: rows[src * P + dst], each source sending num_rows rows in total.

// Equal shares; the leftover rows go to the source itself and the ranks after it (cyclically), so the
// receivers stay balanced.
void uniform_rows(int P, int64_t num_rows, int64_t* rows) {
    for (int s = 0; s < P; ++s)
        for (int d = 0; d < P; ++d) rows[s * P + d] = num_rows / P + ((d - s + P) % P < num_rows % P ? 1 : 0);
}

// Each source routes num_rows tokens to E experts: expert e has popularity rank order[e] (a seeded
// shuffle, so the hot experts sit on varying ranks) and probability ~ (order[e] + 1)^-s; rank dst owns
// experts dst·E/P .. (dst+1)·E/P − 1. Tokens are drawn independently per (size, source, token).
void zipf_rows(
    int P, int64_t E, double s, uint64_t seed, int64_t size_index, int64_t num_rows, int64_t* rows) {
    std::vector<int64_t> order(E);
    for (int64_t e = 0; e < E; ++e) order[e] = e;
    for (int64_t e = E - 1; e > 0; --e)
        std::swap(order[e], order[rng_bits(seed, kStreamZipfTokens, e) % (e + 1)]);
    std::vector<double> cdf(E);
    double total = 0;
    for (int64_t e = 0; e < E; ++e) cdf[e] = total += std::pow(static_cast<double>(order[e] + 1), -s);
    const uint64_t stream = kStreamZipfTokens + 1 + static_cast<uint64_t>(size_index);
    std::fill(rows, rows + P * P, 0);
    for (int src = 0; src < P; ++src)
        for (int64_t t = 0; t < num_rows; ++t) {
            const uint64_t bits = rng_bits(seed, stream, static_cast<uint64_t>(src * num_rows + t));
            const double u = static_cast<double>(bits >> 11) * 0x1.0p-53 * total;
            const int64_t e =
                std::min<int64_t>(E - 1, std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
            ++rows[src * P + e / (E / P)];
        }
}

// P lines of P non-negative numbers; blank lines and '#' comments are skipped. Every rank reads it.
std::vector<double> read_matrix_file(const std::string& path, int P) {
    std::istringstream in(read_text_file(path, "--matrix-file"));
    std::vector<double> weights;
    std::string line;
    int line_number = 0, num_lines = 0;
    while (std::getline(in, line)) {
        ++line_number;
        line = line.substr(0, line.find('#'));
        std::istringstream fields(line);
        std::vector<double> values;
        std::string field;
        while (fields >> field) {
            size_t used = 0;
            double value = 0;
            try {
                value = std::stod(field, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            EXPAR_REQUIRE(used == field.size() && std::isfinite(value) && value >= 0,
                          "--matrix-file '" << path << "' line " << line_number << ": '" << field
                                            << "' is not a non-negative number");
            values.push_back(value);
        }
        if (values.empty()) continue;
        ++num_lines;
        EXPAR_REQUIRE(static_cast<int>(values.size()) == P,
                      "--matrix-file '" << path << "' line " << line_number << " has " << values.size()
                                        << " values; expected " << P << " (a " << P << "x" << P
                                        << " matrix, one row and column per rank)");
        weights.insert(weights.end(), values.begin(), values.end());
    }
    EXPAR_REQUIRE(num_lines == P, "--matrix-file '" << path << "' has " << num_lines << " rows; expected "
                                                    << P << " (a " << P << "x" << P
                                                    << " matrix, one row and column per rank)");
    return weights;
}

// ---------------------------------------------------------------------------------------------------
// Self-checking data: float c of row i from src to dst is a 24-bit integer (exact in float): a hash of
// (src, dst, i) plus c. Each receiver knows what every float it receives must be.

float row_value(uint64_t key, int64_t c) {
    return static_cast<float>((key + static_cast<uint64_t>(c)) & 0xFFFFFF);
}

void fill_send(float* send, const int64_t* rows, int P, int me, int64_t width) {
    for (int dst = 0; dst < P; ++dst)
        for (int64_t i = 0; i < rows[me * P + dst]; ++i) {
            const uint64_t key = rng_bits(me, dst, i);
            for (int64_t c = 0; c < width; ++c) *send++ = row_value(key, c);
        }
}

int64_t count_wrong(const float* recv, const int64_t* rows, int P, int me, int64_t width) {
    int64_t wrong = 0;
    for (int src = 0; src < P; ++src)
        for (int64_t i = 0; i < rows[src * P + me]; ++i) {
            const uint64_t key = rng_bits(src, me, i);
            for (int64_t c = 0; c < width; ++c) wrong += *recv++ != row_value(key, c);
        }
    return wrong;
}

// One row of --log: a (pattern, size, schedule) of the sweep. intra, inter: [P] bytes per rank.
struct AlltoallRow {
    int64_t pattern, schedule, size_bytes, count_rows;
    double time_us, algbw, busbw;
    int64_t num_wrong;
    const int64_t* intra;
    const int64_t* inter;
};

// The datasets of --log (docs/hdf5.md, "The all-to-all benchmark log"): one row per (pattern, size,
// schedule).
std::vector<H5LogField<AlltoallRow>> alltoall_log_fields(int P) {
    using Row = AlltoallRow;
    const hsize_t P_ = static_cast<hsize_t>(P);
    return {
        {"/alltoall/pattern",
         {},
         "",
         [](const Row& r, int64_t* v) { *v = r.pattern; },
         {{"names", enum_name_csv<PatternKind>()}}},
        {"/alltoall/schedule",
         {},
         "",
         [](const Row& r, int64_t* v) { *v = r.schedule; },
         {{"names", enum_name_csv<AlltoallRoute>()}}},
        {"/alltoall/size_bytes", {}, "bytes", [](const Row& r, int64_t* v) { *v = r.size_bytes; }},
        {"/alltoall/count_rows", {}, "rows", [](const Row& r, int64_t* v) { *v = r.count_rows; }},
        {"/alltoall/time_us", {}, "us", [](const Row& r, double* v) { *v = r.time_us; }},
        {"/alltoall/algbw_GBps", {}, "GB/s", [](const Row& r, double* v) { *v = r.algbw; }},
        {"/alltoall/busbw_GBps", {}, "GB/s", [](const Row& r, double* v) { *v = r.busbw; }},
        {"/alltoall/num_wrong", {}, "floats", [](const Row& r, int64_t* v) { *v = r.num_wrong; }},
        {"/alltoall/bytes_intra_node",
         {P_},
         "bytes",
         [P](const Row& r, int64_t* v) { std::copy(r.intra, r.intra + P, v); }},
        {"/alltoall/bytes_inter_node",
         {P_},
         "bytes",
         [P](const Row& r, int64_t* v) { std::copy(r.inter, r.inter + P, v); }},
    };
}

// The HDF5 table of --log: written by rank 0, flushed after every row.
class AlltoallLog {
   public:
    AlltoallLog(Comm& comm, const std::string& path, const Attributes& options, const NodeMap& map) {
        file_ = create_on_root(comm, path, "--log");
        if (!file_) return;
        write_common_attributes(*file_, options, map.num_ranks);
        file_->attr("num_nodes", static_cast<int64_t>(map.num_nodes));
        file_->attr("ranks_per_node", static_cast<int64_t>(map.ranks_per_node));
        file_->attr("node_map",
                    std::string(map.emulated ? "emulated by --ranks-per-node" : "MPI shared memory"));
        table_ = std::make_unique<H5LogTable<AlltoallRow>>(file_.get(), alltoall_log_fields(map.num_ranks));
        file_->flush();
    }
    // Rank 0 only (no-op elsewhere).
    void append(const AlltoallRow& row) {
        if (!file_) return;
        table_->append(row);
        file_->flush();
    }
    // Collective, at the end of a successful run: the log replaces the file at its path.
    void commit(Comm& comm) {
        table_.reset();
        commit_on_root(comm, file_.get());
    }

   private:
    std::unique_ptr<H5File> file_;  // rank 0 only, as is the table
    std::unique_ptr<H5LogTable<AlltoallRow>> table_;
};

}  // namespace

int run_alltoall_command(int argc, char** argv, bool print_help) {
    AlltoallOptions o;
    po::variables_map vm;
    if (!parse_command_options(argc, argv, alltoall_options_description(&o),
                               "usage: expar alltoall [options]\n\nTimes token-exchange schedules over a "
                               "sweep of sizes (nccl-tests style); every received float is checked.",
                               print_help, &vm))
        return 0;
    const Attributes attributes = options_as_attributes(vm);
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), me = comm.rank();

    // --- Validate ------------------------------------------------------------------------------------
    const std::vector<PatternKind> pattern_list = parse_enum_list<PatternKind>(o.patterns, "--pattern");
    const std::vector<AlltoallRoute> schedule_list =
        parse_enum_list<AlltoallRoute>(o.schedules, "--schedules");
    const std::vector<int> patterns(pattern_list.begin(), pattern_list.end());
    const std::vector<int> schedules(schedule_list.begin(), schedule_list.end());
    EXPAR_REQUIRE(o.row_bytes > 0 && o.row_bytes % 4 == 0,
                  "--row-bytes must be a positive multiple of 4 (float rows), got " << o.row_bytes);
    EXPAR_REQUIRE(o.min_bytes >= o.row_bytes, "--min-bytes " << o.min_bytes
                                                             << " is less than one row (--row-bytes "
                                                             << o.row_bytes << ")");
    EXPAR_REQUIRE(o.max_bytes >= o.min_bytes,
                  "--max-bytes " << o.max_bytes << " is less than --min-bytes " << o.min_bytes);
    EXPAR_REQUIRE(o.step_factor >= 2 || o.max_bytes == o.min_bytes,
                  "--step-factor must be >= 2 (got " << o.step_factor << ")");
    EXPAR_REQUIRE(o.iters > 0, "--iters must be positive (got " << o.iters << ")");
    EXPAR_REQUIRE(o.warmup_iters >= 0, "--warmup-iters must be >= 0 (got " << o.warmup_iters << ")");
    EXPAR_REQUIRE(o.group_size >= 0, "--group-size must be >= 0 (0 = automatic), got " << o.group_size);
    const int group_size = effective_group_size(o.group_size, P);
    const bool uses_pairwise =
        std::find(schedules.begin(), schedules.end(), kRoutePairwise) != schedules.end();
    if (uses_pairwise)
        EXPAR_REQUIRE(P % group_size == 0,
                      "--group-size " << group_size << " does not divide the " << P << " ranks");
    const int64_t E = o.experts > 0 ? o.experts : 8 * int64_t{P};
    const bool uses_zipf = std::find(patterns.begin(), patterns.end(), kZipf) != patterns.end();
    const bool uses_file = std::find(patterns.begin(), patterns.end(), kFile) != patterns.end();
    if (uses_zipf) {
        EXPAR_REQUIRE(o.experts >= 0, "--experts must be >= 0 (0 = 8 per rank), got " << o.experts);
        EXPAR_REQUIRE(E % P == 0, "--experts " << E << " is not divisible by the " << P << " ranks");
        EXPAR_REQUIRE(std::isfinite(o.zipf_s) && o.zipf_s >= 0,
                      "--zipf-s must be >= 0 (got " << o.zipf_s << ")");
    }
    EXPAR_REQUIRE(!uses_file || !o.matrix_file.empty(), "--pattern file needs --matrix-file FILE");
    require_distinct_paths(comm,
                           {{"--config", o.config_file}, {"--matrix-file", uses_file ? o.matrix_file : ""}},
                           {{"--log", o.log_path}});
    const std::vector<double> file_weights =
        uses_file ? read_matrix_file(o.matrix_file, P) : std::vector<double>();
    const NodeMap map = make_node_map(MPI_COMM_WORLD, o.ranks_per_node);
    const int64_t W = o.row_bytes / 4;

    // --- Every traffic matrix, up front: they size the buffers ----------------------------------------
    std::vector<int64_t> sizes;  // rows per rank
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= o.step_factor) {
        sizes.push_back(bytes / o.row_bytes);
        if (o.step_factor < 2 || bytes > o.max_bytes / o.step_factor) break;
    }
    const int num_sizes = static_cast<int>(sizes.size());
    std::vector<std::vector<int64_t>> matrices(patterns.size() * num_sizes, std::vector<int64_t>(P * P));
    int64_t max_send = 0, max_recv = 0;
    for (size_t p = 0; p < patterns.size(); ++p)
        for (int k = 0; k < num_sizes; ++k) {
            int64_t* rows = matrices[p * num_sizes + k].data();
            if (patterns[p] == kUniform) uniform_rows(P, sizes[k], rows);
            if (patterns[p] == kZipf) zipf_rows(P, E, o.zipf_s, o.seed, k, sizes[k], rows);
            if (patterns[p] == kFile)
                for (int s = 0; s < P; ++s) apportion(rows + s * P, &file_weights[s * P], P, sizes[k]);
            for (int a = 0; a < P; ++a) {
                int64_t sent = 0, received = 0;
                for (int b = 0; b < P; ++b) {
                    sent += rows[a * P + b];
                    received += rows[b * P + a];
                }
                max_send = std::max(max_send, sent);
                max_recv = std::max(max_recv, received);
            }
        }
    const bool uses_baseline = std::find(schedules.begin(), schedules.end(), kMpiBaseline) != schedules.end();
    if (uses_baseline)
        EXPAR_REQUIRE(std::max(max_send, max_recv) * W <= INT_MAX,
                      "the mpi schedule counts floats in int and "
                          << std::max(max_send, max_recv) * W
                          << " floats overflow it; lower --max-bytes or leave mpi out of --schedules");

    // Buffers once, at the largest size, and touched (value-initialised) before any timing.
    std::vector<float> send(std::max<int64_t>(max_send, 1) * W), recv(std::max<int64_t>(max_recv, 1) * W);
    std::unique_ptr<TokenExchange> exchanges[3];
    for (int j : schedules)
        if (j != kMpiBaseline)
            exchanges[j] = std::make_unique<TokenExchange>(static_cast<ScheduleKind>(j), comm, map,
                                                           group_size, max_send, max_recv, W);
    std::vector<int> send_counts(P), send_displs(P), recv_counts(P), recv_displs(P);
    std::unique_ptr<AlltoallLog> log;
    if (!o.log_path.empty()) log = std::make_unique<AlltoallLog>(comm, o.log_path, attributes, map);

    if (me == 0) {
        std::printf("# expar alltoall\n");
        std::printf("# ranks %d, nodes %d x %d ranks/node (%s)\n", P, map.num_nodes, map.ranks_per_node,
                    map.emulated ? "emulated by --ranks-per-node" : "MPI shared-memory split");
        std::printf(
            "# row %lld bytes (%lld floats); size = bytes each rank sends per exchange, self included\n",
            (long long)o.row_bytes, (long long)W);
        std::printf("# schedules %s; pairwise group size %d; %lld timed iterations after %lld warm-up\n",
                    o.schedules.c_str(), group_size, (long long)o.iters, (long long)o.warmup_iters);
        std::printf("# git revision %s\n", EXPAR_GIT_REVISION);
        std::printf(
            "# time(us): median over iterations of the slowest rank's time (barrier before each); "
            "algbw = size/time; busbw = algbw*(P-1)/P\n");
        std::printf(
            "# #wrong: floats received wrong, all ranks, checked after the timed iterations; intra(B), "
            "inter(B): bytes one rank puts on intra-/inter-node links per exchange (largest over ranks)\n");
    }

    // --- Sweep ---------------------------------------------------------------------------------------
    std::vector<double> iteration_s(o.iters);
    std::vector<int64_t> all_bytes(2 * P), intra(P), inter(P), all_wrong(P);
    int64_t total_wrong = 0;
    const double busbw_factor = P > 1 ? static_cast<double>(P - 1) / P : 0.0;
    for (size_t p = 0; p < patterns.size(); ++p) {
        if (me == 0) {
            std::printf("#\n# pattern %s", to_string(PatternKind(patterns[p])));
            if (patterns[p] == kZipf)
                std::printf(": s = %g over %lld experts (%lld per rank), seed %llu", o.zipf_s, (long long)E,
                            (long long)(E / P), (unsigned long long)o.seed);
            if (patterns[p] == kFile) std::printf(": weights from %s", o.matrix_file.c_str());
            std::printf("\n# %12s %10s %13s %11s %11s %11s %8s %13s %13s\n", "size", "count", "schedule",
                        "time(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong", "intra(B)", "inter(B)");
        }
        std::vector<double> busbw_sum(kNumSchedules, 0.0);
        for (int k = 0; k < num_sizes; ++k) {
            const int64_t* rows = matrices[p * num_sizes + k].data();
            const int64_t size_bytes = sizes[k] * o.row_bytes;
            fill_send(send.data(), rows, P, me, W);
            int64_t num_recv = 0;
            for (int r = 0; r < P; ++r) num_recv += rows[r * P + me];
            if (uses_baseline)  // MPI counts and displacements in floats; checked against INT_MAX above
                for (int r = 0, sent = 0, received = 0; r < P; ++r) {
                    send_counts[r] = static_cast<int>(rows[me * P + r] * W);
                    recv_counts[r] = static_cast<int>(rows[r * P + me] * W);
                    send_displs[r] = sent;
                    recv_displs[r] = received;
                    sent += send_counts[r];
                    received += recv_counts[r];
                }
            for (int j : schedules) {
                std::fill(recv.begin(), recv.begin() + num_recv * W, kUnwritten);
                TokenExchange* x = j == kMpiBaseline ? nullptr : exchanges[j].get();
                auto exchange = [&]() {
                    if (x)
                        x->alltoallv(send.data(), recv.data(), rows, false);
                    else
                        MPI_CHECK(MPI_Alltoallv(send.data(), send_counts.data(), send_displs.data(),
                                                MPI_FLOAT, recv.data(), recv_counts.data(),
                                                recv_displs.data(), MPI_FLOAT, MPI_COMM_WORLD));
                };
                for (int64_t i = 0; i < o.warmup_iters; ++i) exchange();
                for (int64_t i = 0; i < o.iters; ++i) {
                    comm.barrier();
                    const double t0 = now_s();
                    exchange();
                    iteration_s[i] = now_s() - t0;
                }
                comm.allreduce_max_f64(iteration_s.data(), o.iters);
                const double time_s = median(iteration_s);
                const int64_t wrong = count_wrong(recv.data(), rows, P, me, W);
                comm.allgather_i64(&wrong, all_wrong.data(), 1);
                int64_t wrong_sum = 0;
                for (int64_t w : all_wrong) wrong_sum += w;
                total_wrong += wrong_sum;
                // The baseline takes the same direct route as plain.
                int64_t bytes[2] = {0, 0};
                if (x) {
                    bytes[0] = x->last_bytes_intra_node();
                    bytes[1] = x->last_bytes_inter_node();
                } else {
                    for (int r = 0; r < P; ++r)
                        if (r != me) bytes[map.same_node(me, r) ? 0 : 1] += rows[me * P + r] * o.row_bytes;
                }
                comm.allgather_i64(bytes, all_bytes.data(), 2);
                for (int r = 0; r < P; ++r) {
                    intra[r] = all_bytes[2 * r];
                    inter[r] = all_bytes[2 * r + 1];
                }
                const double algbw = static_cast<double>(size_bytes) / time_s / 1e9;
                const double busbw = algbw * busbw_factor;
                busbw_sum[j] += busbw;
                if (me == 0)
                    std::printf("  %12lld %10lld %13s %11.1f %11.3f %11.3f %8lld %13lld %13lld\n",
                                (long long)size_bytes, (long long)sizes[k], to_string(AlltoallRoute(j)),
                                time_s * 1e6, algbw, busbw, (long long)wrong_sum,
                                (long long)*std::max_element(intra.begin(), intra.end()),
                                (long long)*std::max_element(inter.begin(), inter.end()));
                if (log)
                    log->append(AlltoallRow{patterns[p], j, size_bytes, sizes[k], time_s * 1e6, algbw, busbw,
                                            wrong_sum, intra.data(), inter.data()});
            }
        }
        if (me == 0) {
            std::printf("# Avg bus bandwidth (GB/s, mean over sizes):");
            for (int j : schedules)
                std::printf(" %s %.3f", to_string(AlltoallRoute(j)), busbw_sum[j] / num_sizes);
            std::printf("\n");
        }
    }
    if (me == 0 && log) std::printf("# log %s\n", o.log_path.c_str());
    // A run that received wrong data fails with its log kept under the partial name, for the diagnosis.
    EXPAR_REQUIRE(total_wrong == 0, total_wrong << " floats were received wrong (see the #wrong column)");
    if (log) log->commit(comm);
    return 0;
}

}  // namespace expar
