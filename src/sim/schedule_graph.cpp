// Builds the step graph. Every exchange takes, per rank, the task after which that rank enters it
// (`ready`) and returns, per rank, a join that ends when the rank's part of it is over (`done`), which
// is what MPI's blocking calls give the real code. Messages the real schedules skip (empty, or to self)
// are not created.
#include "schedule_graph.h"

#include <algorithm>
#include <cmath>

#include "check.h"
#include "huge_pages.h"
#include "schedule.h"
#include "shadow_policy.h"

namespace expar {

namespace {

using Tasks = std::vector<int32_t>;
constexpr int kPrefetchRows = 4;  // aggregated pairwise: matrix rows read ahead when copying a band
// Aggregated pairwise: the most memory for the block sums of all stages at once (34 MiB at 4,096 ranks
// with 8-rank groups); above, they are summed band by band, again for each exchange.
constexpr int64_t kAllSumsBytes = int64_t{64} << 20;

struct Builder {
    const Network& net;
    const LayerWork& w;
    const ScheduleSpec& spec;
    LayerGraph& out;
    TaskGraph& g;
    const NodeMap& map;
    int P, N, M;
    bool aggregate = false;
    // Bundle scratch.
    std::vector<FlowHop> hops;
    std::vector<double> port_out, port_in, dev_out, dev_in;
    std::vector<int64_t> rows_out, rows_in;
    std::vector<double> received_flops;  // [P] Σ_src block_flops(rank, src)
    std::vector<int> port_of;            // [P] Network::nic_port_of (a division, taken per bundle member)
    std::vector<int64_t> to_rail;        // hierarchical scratch [P, M]
    std::vector<double> stage_slowest;   // aggregated pairwise: [stage, group] slowest member's FLOPs
    std::vector<int64_t> band_rows;      // aggregated pairwise: blocks of a band of stages
    std::vector<int64_t> band_sums;      // and their row and column sums
    // Aggregated pairwise, when they fit in kAllSumsBytes: every block's sums, [stage, X, 2G + 1], taken
    // in the pass that reads the stage FLOPs; without shadowing the backward exchange moves the same
    // blocks and its groups compute the same FLOPs, so sums, stage_slowest and the per-rank expert FLOPs
    // of the first run serve the second (valid when `stage_cached`).
    std::vector<int64_t> all_sums;
    std::vector<double> stage_expert_flops;  // [P] expert FLOPs of a run (no shadowing)
    bool stage_cached = false;

    Builder(const Network& network, const LayerWork& work, const ScheduleSpec& s, LayerGraph& o)
        : net(network),
          w(work),
          spec(s),
          out(o),
          g(o.graph),
          map(network.node_map()),
          P(network.num_ranks()),
          N(network.num_nodes()),
          M(network.ranks_per_node()) {
        port_out.resize(M);
        port_in.resize(M);
        hops.resize(4 * static_cast<size_t>(std::max(M, spec.group_size)) +
                    1);  // ≤ 2 device + 2 NIC per rank
        dev_out.resize(std::max(M, spec.group_size));
        dev_in.resize(std::max(M, spec.group_size));
        rows_out.resize(std::max(M, spec.group_size));
        rows_in.resize(std::max(M, spec.group_size));
        port_of.resize(P);
        for (int r = 0; r < P; ++r) port_of[r] = network.nic_port_of(r);
    }

    int64_t row(int64_t i) const { return w.rows ? w.rows[i] : w.rows32[i]; }
    void prefetch_rows(int64_t i) const {
        if (w.rows)
            __builtin_prefetch(w.rows + i);
        else
            __builtin_prefetch(w.rows32 + i);
    }
    // Rows a → b in this exchange's direction (reverse: the combine, which sends rows[b][a] back).
    int64_t rows(int a, int b, bool reverse) const {
        return row(reverse ? static_cast<int64_t>(b) * P + a : static_cast<int64_t>(a) * P + b);
    }
    double block_flops(int rank, int src) const {
        return w.block_flops ? w.block_flops[static_cast<int64_t>(rank) * P + src]
                             : static_cast<double>(rows(src, rank, false)) * w.flops_per_row;
    }
    // sums[b] += Σ_a rows[a][b] · flops_per_row, a in order (typed, so that the loop over b vectorizes).
    template <typename T>
    static void add_row_flops(const T* rows, int P, double flops_per_row, double* __restrict sums) {
        for (int a = 0; a < P; ++a) {
            const T* __restrict row = rows + static_cast<int64_t>(a) * P;
            for (int b = 0; b < P; ++b) sums[b] += static_cast<double>(row[b]) * flops_per_row;
        }
    }
    // Adds block row m (G counts) to a block's sums [G row sums, G column sums, nonzero count]; sums in
    // registers (in memory, each addition waited for the previous one's store).
    template <typename T>
    static void add_block_row(const T* __restrict counts, int G, int m, int64_t* __restrict sums) {
        int64_t out = 0, nonzero = 0;
        for (int b = 0; b < G; ++b) {
            const int64_t v = counts[b];
            out += v;
            sums[G + b] += v;
            nonzero += v > 0;
        }
        sums[m] += out;
        sums[2 * G] += nonzero;
    }
    int32_t join(uint8_t phase, int rank = -1) { return g.add_delay(0, phase, rank); }
    void dep(int32_t before, int32_t after) { g.add_dep(before, after); }

