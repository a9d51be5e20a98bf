// The three token-exchange schedules on self-checking data: every float encodes (sender, receiver, row,
// column), so each rank knows exactly what it must receive. For every schedule, direction, node map
// (emulated blocks, round-robin, MPI's) and group size, the received buffer must equal that layout and
// plain's result byte for byte, and the bytes each rank reports must match closed forms. The round trip
// (rows out, work at the owner, results back) is checked the same way.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "allocation_counter.h"
#include "comm.h"
#include "node_map.h"
#include "rng.h"
#include "schedule.h"
#include "timer.h"

namespace expar {
namespace {

constexpr float kUnwritten = -1.0f;  // the encoding is never negative
constexpr int64_t kGuardRows = 2;    // past the expected rows: must stay unwritten

// A 20-bit value per (sender, receiver, row, column): exact in float, different for neighbours.
float encode(int sender, int receiver, int64_t row, int64_t column) {
    const uint64_t key = (static_cast<uint64_t>(sender) << 48) ^ (static_cast<uint64_t>(receiver) << 32) ^
                         (static_cast<uint64_t>(row) << 12) ^ static_cast<uint64_t>(column);
    return static_cast<float>(rng_mix(key) & 0xFFFFF);
}

struct Matrix {
    std::string name;
    std::vector<int64_t> rows;  // [P, P]: rows[src * P + dst]
};

// Deterministic and identical on every rank.
std::vector<Matrix> matrices(int P) {
    std::vector<Matrix> out;
    auto add = [&](const std::string& name, auto cell) {
        Matrix m{name, std::vector<int64_t>(P * P)};
        for (int s = 0; s < P; ++s)
            for (int d = 0; d < P; ++d) m.rows[s * P + d] = cell(s, d);
        out.push_back(m);
    };
    add("uniform", [](int, int) { return 3; });
    add("random with zeros", [&](int s, int d) {
        const uint64_t bits = rng_bits(7, 1, s * P + d);
        return bits % 10 < 3 ? int64_t{0} : static_cast<int64_t>(bits % 6);
    });
    add("last rank empty", [&](int s, int d) {
        return s == P - 1 || d == P - 1 ? int64_t{0}
                                        : static_cast<int64_t>(1 + rng_bits(7, 2, s * P + d) % 4);
    });
    add("all to rank 0", [](int s, int d) { return d == 0 ? int64_t{17 + s} : int64_t{s == d}; });
    add("rank 0 to all", [](int s, int d) { return s == 0 ? int64_t{9 + 2 * d} : int64_t{0}; });
    add("self only", [](int s, int d) { return s == d ? int64_t{5} : int64_t{0}; });
    add("nothing", [](int, int) { return int64_t{0}; });
    return out;
}

// Ranks-per-node blocks that divide P, every other rank on another node (round-robin, so node order is
// not rank order), and what MPI's shared-memory split says.
std::vector<std::pair<std::string, NodeMap>> node_maps(int P) {
    std::vector<std::pair<std::string, NodeMap>> maps;
    for (int rpn : {1, 2, 4})
        if (P % rpn == 0 && rpn <= P)
            maps.emplace_back("blocks of " + std::to_string(rpn), node_map_blocks(P, rpn));
    if (P >= 4 && P % 2 == 0) {
        std::vector<int> labels(P);
        for (int r = 0; r < P; ++r) labels[r] = r % 2;
        maps.emplace_back("round-robin on 2 nodes", node_map_from_labels(labels, true));
    }
    maps.emplace_back("mpi", make_node_map(MPI_COMM_WORLD, 0));
    return maps;
}

// One exchange: fills send from the encoding, runs it, and returns how many floats of recv (plus the
// guard rows) differ from the expected layout.
struct Exchange {
    int P, me;
    int64_t width;
    std::vector<float> send, recv;