    // The bundle of the messages from ranks [a0, a1) of one node to ranks [b0, b1) of another, count(a, b)
    // rows of bytes_per_row each (only a − a0 == b − b0 when `diagonal`): the links of Network::route()
    // with each one's share of the bundle's effective bytes, built from per-device sums instead of
    // routing every message. Without an efficiency table the sums are of integer rows (exact, and no
    // floating-point dependency chain in the O(P²) loop).
    template <typename Count>
    int32_t node_pair_bundle(
        int a0, int a1, int b0, int b1, uint8_t phase, double bytes_per_row, bool diagonal, Count count) {
        double total = 0, total_eff = 0;
        int members = 0;
        if (!net.has_efficiency_table()) {
            std::fill(rows_out.begin(), rows_out.begin() + (a1 - a0), 0);
            std::fill(rows_in.begin(), rows_in.begin() + (b1 - b0), 0);
            int64_t* __restrict in = rows_in.data();  // restrict: the sums do not alias the counts
            for (int a = a0; a < a1; ++a) {
                const int first = diagonal ? b0 + (a - a0) : b0, last = diagonal ? first + 1 : b1;
                int64_t out = 0;
                for (int b = first; b < last; ++b) {
                    const int64_t n = count(a, b);
                    out += n;
                    in[b - b0] += n;
                    members += n > 0;
                }
                rows_out[a - a0] = out;
            }
            return bundle_of_rows(a0, a1, b0, b1, phase, bytes_per_row, rows_out.data(), rows_in.data(),
                                  members);
        } else {
            std::fill(dev_out.begin(), dev_out.begin() + (a1 - a0), 0.0);
            std::fill(dev_in.begin(), dev_in.begin() + (b1 - b0), 0.0);
            for (int a = a0; a < a1; ++a)
                for (int b = diagonal ? b0 + (a - a0) : b0; b < (diagonal ? b0 + (a - a0) + 1 : b1); ++b) {
                    const double m = static_cast<double>(count(a, b)) * bytes_per_row;
                    if (m <= 0) continue;
                    const double eff = m / net.efficiency(m);
                    dev_out[a - a0] += eff;
                    dev_in[b - b0] += eff;
                    total += m;
                    total_eff += eff;
                    ++members;
                }
        }
        return bundle_of_bytes(a0, a1, b0, b1, phase, total, total_eff, members);
    }
    // The same from integer row sums: out_rows[a − a0] rows leave rank a, in_rows[b − b0] reach rank b,
    // in `members` messages.
    int32_t bundle_of_rows(int a0,
                           int a1,
                           int b0,
                           int b1,
                           uint8_t phase,
                           double bytes_per_row,
                           const int64_t* out_rows,
                           const int64_t* in_rows,
                           int members) {
        if (members == 0) return -1;
        int64_t total_rows = 0;
        for (int a = a0; a < a1; ++a) {
            dev_out[a - a0] = static_cast<double>(out_rows[a - a0]) * bytes_per_row;
            total_rows += out_rows[a - a0];
        }
        for (int b = b0; b < b1; ++b) dev_in[b - b0] = static_cast<double>(in_rows[b - b0]) * bytes_per_row;
        const double total = static_cast<double>(total_rows) * bytes_per_row;
        return bundle_of_bytes(a0, a1, b0, b1, phase, total, total, members);
    }
    // The same from dev_out / dev_in: each device's effective bytes.
    int32_t bundle_of_bytes(
        int a0, int a1, int b0, int b1, uint8_t phase, double total, double total_eff, int members) {
        if (members == 0) return -1;
        std::fill(port_out.begin(), port_out.end(), 0.0);
        std::fill(port_in.begin(), port_in.end(), 0.0);
        const int A = map.node_of_rank[a0], B2 = map.node_of_rank[b0];
        // Hops written field by field into a buffer sized once (push_back of a freshly built FlowHop
        // stalls on store forwarding, which was a quarter of the plain build).
        int num_hops = 0;
        auto hop = [&](int32_t link, double share) {
            hops[num_hops].link = link;
            hops[num_hops].share = static_cast<float>(share);
            ++num_hops;
        };
        const bool pcie = net.nic_traffic_crosses_device_links();
        for (int a = a0; a < a1; ++a) {
            port_out[port_of[a]] += dev_out[a - a0];
            if (pcie && dev_out[a - a0] > 0) hop(net.device_egress_link(a), dev_out[a - a0] / total_eff);
        }
        for (int b = b0; b < b1; ++b) {
            port_in[port_of[b]] += dev_in[b - b0];
            if (pcie && dev_in[b - b0] > 0) hop(net.device_ingress_link(b), dev_in[b - b0] / total_eff);
        }
        // Egress ports, then ingress ports, each in port order: add_bundle() stores equal shares on a
        // node's consecutive ports as one run, which simulate() can pool.
        for (int p = 0; p < net.nic_ports_per_node(); ++p)
            if (port_out[p] > 0) hop(net.nic_egress_link(A, p), port_out[p] / total_eff);
        for (int p = 0; p < net.nic_ports_per_node(); ++p)
            if (port_in[p] > 0) hop(net.nic_ingress_link(B2, p), port_in[p] / total_eff);
        if (net.core_link() >= 0) hop(net.core_link(), 1.0);
        return g.add_bundle(hops.data(), num_hops, total, std::max(total_eff, total), members,
                            net.inter_latency_s(), phase);
    }
    // One message a → b between `after_a`/`after_b` (both ends posted) and `then_a`/`then_b`.
    void message(int a,
                 int b,
                 double bytes,
                 uint8_t phase,
                 int32_t after_a,
                 int32_t after_b,
                 int32_t then_a,
                 int32_t then_b) {
        if (a == b || bytes <= 0) return;
        const int32_t x = g.add_transfer(a, b, bytes, phase);
        dep(after_a, x);
        if (after_b != after_a) dep(after_b, x);
        dep(x, then_a);
        if (then_b != then_a) dep(x, then_b);
    }
    // Per node: a join after the given per-rank tasks, and a join that releases them.
    Tasks node_join(const Tasks& per_rank, uint8_t phase) {
        Tasks node(N);
        for (int n = 0; n < N; ++n) node[n] = join(phase);
        for (int r = 0; r < P; ++r) dep(per_rank[r], node[map.node_of_rank[r]]);
        return node;
    }

    // -------------------------------------------------------------------------------------------
    // Exchanges

    // plain: one MPI_Alltoallv; a message starts when both ends are in the call.
    void plain(const Tasks& ready, bool reverse, uint8_t phase, Tasks& done) {
        done.resize(P);
        for (int r = 0; r < P; ++r) {
            done[r] = join(phase, r);
            dep(ready[r], done[r]);
        }
        const double B = w.bytes_per_row;
        for (int a = 0; a < P; ++a) {
            const int A = map.node_of_rank[a];
            if (aggregate)
                for (int l = 0; l < M; ++l) {
                    const int b = map.rank_at(A, l);
                    message(a, b, rows(a, b, reverse) * B, phase, ready[a], ready[b], done[a], done[b]);
                }
            else
                for (int b = 0; b < P; ++b)
                    message(a, b, rows(a, b, reverse) * B, phase, ready[a], ready[b], done[a], done[b]);
        }
        if (!aggregate || N == 1) return;
        const Tasks node_ready = node_join(ready, phase);
        Tasks node_done(N);
        for (int n = 0; n < N; ++n) node_done[n] = join(phase);
        for (int r = 0; r < P; ++r) dep(node_done[map.node_of_rank[r]], done[r]);
        // Node pairs in the order that reads the matrix row by row (the reverse exchange reads the
        // block of B2's rows): a column walk costs a cache and TLB miss per row at thousands of ranks.
        for (int X = 0; X < N; ++X)
            for (int Y = 0; Y < N; ++Y) {
                const int A = reverse ? Y : X, B2 = reverse ? X : Y;
                if (A == B2) continue;
                const int32_t x = node_pair_bundle(A * M, (A + 1) * M, B2 * M, (B2 + 1) * M, phase, B, false,
                                                   [&](int a, int b) { return rows(a, b, reverse); });
                if (x < 0) continue;
                dep(node_ready[A], x);
                dep(node_ready[B2], x);
                dep(x, node_done[A]);
                dep(x, node_done[B2]);
            }
    }

    // hierarchical (schedule_hierarchical.cpp): phase 1 sends each local peer l' the rows for rail l' on
    // every node; phase 2 sends, along the rank's rail, one message per other node.
    void hierarchical(const Tasks& ready, bool reverse, uint8_t phase, Tasks& done) {
        if (M == 1 || N == 1) return plain(ready, reverse, phase, done);
        const double B = w.bytes_per_row;
        Tasks p1(P);
        for (int r = 0; r < P; ++r) {
            p1[r] = join(phase, r);
            dep(ready[r], p1[r]);
        }
        // [P, M] rows of rank a for rail l, reading the matrix row by row in both directions; integer
        // sums (as in node_pair_bundle(): exact, and no floating-point dependency chain in the O(P²) loop).
        // Element (i, j) of the matrix is rows(a, b, reverse) with a, b = i, j forward and j, i reverse.
        to_rail.assign(static_cast<size_t>(P) * M, 0);
        const int* local = map.local_index.data();
        auto sum_rails = [&](const auto* matrix) {
            for (int i = 0; i < P; ++i) {
                const auto* row_i = matrix + static_cast<int64_t>(i) * P;
                int64_t* rails = to_rail.data();
                if (!reverse)
                    for (int j = 0; j < P; ++j) rails[static_cast<size_t>(i) * M + local[j]] += row_i[j];
                else
                    for (int j = 0; j < P; ++j) rails[static_cast<size_t>(j) * M + local[i]] += row_i[j];
            }
        };
        if (w.rows)
            sum_rails(w.rows);
        else
            sum_rails(w.rows32);
        for (int a = 0; a < P; ++a) {
            const int A = map.node_of_rank[a];
            for (int l = 0; l < M; ++l) {
                const int peer = map.rank_at(A, l);
                message(a, peer, static_cast<double>(to_rail[static_cast<size_t>(a) * M + l]) * B, phase,
                        ready[a], ready[peer], p1[a], p1[peer]);
            }
        }
        done.resize(P);
        for (int r = 0; r < P; ++r) {
            done[r] = join(phase, r);
            dep(p1[r], done[r]);
        }
        std::vector<int64_t> rail_rows(M);
        Tasks node_p1, node_done;
        if (aggregate) {
            node_p1 = node_join(p1, phase);
            node_done.resize(N);
            for (int n = 0; n < N; ++n) node_done[n] = join(phase);
            for (int r = 0; r < P; ++r) dep(node_done[map.node_of_rank[r]], done[r]);
        }
        for (int X = 0; X < N; ++X)
            for (int Y = 0; Y < N; ++Y) {
                const int A = reverse ? Y : X, B2 = reverse ? X : Y;  // row by row, as in plain()
                if (A == B2) continue;
                for (int l = 0; l < M; ++l) {
                    int64_t n = 0;  // rows of all of node A for rank (B2, l)
                    for (int src = 0; src < M; ++src)
                        n += rows(map.rank_at(A, src), map.rank_at(B2, l), reverse);
                    rail_rows[l] = n;
                    const int a = map.rank_at(A, l), b = map.rank_at(B2, l);
                    if (!aggregate)
                        message(a, b, static_cast<double>(n) * B, phase, p1[a], p1[b], done[a], done[b]);
                }
                if (!aggregate) continue;
                const int32_t x = node_pair_bundle(A * M, (A + 1) * M, B2 * M, (B2 + 1) * M, phase, B, true,
                                                   [&](int a, int) { return rail_rows[a - A * M]; });
                if (x < 0) continue;
                dep(node_p1[A], x);
                dep(node_p1[B2], x);
                dep(x, node_done[A]);
                dep(x, node_done[B2]);
            }
    }

    void exchange(const Tasks& ready, bool reverse, uint8_t phase, Tasks& done) {
        if (spec.kind == ScheduleKind::hierarchical)
            hierarchical(ready, reverse, phase, done);
        else
            plain(ready, reverse, phase, done);
    }

    // -------------------------------------------------------------------------------------------
    // The round trip (TokenExchange::round_trip, schedule*.cpp): exchange → compute (shadow rows, then every
    // source's blocks) → exchange back; pairwise pipelines it stage by stage.

    double shadow_flops(int r, bool backward) const {
        if (!w.shadow_rows) return 0;
        return static_cast<double>(w.shadow_rows[r]) * w.flops_per_row * (backward ? 2.0 : 1.0);
    }

    void run_experts(const Tasks& ready,
                     bool backward,
                     Tasks& run_end,
                     Tasks& last_compute,
                     std::vector<double>& expert_flops) {
        const uint8_t phase_in = backward ? kSimBwdCombine : kSimFwdDispatch;
        const uint8_t phase_compute = backward ? kSimBwdExpert : kSimFwdExpert;
        const uint8_t phase_out = backward ? kSimBwdDispatch : kSimFwdCombine;
        expert_flops.assign(P, 0.0);
        last_compute.assign(P, -1);
        if (spec.kind != ScheduleKind::pairwise) {
            Tasks arrived, computed(P);
            exchange(ready, false, phase_in, arrived);
            for (int r = 0; r < P; ++r) {
                const double flops = shadow_flops(r, backward) + received_flops[r];
                expert_flops[r] = flops;
                computed[r] = g.add_compute(r, flops, phase_compute);
                dep(arrived[r], computed[r]);
                last_compute[r] = computed[r];
            }
            exchange(computed, true, phase_out, run_end);
            return;
        }
        if (aggregate)
            pairwise_groups(ready, backward, run_end, last_compute, expert_flops);
        else
            pairwise_exact(ready, backward, run_end, last_compute, expert_flops);
        (void)phase_out;
    }