    int64_t run(TokenExchange& x, const std::vector<int64_t>& rows, bool reverse) {
        auto traffic = [&](int s, int d) { return reverse ? rows[d * P + s] : rows[s * P + d]; };
        int64_t num_send = 0, num_recv = 0;
        for (int r = 0; r < P; ++r) {
            num_send += traffic(me, r);
            num_recv += traffic(r, me);
        }
        send.assign(num_send * width, kUnwritten);
        recv.assign((num_recv + kGuardRows) * width, kUnwritten);
        float* out = send.data();
        for (int dst = 0; dst < P; ++dst)
            for (int64_t i = 0; i < traffic(me, dst); ++i)
                for (int64_t c = 0; c < width; ++c) *out++ = encode(me, dst, i, c);
        x.alltoallv(send.data(), recv.data(), rows.data(), reverse);
        int64_t wrong = 0;
        const float* in = recv.data();
        for (int src = 0; src < P; ++src)
            for (int64_t i = 0; i < traffic(src, me); ++i)
                for (int64_t c = 0; c < width; ++c) wrong += *in++ != encode(src, me, i, c);
        for (int64_t k = 0; k < kGuardRows * width; ++k) wrong += *in++ != kUnwritten;
        return wrong;
    }
};

int64_t max_row_and_column_sum(const std::vector<int64_t>& rows, int P, bool column) {
    int64_t best = 0;
    for (int a = 0; a < P; ++a) {
        int64_t sum = 0;
        for (int b = 0; b < P; ++b) sum += column ? rows[b * P + a] : rows[a * P + b];
        best = std::max(best, sum);
    }
    return best;
}

int64_t sum_over_ranks(int64_t value) {
    int64_t total = 0;
    MPI_Allreduce(&value, &total, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
    return total;
}

TEST(Schedules, DeliverTheExpectedLayoutAndAgreeWithPlain) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size();
    for (int64_t width : {1, 5}) {
        Exchange ex{P, comm.rank(), width, {}, {}};
        for (const Matrix& m : matrices(P)) {
            for (const auto& [map_name, map] : node_maps(P)) {
                for (bool reverse : {false, true}) {
                    // Tight bounds: the relays are sized for exactly this traffic's worst rank.
                    const int64_t max_send = max_row_and_column_sum(m.rows, P, reverse);
                    const int64_t max_recv = max_row_and_column_sum(m.rows, P, !reverse);
                    TokenExchange plain(ScheduleKind::plain, comm, map, 1, max_send, max_recv, width);
                    EXPECT_EQ(ex.run(plain, m.rows, reverse), 0);
                    const std::vector<float> plain_recv = ex.recv;
                    std::vector<std::pair<ScheduleKind, int>> variants{{ScheduleKind::hierarchical, 1}};
                    for (int g = 1; g <= P; ++g)
                        if (P % g == 0) variants.emplace_back(ScheduleKind::pairwise, g);
                    for (const auto& [kind, g] : variants) {
                        SCOPED_TRACE(std::string(to_string(kind)) + " g=" + std::to_string(g) + ", " +
                                     m.name + ", " + map_name + (reverse ? ", reverse" : ", forward") +
                                     ", width " + std::to_string(width));
                        TokenExchange x(kind, comm, map, g, max_send, max_recv, width);
                        EXPECT_EQ(ex.run(x, m.rows, reverse), 0) << "wrong floats on rank " << comm.rank();
                        EXPECT_EQ(
                            std::memcmp(ex.recv.data(), plain_recv.data(), plain_recv.size() * sizeof(float)),
                            0);
                        // The same exchange again reuses every buffer and gives the same bytes.
                        EXPECT_EQ(ex.run(x, m.rows, reverse), 0);
                    }
                }
            }
        }
    }
}

TEST(Schedules, NoAllocationInsideAnExchange) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size();
    const int64_t width = 4;
    const std::vector<Matrix> all = matrices(P);
    const std::vector<int64_t>& rows = all[1].rows;
    const int64_t bound =
        std::max(max_row_and_column_sum(rows, P, false), max_row_and_column_sum(rows, P, true));
    std::vector<float> send(bound * width, 1.0f), recv(bound * width);
    for (const auto& [map_name, map] : node_maps(P)) {
        for (ScheduleKind kind : {ScheduleKind::plain, ScheduleKind::pairwise, ScheduleKind::hierarchical}) {
            TokenExchange x(kind, comm, map, 1, bound, bound, width);
            x.alltoallv(send.data(), recv.data(), rows.data(), false);  // warm: MPI datatypes, lazy state
            const test::AllocationCounter counter;
            for (bool reverse : {false, true}) x.alltoallv(send.data(), recv.data(), rows.data(), reverse);
            EXPECT_EQ(counter.count(), 0) << to_string(kind) << ", " << map_name;
        }
    }
}

// Every row of src -> dst goes: plain and pairwise, straight (one hop, intra iff same node);
// hierarchical, one intra-node hop iff the local indices differ and one inter-node hop iff the nodes do.
TEST(Schedules, BytesOnTheWireMatchClosedForms) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), me = comm.rank();
    const int64_t width = 3, bytes_per_row = width * 4;
    for (const Matrix& m : matrices(P)) {
        for (const auto& [map_name, map] : node_maps(P)) {
            SCOPED_TRACE(m.name + ", " + map_name);
            int64_t direct_intra = 0, direct_inter = 0, hier_intra = 0;
            for (int s = 0; s < P; ++s)
                for (int d = 0; d < P; ++d) {
                    const int64_t bytes = m.rows[s * P + d] * bytes_per_row;
                    if (s == d) continue;
                    (map.same_node(s, d) ? direct_intra : direct_inter) += bytes;
                    if (map.local_index[s] != map.local_index[d]) hier_intra += bytes;
                }
            const int64_t bound =
                std::max(max_row_and_column_sum(m.rows, P, false), max_row_and_column_sum(m.rows, P, true));
            Exchange ex{P, me, width, {}, {}};
            for (ScheduleKind kind :
                 {ScheduleKind::plain, ScheduleKind::pairwise, ScheduleKind::hierarchical}) {
                SCOPED_TRACE(to_string(kind));
                TokenExchange x(kind, comm, map, P % 2 == 0 ? 2 : 1, bound, bound, width);
                ex.run(x, m.rows, false);
                const int64_t intra = sum_over_ranks(x.last_bytes_intra_node());
                const int64_t inter = sum_over_ranks(x.last_bytes_inter_node());
                EXPECT_EQ(intra, kind == ScheduleKind::hierarchical ? hier_intra : direct_intra);
                EXPECT_EQ(inter, direct_inter);  // each cross-node row crosses exactly once
            }
        }
    }
    // Per rank, uniform c rows per pair on M ranks per node and N nodes:
    // direct: intra = c(M-1), inter = c(P-M); hierarchical: intra = (M-1)·N·c, inter = (N-1)·M·c rows.
    const int64_t c = 4;
    const std::vector<int64_t> uniform(P * P, c);
    for (const auto& [map_name, map] : node_maps(P)) {
        SCOPED_TRACE(map_name);
        const int64_t M = map.ranks_per_node, N = map.num_nodes;
        Exchange ex{P, me, width, {}, {}};
        for (ScheduleKind kind : {ScheduleKind::plain, ScheduleKind::pairwise, ScheduleKind::hierarchical}) {
            TokenExchange x(kind, comm, map, 1, c * P, c * P, width);
            for (bool reverse : {false, true}) {
                ex.run(x, uniform, reverse);
                const bool hier = kind == ScheduleKind::hierarchical;
                EXPECT_EQ(x.last_bytes_intra_node(), (hier ? (M - 1) * N * c : c * (M - 1)) * bytes_per_row)
                    << to_string(kind);
                EXPECT_EQ(x.last_bytes_inter_node(), (hier ? (N - 1) * M * c : c * (P - M)) * bytes_per_row)
                    << to_string(kind);
            }
        }
    }
}