    // Per rank and stage, as the pairwise round trip does it: wait for stage s, post stage s + 1, compute
    // each source's blocks of stage s and send their results back at once (receives were posted up front).
    void pairwise_exact(const Tasks& ready,
                        bool backward,
                        Tasks& run_end,
                        Tasks& last_compute,
                        std::vector<double>& expert_flops) {
        const uint8_t phase_in = backward ? kSimBwdCombine : kSimFwdDispatch;
        const uint8_t phase_compute = backward ? kSimBwdExpert : kSimFwdExpert;
        const uint8_t phase_out = backward ? kSimBwdDispatch : kSimFwdCombine;
        const double B = w.bytes_per_row;
        std::vector<std::vector<PairwiseStage>> stages(P);
        for (int r = 0; r < P; ++r) stages[r] = pairwise_stages(map, spec.group_size, r);
        const int S = static_cast<int>(stages[0].size());
        Tasks post(ready), prev(ready), wait(P);
        run_end.resize(P);
        for (int r = 0; r < P; ++r) {
            run_end[r] = join(phase_out, r);
            const double shadow = shadow_flops(r, backward);
            if (shadow > 0) {  // compute_shadows() overlaps the first stage
                const int32_t c = g.add_compute(r, shadow, phase_compute);
                dep(ready[r], c);
                prev[r] = c;
                expert_flops[r] += shadow;
            }
        }
        for (int s = 0; s < S; ++s) {
            for (int r = 0; r < P; ++r) {
                wait[r] = join(phase_in, r);
                dep(post[r], wait[r]);
            }
            // Without async progress a stage's messages move only once both ends have finished the previous
            // stage's compute and wait in MPI; results go back once the sender's stage compute is done.
            const bool progress = net.async_progress();
            for (int a = 0; a < P; ++a)
                for (int b : stages[a][s].send_to)
                    message(a, b, rows(a, b, false) * B, phase_in, progress ? post[a] : prev[a],
                            progress ? post[b] : prev[b], wait[a], wait[b]);
            for (int r = 0; r < P; ++r) {
                const int32_t stage_begin = prev[r];
                for (int src : stages[r][s].recv_from) {
                    const double flops = block_flops(r, src);
                    const int64_t back = rows(src, r, false);
                    if (flops <= 0 && back == 0) continue;
                    const int32_t c = g.add_compute(r, flops, phase_compute);
                    dep(wait[r], c);
                    dep(prev[r], c);
                    prev[r] = c;
                    expert_flops[r] += flops;
                    if (progress && src != r && back > 0)
                        message(r, src, back * B, phase_out, c, c, run_end[r], run_end[src]);
                }
                if (progress || prev[r] == stage_begin) continue;
                for (int src : stages[r][s].recv_from) {
                    const int64_t back = rows(src, r, false);
                    if (src != r && back > 0)
                        message(r, src, back * B, phase_out, prev[r], prev[r], run_end[r], run_end[src]);
                }
            }
            post = wait;
        }
        for (int r = 0; r < P; ++r) {
            dep(prev[r], run_end[r]);
            dep(post[r], run_end[r]);
            last_compute[r] = prev[r];
        }
    }

    // Aggregated pairwise: the ranks of a group move in step (a group's stage starts when all its members
    // and all its partner group's members have posted it), stage traffic between two nodes is one
    // bundle, and a group's stage compute takes its slowest member's time.
    void pairwise_groups(const Tasks& ready,
                         bool backward,
                         Tasks& run_end,
                         Tasks& last_compute,
                         std::vector<double>& expert_flops) {
        const uint8_t phase_in = backward ? kSimBwdCombine : kSimFwdDispatch;
        const uint8_t phase_compute = backward ? kSimBwdExpert : kSimFwdExpert;
        const uint8_t phase_out = backward ? kSimBwdDispatch : kSimFwdCombine;
        const double B = w.bytes_per_row, rate = net.device_flops_per_s();
        const int G = spec.group_size, n = P / G;
        Tasks post(n), prev(n), end(n);
        for (int i = 0; i < n; ++i) {
            post[i] = join(phase_in);
            end[i] = join(phase_out);
            double shadow = 0;
            for (int m = 0; m < G; ++m) {
                const int r = i * G + m;
                dep(ready[r], post[i]);
                shadow = std::max(shadow, shadow_flops(r, backward));
                expert_flops[r] += shadow_flops(r, backward);
            }
            prev[i] = post[i];
            if (shadow > 0) {
                prev[i] = g.add_delay(shadow / rate, phase_compute);
                dep(post[i], prev[i]);
            }
        }
        // Traffic from the members of group i to those of group j, node pair by node pair;
        // count(a, b) gives each message's rows. Same-node pairs stay single messages.
        auto link = [&](int32_t bundle, int32_t after_i, int32_t after_j, int32_t then_i, int32_t then_j) {
            if (bundle < 0) return;
            dep(after_i, bundle);
            if (after_j != after_i) dep(after_j, bundle);
            dep(bundle, then_i);
            if (then_j != then_i) dep(bundle, then_j);
        };
        auto group_traffic = [&](int i, int j, uint8_t phase, int32_t after_i, int32_t after_j,
                                 int32_t then_i, int32_t then_j, auto count) {
            const int first_a = i * G, first_b = j * G;
            for (int A = first_a / M; A * M < first_a + G; ++A)
                for (int B2 = first_b / M; B2 * M < first_b + G; ++B2) {
                    const int a0 = std::max(first_a, A * M), a1 = std::min(first_a + G, (A + 1) * M);
                    const int b0 = std::max(first_b, B2 * M), b1 = std::min(first_b + G, (B2 + 1) * M);
                    if (A == B2) {
                        for (int a = a0; a < a1; ++a)
                            for (int b = b0; b < b1; ++b)
                                message(a, b, static_cast<double>(count(a, b)) * B, phase, after_i, after_j,
                                        then_i, then_j);
                        continue;
                    }
                    link(node_pair_bundle(a0, a1, b0, b1, phase, B, false, count), after_i, after_j, then_i,
                         then_j);
                }
        };
        // Stage s pairs group i with groups i − s (sends) and i + s (computes and returns): block (X, Y)
        // of the matrix (X's rows to Y's ranks) serves stage (X − Y) mod n in both directions. First
        // every group's stage compute (its slowest member's expert FLOPs), reading the blocks row by row.
        const auto stage_of = [n](int X, int Y) { return (X - Y + n) % n; };
        // When a group is a node and messages have no efficiency, a bundle needs only each block's row
        // sums, column sums and nonzero count, [·, X, 2G + 1], for both directions, instead of per bundle.
        const bool use_sums = G == M && !net.has_efficiency_table();
        const int64_t sums_size = 2 * static_cast<int64_t>(G) + 1;
        const bool sum_all = use_sums && static_cast<int64_t>(n) * n * sums_size * 8 <= kAllSumsBytes;
        if (stage_cached && !w.shadow_rows) {
            expert_flops = stage_expert_flops;
        } else {
            stage_slowest.assign(static_cast<size_t>(n) * n, 0.0);
            if (sum_all) assign_huge(all_sums, static_cast<size_t>(n) * n * sums_size, int64_t{0});
            std::vector<double> stage_flops(G);
            for (int X = 0; X < n; ++X)
                for (int Y = 0; Y < n; ++Y) {  // group Y computes group X's rows
                    std::fill(stage_flops.begin(), stage_flops.end(), 0.0);
                    int64_t* sums =
                        sum_all ? all_sums.data() + (static_cast<int64_t>(stage_of(X, Y)) * n + X) * sums_size
                                : nullptr;
                    for (int src = X * G; src < (X + 1) * G; ++src) {
                        // = block_flops(Y·G + m, src), the matrix row read straight (no checks per element).
                        const int64_t row0 = static_cast<int64_t>(src) * P + Y * G;
                        if (w.block_flops)
                            for (int m = 0; m < G; ++m) stage_flops[m] += block_flops(Y * G + m, src);
                        else if (w.rows)
                            for (int m = 0; m < G; ++m)
                                stage_flops[m] += static_cast<double>(w.rows[row0 + m]) * w.flops_per_row;
                        else
                            for (int m = 0; m < G; ++m)
                                stage_flops[m] += static_cast<double>(w.rows32[row0 + m]) * w.flops_per_row;
                        if (!sums) continue;
                        if (w.rows)
                            add_block_row(w.rows + row0, G, src - X * G, sums);
                        else
                            add_block_row(w.rows32 + row0, G, src - X * G, sums);
                    }
                    double slowest = 0;
                    for (int m = 0; m < G; ++m) {
                        expert_flops[Y * G + m] += stage_flops[m];
                        slowest = std::max(slowest, stage_flops[m]);
                    }
                    stage_slowest[static_cast<size_t>(stage_of(X, Y)) * n + Y] = slowest;
                }
            stage_cached = !w.shadow_rows;
            if (stage_cached) stage_expert_flops = expert_flops;
        }
        // Then stage by stage (tasks of a stage adjacent in memory, which the executor's cache needs). Stage
        // s reads the blocks of diagonal s, a walk that misses cache and TLB on every block row; so the
        // blocks of a band of stages are first copied out row by row (each matrix row's segment for the
        // band is contiguous), [stage − first, X, G, G], about 4 MiB: a stage's blocks are adjacent, so
        // its sends and its returns read them from cache (X-major, they mapped to a few cache sets).
        // (Not needed when all the sums are at hand.) With the sums, [stage − first, X, 2G + 1], only
        // stage 0's blocks are copied, and a band spans more stages (longer contiguous segments per
        // matrix row).
        const int64_t GG = static_cast<int64_t>(G) * G;
        const int64_t band_block_bytes = 8 * (use_sums ? sums_size : GG);
        const int band =
            static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n, (4 << 20) / (band_block_bytes * n))));
        band_rows.resize(sum_all ? 0 : static_cast<size_t>(use_sums ? 1 : band) * n * GG);
        band_sums.assign(use_sums && !sum_all ? static_cast<size_t>(band) * n * sums_size : 0, 0);
        int band_first = 0;
        auto fill_band = [&](int first) {
            band_first = first;
            const int last = std::min(n, first + band);
            std::fill(band_sums.begin(), band_sums.end(), 0);
            for (int X = 0; X < n; ++X)
                for (int a = X * G; a < (X + 1) * G; ++a) {
                    // A row's segments alone wait a memory latency (most of the fill at 4,096 ranks), so
                    // those of a row a few ahead are requested meanwhile.
                    // (Partner groups step down by one per stage: no division in these loops.)
                    const int ahead = a + kPrefetchRows;
                    if (ahead < P) {
                        int Y = ahead / G - first + n;
                        Y -= Y >= n ? n : 0;
                        for (int st = first; st < last; ++st) {
                            const int64_t i = static_cast<int64_t>(ahead) * P + static_cast<int64_t>(Y) * G;
                            prefetch_rows(i);
                            prefetch_rows(i + G - 1);
                            Y = Y == 0 ? n - 1 : Y - 1;
                        }
                    }
                    int Y = X - first + n;
                    Y -= Y >= n ? n : 0;
                    for (int st = first; st < last; ++st, Y = Y == 0 ? n - 1 : Y - 1) {
                        const int64_t block = static_cast<int64_t>(st - first) * n + X;
                        const int64_t i = static_cast<int64_t>(a) * P + static_cast<int64_t>(Y) * G;
                        if (!use_sums || st == 0) {  // with the sums, only stage 0's blocks are read
                            int64_t* to = band_rows.data() + (block * G + (a - X * G)) * G;
                            for (int b = 0; b < G; ++b) to[b] = row(i + b);
                        }
                        if (!use_sums) continue;
                        int64_t* sums = band_sums.data() + block * sums_size;
                        if (w.rows)
                            add_block_row(w.rows + i, G, a - X * G, sums);
                        else
                            add_block_row(w.rows32 + i, G, a - X * G, sums);
                    }
                }
        };
        auto block_sums = [&](int stage, int X) {
            if (sum_all) return all_sums.data() + (static_cast<int64_t>(stage) * n + X) * sums_size;
            return band_sums.data() + (static_cast<int64_t>(stage - band_first) * n + X) * sums_size;
        };
        // Block (X, ·) of diagonal `stage` in the band: its G × G rows, row-major.
        auto band_block = [&](int stage, int X) {
            return band_rows.data() + (static_cast<int64_t>(stage - band_first) * n + X) * GG;
        };
        Tasks wait(n);
        for (int s = 0; s < n; ++s) {
            if (!sum_all && s % band == 0) fill_band(s);
            for (int i = 0; i < n; ++i) {
                wait[i] = join(phase_in);
                dep(post[i], wait[i]);
            }
            for (int i = 0; i < n; ++i) {
                const int j = i >= s ? i - s : i - s + n;  // group i sends to group i − s in stage s
                const int64_t* block = sum_all ? nullptr : band_block(s, i);
                const int a0 = i * G, b0 = j * G;
                if (use_sums && s > 0) {  // rows out of group i's ranks: the row sums
                    const int64_t* sums = block_sums(s, i);
                    link(bundle_of_rows(a0, a0 + G, b0, b0 + G, phase_in, B, sums, sums + G,
                                        static_cast<int>(sums[2 * G])),
                         post[i], post[j], wait[i], wait[j]);
                    continue;
                }
                group_traffic(i, j, phase_in, post[i], post[j], wait[i], wait[j],
                              [&](int a, int b) {  // (all sums at hand: stage 0 reads the matrix)
                                  return block ? block[(a - a0) * G + (b - b0)] : rows(a, b, false);
                              });
            }
            for (int i = 0; i < n; ++i) {
                // and computes the blocks of group i + s, returning results
                const int k = i + s < n ? i + s : i + s - n;
                const int32_t c =
                    g.add_delay(stage_slowest[static_cast<size_t>(s) * n + i] / rate, phase_compute);
                dep(wait[i], c);
                dep(prev[i], c);
                prev[i] = c;
                // rows[src][r], src in group k, r in group i
                const int64_t* block = sum_all ? nullptr : band_block(s, k);
                const int src0 = k * G, r0 = i * G;
                if (use_sums && s > 0) {  // results out of group i's ranks: the column sums
                    const int64_t* sums = block_sums(s, k);
                    link(bundle_of_rows(r0, r0 + G, src0, src0 + G, phase_out, B, sums + G, sums,
                                        static_cast<int>(sums[2 * G])),
                         c, c, end[i], end[k]);
                    continue;
                }
                group_traffic(i, k, phase_out, c, c, end[i], end[k], [&](int r, int src) {
                    return block ? block[(src - src0) * G + (r - r0)] : rows(src, r, false);
                });
            }
            post = wait;
        }
        run_end.resize(P);
        for (int r = 0; r < P; ++r) {
            const int i = r / G;
            run_end[r] = join(phase_out, r);
            dep(end[i], run_end[r]);
            dep(prev[i], run_end[r]);
            dep(post[i], run_end[r]);
            last_compute[r] = prev[i];
        }
    }

    // -------------------------------------------------------------------------------------------
    // Shadowed experts: pipelined binary trees rooted at each owner (how MPI libraries broadcast and reduce
    // large messages), one expert after another. Rank v places (rank − owner) mod P has children 2v + 1
    // and 2v + 2; the parameters go down (gradients up) in segments, each link carrying them in order, so
    // a broadcast takes about 2 · bytes / bandwidth · (1 + (depth − 1) / segments) instead of the
    // log2(P) · bytes / bandwidth of an unpipelined binomial tree.

    int shadow_segments() const { return shadow_tree_segments(w.expert_param_bytes); }

    void shadow_broadcasts(Tasks& cursor, uint8_t phase) {
        const int S = shadow_segments();
        const double seg = w.expert_param_bytes / S;
        std::vector<int32_t> recv(static_cast<size_t>(P) * S);  // [v, s] segment s into place v
        for (int owner : w.shadow_owner) {
            std::vector<int32_t> last(P, -1);
            for (int v = 0; v < P; ++v) {  // parents before children
                const int r = (v + owner) % P;
                int32_t done = v == 0 ? cursor[r] : recv[static_cast<size_t>(v) * S + S - 1];
                for (int c = 2 * v + 1; c <= 2 * v + 2 && c < P; ++c) {
                    const int child = (c + owner) % P;
                    int32_t prev = -1;
                    for (int s = 0; s < S; ++s) {
                        const int32_t x = g.add_transfer(r, child, seg, phase);
                        dep(v == 0 ? cursor[r] : recv[static_cast<size_t>(v) * S + s], x);
                        dep(s == 0 ? cursor[child] : prev, x);
                        recv[static_cast<size_t>(c) * S + s] = x;
                        prev = x;
                    }
                    const int32_t both = join(phase, r);  // the rank is free when its sends are out
                    dep(done, both);
                    dep(prev, both);
                    done = both;
                }
                last[v] = done;
            }
            for (int v = 0; v < P; ++v) cursor[(v + owner) % P] = last[v];
        }
    }

    void shadow_reduces(Tasks& cursor, uint8_t phase) {
        const int S = shadow_segments();
        const double seg = w.expert_param_bytes / S;
        std::vector<int32_t> sent(static_cast<size_t>(P) * S);  // [v, s] segment s out of place v
        for (int owner : w.shadow_owner) {
            std::vector<int32_t> last(P);
            for (int v = P - 1; v >= 0; --v) {  // children before parents
                const int r = (v + owner) % P;
                if (v == 0) {
                    const int32_t done = join(phase, r);
                    dep(cursor[r], done);
                    for (int c = 1; c <= 2 && c < P; ++c) dep(sent[static_cast<size_t>(c) * S + S - 1], done);
                    last[v] = done;
                    continue;
                }
                const int parent = ((v - 1) / 2 + owner) % P;
                int32_t prev = -1;
                for (int s = 0; s < S; ++s) {  // a segment's partial sum goes up once the children's are in
                    const int32_t x = g.add_transfer(r, parent, seg, phase);
                    dep(s == 0 ? cursor[r] : prev, x);
                    if (s == 0) dep(cursor[parent], x);
                    for (int c = 2 * v + 1; c <= 2 * v + 2 && c < P; ++c)
                        dep(sent[static_cast<size_t>(c) * S + s], x);
                    sent[static_cast<size_t>(v) * S + s] = x;
                    prev = x;
                }
                last[v] = prev;  // the sender is free once its partial sum is out
            }
            for (int v = 0; v < P; ++v) cursor[(v + owner) % P] = last[v];
        }
    }

    // The layer's own work on its kept rows (Network::row_work_Bps; nothing when 0): `passes` row-sized
    // reads and writes per kept assignment of the rank (its rows to every rank, itself included, and its
    // shadowed rows), a delay after `cursor` that becomes the new cursor.
    void row_work(Tasks& cursor, double passes, uint8_t phase) {
        if (net.row_work_Bps() <= 0) return;
        for (int r = 0; r < P; ++r) {
            double rows = w.shadow_rows ? static_cast<double>(w.shadow_rows[r]) : 0.0;
            for (int b = 0; b < P; ++b) rows += static_cast<double>(w.rows[static_cast<int64_t>(r) * P + b]);
            const double seconds = rows * passes * w.bytes_per_row / net.row_work_Bps();
            // On shared cores the loops compete for the cores like the GEMMs (the same time when every
            // rank runs them at once, as calibrated); elsewhere they are a fixed time on the rank's chain.
            const int32_t t = net.shares_cores() ? g.add_compute(r, seconds * net.device_flops_per_s(), phase)
                                                 : g.add_delay(seconds, phase, r);
            dep(cursor[r], t);
            cursor[r] = t;
        }
    }

    // What an exchange that follows compute waits beyond its transfers (Network::exchange_wait_s, calibrated;
    // nothing when 0): ranks that outnumber their cores reach it late and in turns. A delay on every
    // rank's chain, once per exchange phase, whatever the schedule.
    void exchange_wait(Tasks& cursor, uint8_t phase) {
        if (net.exchange_wait_s() <= 0) return;
        for (int r = 0; r < P; ++r) {
            const int32_t t = g.add_delay(net.exchange_wait_s(), phase, r);
            dep(cursor[r], t);
            cursor[r] = t;
        }
    }

    // The route phase's compute as FLOPs at the device rate: the router's FLOPs take the time of the
    // router's own rate (the real gate code, calibrated), the rest (shared experts) the GEMM rate's.
    double route_compute_flops(bool backward) const {
        const double times = backward ? 2 : 1;
        return times * ((w.route_flops - w.router_flops) +
                        w.router_flops * net.device_flops_per_s() / net.router_flops_per_s(backward));
    }

    void build() {
        out.num_ranks = P;
        // Σ over sources of each rank's expert blocks, read row by row (a column walk of rows costs a
        // cache miss per element at thousands of ranks).
        received_flops.assign(P, 0.0);
        if (w.block_flops) {
            for (int a = 0; a < P; ++a)
                for (int b = 0; b < P; ++b)
                    received_flops[b] += w.block_flops[static_cast<int64_t>(b) * P + a];
        } else if (w.rows) {
            add_row_flops(w.rows, P, w.flops_per_row, received_flops.data());
        } else {
            add_row_flops(w.rows32, P, w.flops_per_row, received_flops.data());
        }
        out.rank_flops.assign(P, 0.0);
        // Route and the count all-gather (recursive doubling α plus the gathered bytes at the rank's
        // network share): a step-wide barrier.
        Tasks route(P);
        const int32_t counts_in = join(kSimFwdRoute);
        for (int r = 0; r < P; ++r) {
            route[r] = g.add_compute(r, route_compute_flops(false), kSimFwdRoute);
            dep(route[r], counts_in);
            out.rank_flops[r] += (w.backward ? 3 : 1) * w.route_flops;
        }
        double node_nic_Bps = 0;
        for (int p = 0; p < net.nic_ports_per_node(); ++p)
            node_nic_Bps += net.links()[net.nic_egress_link(0, p)].capacity_Bps;
        const double share_Bps = N > 1 ? node_nic_Bps / M : net.links()[0].capacity_Bps;
        const double rounds = P > 1 ? std::ceil(std::log2(static_cast<double>(P))) : 0;
        const double count_s = P > 1 ? rounds * (N > 1 ? net.inter_latency_s() : net.intra_latency_s()) +
                                           w.count_bytes * (P - 1) / share_Bps
                                     : 0;
        const int32_t counts = g.add_delay(count_s + net.exchange_wait_s(), kSimFwdRoute);
        dep(counts_in, counts);
        out.fwd_route_end.assign(P, counts);

        Tasks cursor(P, counts);
        shadow_broadcasts(cursor, kSimFwdDispatch);
        row_work(cursor, 2, kSimFwdDispatch);  // dispatch_pack: read x, write the send buffer
        exchange_wait(cursor, kSimFwdDispatch);
        run_experts(cursor, false, out.fwd_run_end, out.fwd_last_compute, out.fwd_expert_flops);
        exchange_wait(out.fwd_run_end, kSimFwdCombine);
        row_work(out.fwd_run_end, 2, kSimFwdCombine);  // combine: read each returned row, add into y
        for (int r = 0; r < P; ++r) out.rank_flops[r] += out.fwd_expert_flops[r];
        if (!w.backward) {
            out.rank_end = out.fwd_run_end;
            return;
        }
        out.bwd_run_begin = out.fwd_run_end;
        row_work(out.bwd_run_begin, 3, kSimBwdCombine);  // combine backward: read dy and y rows, write w·dy
        exchange_wait(out.bwd_run_begin, kSimBwdCombine);
        run_experts(out.bwd_run_begin, true, out.bwd_run_end, out.bwd_last_compute, out.bwd_expert_flops);
        exchange_wait(out.bwd_run_end, kSimBwdDispatch);
        row_work(out.bwd_run_end, 2, kSimBwdDispatch);  // dx: read each returned row, add into dx
        cursor.resize(P);
        for (int r = 0; r < P; ++r) {
            const double weights =
                received_flops[r];  // one GEMM pass over all its rows, after the round trip
            cursor[r] = g.add_compute(r, weights, kSimBwdExpert);
            dep(out.bwd_run_end[r], cursor[r]);
            out.rank_flops[r] += out.bwd_expert_flops[r] + weights;
        }
        shadow_reduces(cursor, kSimBwdExpert);
        out.bwd_weights_end = cursor;
        out.rank_end.resize(P);
        for (int r = 0; r < P; ++r) {
            out.rank_end[r] = g.add_compute(r, route_compute_flops(true), kSimBwdRoute);
            dep(cursor[r], out.rank_end[r]);
        }
    }
};