// A round trip's work at the owner: checks that all of a source's rows are there when it is called, then
// turns each float v into 2·v + owner rank (exact in float), in place.
struct DoubleAndStamp : RoundTripWork {
    int P = 0, me = 0;
    int64_t width = 0;
    const std::vector<int64_t>* rows = nullptr;
    float* recv = nullptr;
    std::vector<int> calls_per_source;  // [P]
    int num_local_calls = 0;
    int64_t missing = 0;  // floats not (yet) as sent when their source's work began
    void compute_local() override { ++num_local_calls; }
    void compute_source(int src) override {
        ++calls_per_source[src];
        int64_t offset = 0;
        for (int r = 0; r < src; ++r) offset += (*rows)[r * P + me];
        float* block = recv + offset * width;
        for (int64_t i = 0; i < (*rows)[src * P + me]; ++i)
            for (int64_t c = 0; c < width; ++c) {
                float& v = block[i * width + c];
                missing += v != encode(src, me, i, c);
                v = 2.0f * v + static_cast<float>(me);
            }
    }
};

// Rows out, work, results back, for every schedule: the results are the sender's own rows as the owner
// transformed them, each source is worked on once with all its rows there, the bytes are those of the
// two exchanges, the three times are parts of the call's wall time, and nothing is allocated.
TEST(Schedules, RoundTripReturnsEachRowAsItsOwnerTransformedIt) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), me = comm.rank();
    const int64_t width = 3;
    for (const Matrix& m : matrices(P)) {
        for (const auto& [map_name, map] : node_maps(P)) {
            const int64_t bound =
                std::max(max_row_and_column_sum(m.rows, P, false), max_row_and_column_sum(m.rows, P, true));
            std::vector<std::pair<ScheduleKind, int>> variants{{ScheduleKind::plain, 1},
                                                               {ScheduleKind::hierarchical, 1}};
            for (int g = 1; g <= P; ++g)
                if (P % g == 0) variants.emplace_back(ScheduleKind::pairwise, g);
            for (const auto& [kind, g] : variants) {
                SCOPED_TRACE(std::string(to_string(kind)) + " g=" + std::to_string(g) + ", " + m.name + ", " +
                             map_name);
                TokenExchange x(kind, comm, map, g, bound, bound, width);
                int64_t num_send = 0, num_recv = 0;
                for (int r = 0; r < P; ++r) {
                    num_send += m.rows[me * P + r];
                    num_recv += m.rows[r * P + me];
                }
                std::vector<float> send(num_send * width), recv((num_recv + kGuardRows) * width),
                    results((num_send + kGuardRows) * width);
                // The bytes of the same traffic as two plain exchanges through this schedule.
                x.alltoallv(send.data(), recv.data(), m.rows.data(), false);
                int64_t intra = x.last_bytes_intra_node(), inter = x.last_bytes_inter_node();
                x.alltoallv(recv.data(), results.data(), m.rows.data(), true);
                intra += x.last_bytes_intra_node();
                inter += x.last_bytes_inter_node();

                DoubleAndStamp work;
                work.P = P;
                work.me = me;
                work.width = width;
                work.rows = &m.rows;
                work.recv = recv.data();
                work.calls_per_source.assign(P, 0);
                for (int repeat = 0; repeat < 2; ++repeat) {  // the second one counts allocations
                    float* out = send.data();
                    for (int dst = 0; dst < P; ++dst)
                        for (int64_t i = 0; i < m.rows[me * P + dst]; ++i)
                            for (int64_t c = 0; c < width; ++c) *out++ = encode(me, dst, i, c);
                    std::fill(recv.begin(), recv.end(), kUnwritten);
                    std::fill(results.begin(), results.end(), kUnwritten);
                    std::fill(work.calls_per_source.begin(), work.calls_per_source.end(), 0);
                    work.num_local_calls = 0;
                    work.missing = 0;
                    RoundTripTimes times;
                    const test::AllocationCounter counter;
                    const double start_s = now_s();  // the clock the parts are read from
                    x.round_trip(send.data(), recv.data(), results.data(), m.rows.data(), work, &times);
                    const double wall_s = now_s() - start_s;
                    if (repeat == 1) EXPECT_EQ(counter.count(), 0);

                    EXPECT_EQ(work.missing, 0);
                    EXPECT_EQ(work.num_local_calls, 1);
                    for (int src = 0; src < P; ++src)
                        EXPECT_EQ(work.calls_per_source[src], 1) << "source " << src;
                    int64_t wrong = 0;
                    const float* in = results.data();
                    for (int dst = 0; dst < P; ++dst)
                        for (int64_t i = 0; i < m.rows[me * P + dst]; ++i)
                            for (int64_t c = 0; c < width; ++c)
                                wrong += *in++ != 2.0f * encode(me, dst, i, c) + static_cast<float>(dst);
                    for (int64_t k = 0; k < kGuardRows * width; ++k) wrong += *in++ != kUnwritten;
                    EXPECT_EQ(wrong, 0) << "wrong floats on rank " << me;
                    EXPECT_EQ(x.last_bytes_intra_node(), intra);
                    EXPECT_EQ(x.last_bytes_inter_node(), inter);
                    EXPECT_GE(times.wait_in_s, 0);
                    EXPECT_GE(times.compute_s, 0);
                    EXPECT_GE(times.wait_out_s, 0);
                    EXPECT_LE(times.wait_in_s + times.compute_s + times.wait_out_s, wall_s + 1e-9);
                }
            }
        }
    }
}

}  // namespace
}  // namespace expar