// The first negative entry of v[0, n), or -1 (a minimum first: a loop that vectorizes).
template <typename T>
int64_t first_negative(const T* v, int64_t n) {
    T lowest = 0;
    for (int64_t i = 0; i < n; ++i) lowest = std::min(lowest, v[i]);
    if (lowest >= 0) return -1;
    for (int64_t i = 0; i < n; ++i)
        if (v[i] < 0) return i;
    return -1;
}

}  // namespace

LayerGraph build_layer_graph(const Network& network, const LayerWork& work, const ScheduleSpec& spec) {
    const int P = network.num_ranks();
    EXPAR_REQUIRE(work.num_ranks == P, "simulated layer: the traffic is for "
                                           << work.num_ranks << " ranks, the network has " << P);
    EXPAR_REQUIRE(work.rows != nullptr || work.rows32 != nullptr, "simulated layer: no traffic matrix");
    EXPAR_REQUIRE(work.rows == nullptr || work.rows32 == nullptr,
                  "simulated layer: two traffic matrices (set rows or rows32, not both)");
    EXPAR_REQUIRE(work.bytes_per_row > 0, "simulated layer: bytes per row must be positive");
    EXPAR_REQUIRE(work.flops_per_row >= 0 && work.route_flops >= 0 && work.count_bytes >= 0,
                  "simulated layer: FLOPs and byte counts must be >= 0");
    EXPAR_REQUIRE(work.router_flops >= 0 && work.router_flops <= work.route_flops,
                  "simulated layer: router FLOPs must be in [0, route FLOPs]");
    const int64_t negative = work.rows ? first_negative(work.rows, static_cast<int64_t>(P) * P)
                                       : first_negative(work.rows32, static_cast<int64_t>(P) * P);
    if (negative >= 0) {
        const int64_t n = work.rows ? work.rows[negative] : work.rows32[negative];
        EXPAR_REQUIRE(n >= 0, "simulated layer: negative row count " << n << " from rank " << negative / P
                                                                     << " to rank " << negative % P);
    }
    for (int owner : work.shadow_owner)
        EXPAR_REQUIRE(owner >= 0 && owner < P,
                      "simulated layer: shadowed expert owner " << owner << " is not a rank");
    EXPAR_REQUIRE(work.shadow_owner.empty() || work.expert_param_bytes > 0,
                  "simulated layer: shadowing needs the expert parameter bytes");
    if (spec.kind == ScheduleKind::pairwise) {
        EXPAR_REQUIRE(spec.group_size > 0, "--group-size must be positive, got " << spec.group_size);
        EXPAR_REQUIRE(P % spec.group_size == 0, "--group-size " << spec.group_size << " does not divide the "
                                                                << P << " ranks (pairwise schedule)");
    }
    LayerGraph out;
    Builder builder(network, work, spec, out);
    const NodeMap& map = network.node_map();
    bool contiguous = true;
    for (int r = 0; r < P; ++r)
        contiguous = contiguous && map.node_of_rank[r] * map.ranks_per_node + map.local_index[r] == r;
    bool aggregate =
        spec.aggregation == Aggregation::node_pair || (spec.aggregation == Aggregation::automatic && P > 64);
    // Bundles need rank order = node order; aggregated pairwise also needs groups and nodes nested.
    const int G = spec.group_size, M = network.ranks_per_node();
    if (!contiguous || (spec.kind == ScheduleKind::pairwise && G % M != 0 && M % G != 0)) aggregate = false;
    builder.aggregate = aggregate;
    out.aggregated = aggregate;
    if (aggregate) {
        // Room for the graph up front (about 4 edges per bundle): regrowing its largest arrays would
        // hold two copies at once, which set the peak memory at 16,384 ranks.
        const int64_t N = network.num_nodes(), exchanges = work.backward ? 4 : 2;
        const int64_t n = spec.kind == ScheduleKind::pairwise ? P / G : N;
        const int64_t pairs = spec.kind == ScheduleKind::pairwise ? std::max(1, G / M) : 1;
        const int64_t bundles = exchanges * n * n * pairs * pairs;
        const int64_t per_rank = exchanges * (2 * static_cast<int64_t>(M) + 4) + 8;
        out.graph.reserve(bundles + 3 * exchanges * n * n + per_rank * P, 4 * bundles + 3 * per_rank * P,
                          bundles, 2 * bundles);
    }
    builder.build();
    return out;
}

LayerPrediction predict_layer(const Network& network,
                              const LayerWork& work,
                              const ScheduleSpec& spec,
                              const SimOptions& options) {
    LayerGraph lg = build_layer_graph(network, work, spec);
    lg.graph.finalize();
    LayerPrediction p;
    p.aggregated = lg.aggregated;
    p.num_tasks = lg.graph.num_tasks();
    p.sim = simulate(lg.graph, network, options);
    const std::vector<double>& end = p.sim.end_s;
    const int P = lg.num_ranks;
    const double rate = network.device_flops_per_s();
    // Expert compute time per rank: FLOPs / rate, or on shared cores (where the rate depends on how many
    // ranks compute at once) the simulated time of the run's compute tasks.
    std::vector<double> fwd_compute_s(P), bwd_compute_s(P);
    for (int r = 0; r < P; ++r) {
        fwd_compute_s[r] = lg.fwd_expert_flops[r] / rate;
        if (work.backward) bwd_compute_s[r] = lg.bwd_expert_flops[r] / rate;
    }
    // (Aggregated pairwise times a group's stage compute as a delay: FLOPs / rate, no sharing.)
    if (network.shares_cores() && !(lg.aggregated && spec.kind == ScheduleKind::pairwise)) {
        std::fill(fwd_compute_s.begin(), fwd_compute_s.end(), 0.0);
        std::fill(bwd_compute_s.begin(), bwd_compute_s.end(), 0.0);
        for (int64_t t = 0; t < lg.graph.num_tasks(); ++t) {
            if (lg.graph.kind(static_cast<int32_t>(t)) != TaskKind::compute) continue;
            const int r = lg.graph.rank(static_cast<int32_t>(t));
            const double seconds = end[t] - p.sim.start_s[t];
            const uint8_t phase = lg.graph.phase(static_cast<int32_t>(t));
            if (phase == kSimFwdExpert)
                fwd_compute_s[r] += seconds;
            else if (phase == kSimBwdExpert && work.backward && end[t] <= end[lg.bwd_run_end[r]])
                bwd_compute_s[r] += seconds;  // not the weight gradients, after the run
        }
    }
    p.rank_end_s.resize(P);
    p.phase_s.assign(static_cast<size_t>(P) * kNumSimPhases, 0.0);
    for (int r = 0; r < P; ++r) {
        double* ph = p.phase_s.data() + static_cast<size_t>(r) * kNumSimPhases;
        const double route = end[lg.fwd_route_end[r]], run = end[lg.fwd_run_end[r]];
        const double compute = fwd_compute_s[r];
        const double wait_out = std::max(0.0, run - end[lg.fwd_last_compute[r]]);
        ph[kSimFwdRoute] = route;
        ph[kSimFwdExpert] = compute;
        ph[kSimFwdCombine] = wait_out;
        ph[kSimFwdDispatch] = run - route - compute - wait_out;
        p.rank_end_s[r] = end[lg.rank_end[r]];
        if (work.backward) {
            const double begin = end[lg.bwd_run_begin[r]], run_b = end[lg.bwd_run_end[r]];
            const double compute_b = bwd_compute_s[r];
            const double wait_out_b = std::max(0.0, run_b - end[lg.bwd_last_compute[r]]);
            const double weights = end[lg.bwd_weights_end[r]];
            ph[kSimBwdCombine] = (begin - run) + (run_b - begin - compute_b - wait_out_b);
            ph[kSimBwdExpert] = compute_b + (weights - run_b);
            ph[kSimBwdDispatch] = wait_out_b;
            ph[kSimBwdRoute] = p.rank_end_s[r] - weights;
        }
        for (int k = 0; k < kNumSimPhases; ++k) p.max_phase_s[k] = std::max(p.max_phase_s[k], ph[k]);
    }
    p.step_s = p.sim.makespan_s;
    p.bound = lower_bound(network, p.sim.link_bytes, lg.rank_flops, min_message_latency_s(lg.graph, network));
    p.efficiency = p.step_s > 0 ? p.bound.total_s / p.step_s : 1.0;
    return p;
}

}  // namespace expar
