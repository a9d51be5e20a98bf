// The simulator's cost model against closed forms: point-to-point α + m·β, max-min fairness on textbook
// cases and against a plain progressive-filling reference (max_min_ref.h), a uniform single-switch
// all-to-all, FasterMoE's pipelined stage on two ranks; every prediction at or above its lower bound over
// random clusters and traffic; aggregated graphs against exact ones. Speed: build/sim_scale_bench.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "check.h"
#include "flow_sim.h"
#include "max_min_ref.h"
#include "network.h"
#include "schedule_graph.h"
#include "shadow_policy.h"
#include "task_graph.h"
#include "topology.h"

namespace expar {
namespace {

struct Cluster {
    int nodes = 2, devices = 1, nics = 1;
    std::string intra = "nvswitch", inter = "single_switch";
    double oversubscription = 1;
    double intra_GBps = 100, intra_us = 2, nic_GBps = 10, nic_us = 5, gflops = 1000;
    std::string calibration;  // YAML block, indented under "calibration:"
};

Topology make_topology(const Cluster& c) {
    std::ostringstream y;
    y << "name: t\nnodes: " << c.nodes << "\ndevices_per_node: " << c.devices << "\nnics_per_node: " << c.nics
      << "\nfabric:\n  intra: " << c.intra << "\n  inter: " << c.inter << "\n";
    if (c.inter == "fat_tree") y << "  oversubscription: " << c.oversubscription << "\n";
    y << "links:\n  intra: {bandwidth: " << c.intra_GBps << " GB/s, latency: " << c.intra_us
      << " us}\n  nic: {bandwidth: " << c.nic_GBps << " GB/s, latency: " << c.nic_us << " us}\n"
      << "dense_rate: {fp32: " << c.gflops << " GFLOP/s}\n";
    if (!c.calibration.empty())
        y << "calibration:\n  when: today\n  how: test\n  topology: t\n" << c.calibration;
    return parse_topology(y.str(), "test.yaml");
}

Network make_network(const Cluster& c, NicModel model = NicModel::per_port) {
    const Topology t = make_topology(c);
    return Network(t, sim_node_map(t, c.nodes * c.devices), model);
}

template <typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const Error& error) {
        return error.what();
    }
    return "";
}

// The topology of `c` fails to load with an error containing `message`.
void expect_topology_error(const Cluster& c, const std::string& message) {
    const std::string error = error_of([&] { make_topology(c); });
    EXPECT_NE(error.find(message), std::string::npos) << "error: '" << error << "', expected: " << message;
}

// ------------------------------------------------------------------------------------------------
// Point to point and efficiency

TEST(SimPointToPoint, AlphaPlusBytesOverBandwidth) {
    for (const bool same_node : {true, false}) {
        Cluster c;
        c.nodes = same_node ? 1 : 2;
        c.devices = same_node ? 2 : 1;
        const Network net = make_network(c);
        for (double m : {1.0, 4096.0, 1e6, 3.3e8}) {
            TaskGraph g;
            const int32_t x = g.add_transfer(0, 1, m, 0);
            const SimResult r = simulate(g, net);
            const double alpha = same_node ? 2e-6 : 5e-6, beta = same_node ? 1 / 100e9 : 1 / 10e9;
            EXPECT_NEAR(r.end_s[x], alpha + m * beta, 1e-12 * (alpha + m * beta)) << m;
            EXPECT_DOUBLE_EQ(r.makespan_s, r.end_s[x]);
        }
    }
}

TEST(SimPointToPoint, CalibrationReplacesLinksAndScalesBytesByEfficiency) {
    Cluster c;
    c.calibration =
        "  links:\n    nic: {bandwidth: 8 GB/s, latency: 7 us}\n"
        "  alltoall_efficiency:\n    - [1 KiB, 0.2]\n    - [1 MiB, 0.8]\n";
    const Network net = make_network(c);
    // Halfway in log(size) between 1 KiB and 1 MiB is 32 KiB: efficiency 0.5. Clamped outside.
    EXPECT_NEAR(net.efficiency(32768), 0.5, 1e-12);
    EXPECT_DOUBLE_EQ(net.efficiency(10), 0.2);
    EXPECT_DOUBLE_EQ(net.efficiency(1e9), 0.8);
    TaskGraph g;
    const int32_t x = g.add_transfer(0, 1, 32768, 0);
    EXPECT_NEAR(simulate(g, net).end_s[x], 7e-6 + 32768 / 0.5 / 8e9, 1e-15);
}

// ------------------------------------------------------------------------------------------------
// Max-min fairness

TEST(SimMaxMin, TwoFlowsOnOneLinkGetHalfEach) {
    FlowSim sim({NetLink{10, LinkClass::nic}});
    const FlowHop hop{0, 1.0f};
    sim.start(1, 10, 1, &hop, 1);
    sim.start(2, 20, 1, &hop, 1);
    EXPECT_DOUBLE_EQ(sim.rate_of(1), 5);
    EXPECT_DOUBLE_EQ(sim.rate_of(2), 5);
    // Flow 1 ends at 2 s; flow 2 then runs alone at 10: its last 10 bytes take 1 s more.
    std::vector<FlowDone> done;
    sim.advance_to(sim.next_completion_s(), done);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].id, 1);
    EXPECT_DOUBLE_EQ(done[0].finish_s, 2);
    EXPECT_DOUBLE_EQ(sim.next_completion_s(), 3);
}

// A flow shorter than the clock's rounding at a late time (1 byte at 1e9 B/s, 1 ns, at t = 1e13 s where
// one ulp is about 2 ms) is due at now. advance_to(now) must pop it: it once returned early and the
// engine, asking again for the same completion, spun forever.
TEST(SimMaxMin, FlowBelowTheClockRoundingFinishesAtNow) {
    FlowSim sim({NetLink{1e9, LinkClass::nic}});
    const FlowHop hop{0, 1.0f};
    std::vector<FlowDone> done;
    sim.advance_to(1e13, done);
    sim.start(1, 1, 1, &hop, 1);
    EXPECT_EQ(sim.next_completion_s(), 1e13);
    sim.advance_to(sim.next_completion_s(), done);
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].id, 1);
    EXPECT_EQ(sim.next_completion_s(), std::numeric_limits<double>::infinity());
}

TEST(SimMaxMin, FlowBottleneckedElsewhereLeavesTheRest) {
    // Link 0 (10) is shared; flow 1 also crosses link 1 (2), so it gets 2 and flow 2 the other 8.
    FlowSim sim({NetLink{10, LinkClass::nic}, NetLink{2, LinkClass::nic}});
    const FlowHop both[2] = {{0, 1.0f}, {1, 1.0f}};
    const FlowHop first{0, 1.0f};
    sim.start(1, 100, 1, both, 2);
    sim.start(2, 100, 1, &first, 1);
    EXPECT_DOUBLE_EQ(sim.rate_of(1), 2);
    EXPECT_DOUBLE_EQ(sim.rate_of(2), 8);
}

TEST(SimMaxMin, TextbookThreeLinkExample) {
    // Links A (1), B (2); flows: f1 on A, f2 on A+B, f3 on B, f4 on B. A saturates first at 0.5 each
    // (f1, f2); B's remaining 1.5 goes to f3 and f4 at 0.75 each.
    FlowSim sim({NetLink{1, LinkClass::nic}, NetLink{2, LinkClass::nic}});
    const FlowHop a{0, 1.0f}, b{1, 1.0f}, ab[2] = {{0, 1.0f}, {1, 1.0f}};
    sim.start(1, 1, 1, &a, 1);
    sim.start(2, 1, 1, ab, 2);
    sim.start(3, 1, 1, &b, 1);
    sim.start(4, 1, 1, &b, 1);
    EXPECT_DOUBLE_EQ(sim.rate_of(1), 0.5);
    EXPECT_DOUBLE_EQ(sim.rate_of(2), 0.5);
    EXPECT_DOUBLE_EQ(sim.rate_of(3), 0.75);
    EXPECT_DOUBLE_EQ(sim.rate_of(4), 0.75);
}

TEST(SimMaxMin, WeightsAndSharesActLikeMemberFlows) {
    // A bundle of 3 flows against 1 flow: 3/4 and 1/4 of the link. A flow with share 0.5 on a link
    // loads it with half its rate: alone on a 10-link it runs at 20.
    FlowSim sim({NetLink{8, LinkClass::nic}, NetLink{10, LinkClass::nic}});
    const FlowHop l0{0, 1.0f}, half{1, 0.5f};
    sim.start(1, 100, 3, &l0, 1);
    sim.start(2, 100, 1, &l0, 1);
    sim.start(3, 100, 1, &half, 1);
    EXPECT_DOUBLE_EQ(sim.rate_of(1), 6);
    EXPECT_DOUBLE_EQ(sim.rate_of(2), 2);
    EXPECT_DOUBLE_EQ(sim.rate_of(3), 20);
}

TEST(SimMaxMin, ResumedSolutionsEqualFreshOnes) {
    // FlowSim re-solves only the part of the max-min solution a change can reach; after every batch of
    // starts and completions each rate must equal that of a fresh FlowSim holding the same flows.
    std::mt19937_64 rng(99);
    auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * (rng() % 1000000) / 1e6; };
    int64_t num_partial = 0, num_total = 0;
    for (int trial = 0; trial < 40; ++trial) {
        std::vector<NetLink> links(2 + rng() % 12);
        for (NetLink& link : links) link = NetLink{uniform(1, 20), LinkClass::nic};
        struct Flow {
            int64_t id;
            double bytes, weight;
            std::vector<FlowHop> hops;
        };
        std::vector<Flow> all;
        std::vector<int64_t> active;
        FlowSim sim(links);
        auto start_some = [&](int n) {
            for (int i = 0; i < n; ++i) {
                Flow f{static_cast<int64_t>(all.size()), uniform(1, 100), 1.0 + rng() % 4, {}};
                std::vector<int> order(links.size());
                for (size_t l = 0; l < links.size(); ++l) order[l] = static_cast<int>(l);
                std::shuffle(order.begin(), order.end(), rng);
                const int num_hops = 1 + static_cast<int>(rng() % std::min<size_t>(4, links.size()));
                for (int h = 0; h < num_hops; ++h)
                    f.hops.push_back(
                        FlowHop{order[h], static_cast<float>(rng() % 3 ? 1.0 : uniform(0.1, 1))});
                sim.start(f.id, f.bytes, f.weight, f.hops.data(), num_hops);
                active.push_back(f.id);
                all.push_back(f);
            }
        };
        // Above 128 flows (flow_sim.cpp's kScanFlows) the level queue, else a scan of the bottlenecks.
        start_some(3 + static_cast<int>(rng() % 200));
        std::vector<FlowDone> done;
        for (int step = 0; step < 30 && !active.empty(); ++step) {
            done.clear();
            sim.advance_to(sim.next_completion_s(), done);
            for (const FlowDone& d : done) active.erase(std::find(active.begin(), active.end(), d.id));
            if (rng() % 2) start_some(1 + static_cast<int>(rng() % 3));
            FlowSim fresh(links);
            for (int64_t id : active) {
                const Flow& f = all[id];
                fresh.start(id, f.bytes, f.weight, f.hops.data(), static_cast<int>(f.hops.size()));
            }
            for (int64_t id : active) {
                const double expected = fresh.rate_of(id);
                EXPECT_NEAR(sim.rate_of(id), expected, 1e-9 * expected)
                    << "trial " << trial << " step " << step;
            }
        }
        num_partial += sim.num_partial_computations();
        num_total += sim.num_rate_computations();
    }
    // Many solutions resumed a previous one (about 40% with this seed), else this checked nothing new.
    EXPECT_GT(num_partial, num_total / 4) << num_partial << " of " << num_total;
}

// ------------------------------------------------------------------------------------------------
// Max-min fairness against the textbook reference (max_min_ref.h)

// Rates are levels λ = remaining capacity / demand, the remaining capacity after up to (flows × links)
// subtractions: the two solvers agree to rounding, which depends on the order of those subtractions
// (bitwise equal today; 1.6e-15 when the reference froze flows in reverse order), and grows only where a
// link's remaining capacity is a small difference of large ones. 1e-12 (about 4,500 ulp) leaves room for
// that; a wrong bottleneck, weight or share moves rates by percents (ignoring shares in the reference
// fails thousands of these checks).
constexpr double kMaxMinTolerance = 1e-12;

// A network of 2-12 links and flows on random non-empty sets of distinct links. textbook: every weight
// and share 1 (the classic problem); else weights 1-4 and some shares below 1, as bundles use them.
struct RandomFlows {
    std::vector<NetLink> links;
    std::vector<double> capacity;
    std::vector<test::RefFlow> flows;
};

RandomFlows random_flows(std::mt19937_64& rng, int min_flows, int max_flows, bool textbook) {
    auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * (rng() % 1000000) / 1e6; };
    RandomFlows r;
    r.links.resize(2 + rng() % 11);
    const bool realistic = rng() % 2;  // capacities over 3 decades in bytes/s, else small numbers
    for (NetLink& link : r.links) {
        link = NetLink{realistic ? std::pow(10.0, uniform(8, 11)) : uniform(1, 20), LinkClass::nic};
        r.capacity.push_back(link.capacity_Bps);
    }
    r.flows.resize(min_flows + rng() % (max_flows - min_flows + 1));
    std::vector<int32_t> order(r.links.size());
    for (size_t l = 0; l < order.size(); ++l) order[l] = static_cast<int32_t>(l);
    for (test::RefFlow& f : r.flows) {
        std::shuffle(order.begin(), order.end(), rng);
        const size_t num_hops = 1 + rng() % order.size();
        f.weight = textbook ? 1 : 1.0 + rng() % 4;
        for (size_t h = 0; h < num_hops; ++h)
            f.hops.push_back(
                FlowHop{order[h], static_cast<float>(textbook || rng() % 3 ? 1.0 : uniform(0.1, 1))});
        f.bytes = realistic ? std::pow(10.0, uniform(3, 8)) : uniform(1, 100);
    }
    return r;
}

// FlowSim's rates of `flows` all started at once, against the reference; the worst relative difference.
double max_min_difference(const std::vector<NetLink>& links,
                          const std::vector<double>& capacity,
                          const std::vector<test::RefFlow>& flows,
                          const std::string& what) {
    FlowSim sim(links);
    for (size_t f = 0; f < flows.size(); ++f)
        sim.start(static_cast<int64_t>(f), 1, flows[f].weight, flows[f].hops.data(),
                  static_cast<int>(flows[f].hops.size()));
    const std::vector<double> expected = test::max_min_rates_ref(capacity, flows);
    double worst = 0;
    for (size_t f = 0; f < flows.size(); ++f) {
        const double rate = sim.rate_of(static_cast<int64_t>(f));
        worst = std::max(worst, std::abs(rate - expected[f]) / expected[f]);
        EXPECT_NEAR(rate, expected[f], kMaxMinTolerance * expected[f]) << what << ", flow " << f;
    }
    return worst;
}

TEST(SimMaxMin, RatesEqualProgressiveFillingOnRandomNetworks) {
    std::mt19937_64 rng(2026);
    double worst = 0;
    int num_cases = 0;
    // 1-20 flows: flow_sim.cpp's scan of the flows' bottlenecks; 129-400: its level queue (kScanFlows).
    for (const auto& [min_flows, max_flows, num] : {std::tuple{1, 20, 200}, std::tuple{129, 400, 40}}) {
        for (int trial = 0; trial < num; ++trial, ++num_cases) {
            const RandomFlows r = random_flows(rng, min_flows, max_flows, trial % 2 == 0);
            worst = std::max(
                worst, max_min_difference(r.links, r.capacity, r.flows, "case " + std::to_string(num_cases)));
        }
    }
    std::printf("max-min rates vs the reference, %d random networks: worst relative difference %.3g\n",
                num_cases, worst);
}

TEST(SimMaxMin, RatesEqualProgressiveFillingInDegenerateCases) {
    // Equal capacities everywhere (ties between bottlenecks), one link shared by every flow, identical
    // flows, a flow alone on its link, a flow crossing every link. A flow on no link has no max-min rate
    // and cannot be started.
    FlowSim unbounded({NetLink{1, LinkClass::nic}});
    EXPECT_THROW(unbounded.start(0, 1, 1, nullptr, 0), Error);
    std::mt19937_64 rng(17);
    for (int trial = 0; trial < 50; ++trial) {
        RandomFlows r = random_flows(rng, 1, 20, trial % 2 == 0);
        for (NetLink& link : r.links) link.capacity_Bps = 10;
        r.capacity.assign(r.links.size(), 10);
        max_min_difference(r.links, r.capacity, r.flows, "equal capacities, case " + std::to_string(trial));
        // Flow 0 repeated: identical flows get identical rates in both.
        r.flows.push_back(r.flows[0]);
        r.flows.push_back(r.flows[0]);
        max_min_difference(r.links, r.capacity, r.flows, "repeated flow, case " + std::to_string(trial));
    }
    for (int n = 1; n <= 20; ++n) {
        // One link, n flows: c / n each in closed form too.
        const std::vector<NetLink> one{NetLink{7, LinkClass::nic}};
        std::vector<test::RefFlow> flows(n);
        for (test::RefFlow& f : flows) f.hops = {FlowHop{0, 1.0f}};
        max_min_difference(one, {7}, flows, "one link, " + std::to_string(n) + " flows");
        EXPECT_DOUBLE_EQ(test::max_min_rates_ref({7}, flows)[0], 7.0 / n);
        // Plus a flow alone on a second link and one crossing both: the lone flow gets its whole link.
        const std::vector<NetLink> two{NetLink{7, LinkClass::nic}, NetLink{3, LinkClass::nic}};
        flows.push_back(test::RefFlow{1, {FlowHop{1, 1.0f}}});
        flows.push_back(test::RefFlow{2, {FlowHop{0, 1.0f}, FlowHop{1, 0.5f}}});
        max_min_difference(two, {7, 3}, flows, "two links, " + std::to_string(n) + " flows");
    }
}

// Finish times from FlowSim driven as the executor drives it exactly (task_graph.cpp with rate_window
// 0): advance to the next start or the next completion, whichever is first, then start what is due.
std::vector<double> flow_sim_finish_times(const std::vector<NetLink>& links,
                                          const std::vector<test::RefFlow>& flows) {
    std::vector<size_t> order(flows.size());
    for (size_t f = 0; f < flows.size(); ++f) order[f] = f;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return flows[a].start_s < flows[b].start_s; });
    FlowSim sim(links);
    std::vector<FlowDone> done;
    for (size_t next = 0; next < order.size() || sim.num_active() > 0;) {
        const double start =
            next < order.size() ? flows[order[next]].start_s : std::numeric_limits<double>::infinity();
        sim.advance_to(std::min(start, sim.next_completion_s()), done);
        for (; next < order.size() && flows[order[next]].start_s <= sim.now_s(); ++next) {
            const test::RefFlow& f = flows[order[next]];
            sim.start(static_cast<int64_t>(order[next]), f.bytes, f.weight, f.hops.data(),
                      static_cast<int>(f.hops.size()));
        }
    }
    std::vector<double> finish(flows.size(), -1);
    for (const FlowDone& d : done) finish[d.id] = d.finish_s;
    return finish;
}

TEST(SimMaxMin, FinishTimesEqualEventSteppedReference) {
    // Flows starting at random times (some together, at 0), so that FlowSim resumes its solutions after
    // starts and completions while the reference re-solves from scratch at every event. Finish times add
    // the rounding of every interval before them, and a flow due within advance_to's 1e-12 window of an
    // event may end at it in one and just after it in the other: 1e-9 relative leaves room for both.
    std::mt19937_64 rng(4242);
    double worst = 0;
    int num_flows = 0;
    for (int trial = 0; trial < 100; ++trial) {
        RandomFlows r = random_flows(rng, 2, trial % 10 == 0 ? 200 : 30, trial % 2 == 0);
        double mean_duration = 0;  // of a flow alone at the slowest link's capacity
        for (const test::RefFlow& f : r.flows)
            mean_duration +=
                f.bytes / *std::min_element(r.capacity.begin(), r.capacity.end()) / r.flows.size();
        for (test::RefFlow& f : r.flows)
            f.start_s = rng() % 4 == 0 ? 0 : mean_duration * (rng() % 1000) / 100.0;
        const std::vector<double> expected = test::flow_finish_times_ref(r.capacity, r.flows);
        const std::vector<double> finish = flow_sim_finish_times(r.links, r.flows);
        for (size_t f = 0; f < r.flows.size(); ++f, ++num_flows) {
            worst = std::max(worst, std::abs(finish[f] - expected[f]) / expected[f]);
            EXPECT_NEAR(finish[f], expected[f], 1e-9 * expected[f]) << "trial " << trial << ", flow " << f;
        }
    }
    std::printf("finish times vs the event-stepped reference, %d flows: worst relative difference %.3g\n",
                num_flows, worst);
}

// ------------------------------------------------------------------------------------------------
// Uniform single-switch all-to-all

// Forward-only layer step with no compute: the count all-gather (⌈log2 P⌉ α, no bytes), then dispatch
// and combine, each the same all-to-all of m bytes per pair.
LayerWork uniform_work(int P, int64_t rows_per_pair, std::vector<int64_t>& rows) {
    rows.assign(static_cast<size_t>(P) * P, rows_per_pair);
    LayerWork w;
    w.num_ranks = P;
    w.rows = rows.data();
    w.bytes_per_row = 1024;
    w.backward = false;
    return w;
}

TEST(SimAllToAll, UniformSingleSwitchEqualsClosedForm) {
    // N nodes × M devices, per-device crossbar ports of b_intra, `nics` NIC ports per node of b_nic.
    // Every rank sends m to each of the P − 1 others. Each NIC port serves M/nics devices, so it carries
    // (M/nics)·M(N−1)·m (the node's NICs carry M(N−1)/N of the node's M·P·m bytes) shared equally by
    // all its flows, which all finish together; each crossbar port carries (M−1)·m. So one all-to-all
    // takes max(α_nic + (M/nics)·M(N−1)·m / b_nic, α_intra + (M−1)·m / b_intra).
    struct Case {
        int N, M, nics;
    };
    for (const Case k :
         {Case{2, 1, 1}, Case{1, 4, 1}, Case{2, 4, 4}, Case{3, 4, 2}, Case{4, 2, 1}, Case{2, 8, 8}}) {
        for (const Aggregation agg : {Aggregation::none, Aggregation::node_pair}) {
            Cluster c;
            c.nodes = k.N;
            c.devices = k.M;
            c.nics = k.nics;
            const Network net = make_network(c);
            const int P = k.N * k.M;
            std::vector<int64_t> rows;
            const LayerWork w = uniform_work(P, 100, rows);
            const double m = 100 * 1024.0;
            const double inter = k.N > 1 ? 5e-6 + double(k.M) / k.nics * k.M * (k.N - 1) * m / 10e9 : 0;
            const double intra = k.M > 1 ? 2e-6 + (k.M - 1) * m / 100e9 : 0;
            const double counts = std::ceil(std::log2(double(P))) * (k.N > 1 ? 5e-6 : 2e-6);
            ScheduleSpec spec;
            spec.aggregation = agg;
            const LayerPrediction p = predict_layer(net, w, spec);
            const double expected = counts + 2 * std::max(inter, intra);
            EXPECT_NEAR(p.step_s, expected, 1e-9 * expected)
                << "N=" << k.N << " M=" << k.M << " nics=" << k.nics;
            EXPECT_LE(p.efficiency, 1 + 1e-12);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Pairwise overlap on two ranks

TEST(SimPairwise, SecondStageTransferOverlapsOwnBlock) {
    // Two nodes of one rank, group size 1: stage 0 = own rows (compute c0), stage 1 = the peer's rows
    // (transfer t, compute c1, results back t). Stage 1 is posted when stage 0 has been waited (at once),
    // and the own block computes while it flies: forward run = max(t, c0) + c1 + t.
    Cluster c;
    c.gflops = 1;  // 1 GFLOP/s
    const Network net = make_network(c);
    std::vector<int64_t> rows = {300, 100, 100, 300};  // rows[src][dst]
    LayerWork w;
    w.num_ranks = 2;
    w.rows = rows.data();
    w.bytes_per_row = 1000;
    w.flops_per_row = 1e4;  // 10 µs per row
    w.backward = false;
    ScheduleSpec spec;
    spec.kind = ScheduleKind::pairwise;
    spec.group_size = 1;
    spec.aggregation = Aggregation::none;
    const LayerPrediction p = predict_layer(net, w, spec);
    const double t = 5e-6 + 100 * 1000 / 10e9, c0 = 300 * 1e-5, c1 = 100 * 1e-5, counts = 5e-6;
    EXPECT_NEAR(p.step_s, counts + std::max(t, c0) + c1 + t, 1e-12);
    // Plain serialises it: exchange, compute all, exchange back.
    spec.kind = ScheduleKind::plain;
    EXPECT_NEAR(predict_layer(net, w, spec).step_s, counts + t + c0 + c1 + t, 1e-12);
}

TEST(SimPairwise, NoAsyncProgressSerialisesTransfersAndCompute) {
    // The same two ranks on a transport that moves bytes only inside MPI calls (calibration
    // async_progress: false): stage 1's rows move only after both ranks' stage-0 compute, and the results
    // go back after the stage-1 compute: forward run = c0 + t + c1 + t, as plain.
    Cluster c;
    c.gflops = 1;
    c.calibration = "  async_progress: false\n";
    const Network net = make_network(c);
    EXPECT_FALSE(net.async_progress());
    std::vector<int64_t> rows = {300, 100, 100, 300};
    LayerWork w;
    w.num_ranks = 2;
    w.rows = rows.data();
    w.bytes_per_row = 1000;
    w.flops_per_row = 1e4;
    w.backward = false;
    ScheduleSpec spec;
    spec.kind = ScheduleKind::pairwise;
    spec.group_size = 1;
    spec.aggregation = Aggregation::none;
    const double t = 5e-6 + 100 * 1000 / 10e9, c0 = 300 * 1e-5, c1 = 100 * 1e-5, counts = 5e-6;
    EXPECT_NEAR(predict_layer(net, w, spec).step_s, counts + c0 + t + c1 + t, 1e-12);
}

TEST(SimRowWork, AddsPassesTimesKeptRowBytesOverRate) {
    // Row work at 2 GB/s on two ranks with 400 kept rows each of 1000 bytes: forward + backward add
    // (2 + 2 + 3 + 2) passes × 400 × 1000 B / 2 GB/s = 1.8 ms to every rank, in the phases of the loops.
    Cluster c;
    c.gflops = 1;
    std::vector<int64_t> rows = {300, 100, 100, 300};
    LayerWork w;
    w.num_ranks = 2;
    w.rows = rows.data();
    w.bytes_per_row = 1000;
    w.flops_per_row = 1e4;
    ScheduleSpec spec;
    spec.aggregation = Aggregation::none;
    const LayerPrediction base = predict_layer(make_network(c), w, spec);
    c.calibration = "  row_work_bandwidth: 2 GB/s\n";
    const Network net = make_network(c);
    EXPECT_DOUBLE_EQ(net.row_work_Bps(), 2e9);
    const LayerPrediction p = predict_layer(net, w, spec);
    const double pass_s = 400 * 1000 / 2e9;
    EXPECT_NEAR(p.step_s, base.step_s + 9 * pass_s, 1e-12);
    const int phases[] = {kSimFwdDispatch, kSimFwdCombine, kSimBwdCombine, kSimBwdDispatch};
    const double passes[] = {2, 2, 3, 2};
    for (int i = 0; i < 4; ++i)
        EXPECT_NEAR(p.max_phase_s[phases[i]], base.max_phase_s[phases[i]] + passes[i] * pass_s, 1e-12)
            << to_string(SimPhase(phases[i]));
    EXPECT_LE(p.bound.total_s, p.step_s);
}

// Shared cores: 4 ranks on one host of 2 cores, calibrated at 1 GFLOP/s per rank with all 4 computing, so
// a host does 4 GFLOP/s and one task at most a core, 2 GFLOP/s.
TEST(SimSharedCores, ComputeIsProcessorShared) {
    Cluster c;
    c.nodes = 1;
    c.devices = 4;
    c.gflops = 1;
    c.calibration = "  shared_cores: {ranks_per_host: 4, cores_per_host: 2}\n";
    const Network net = make_network(c);
    ASSERT_TRUE(net.shares_cores());
    {  // alone: a whole core
        TaskGraph g;
        const int32_t t = g.add_compute(0, 2e9, 0);
        EXPECT_NEAR(simulate(g, net).end_s[t], 1.0, 1e-12);
    }
    {  // all four at once: the calibrated rate
        TaskGraph g;
        for (int r = 0; r < 4; ++r) g.add_compute(r, 1e9, 0);
        const SimResult res = simulate(g, net);
        for (int t = 0; t < 4; ++t) EXPECT_NEAR(res.end_s[t], 1.0, 1e-12);
    }
    {  // three at once get 4/3 GFLOP/s each; when two end (1.5 s), the third runs at a core
        TaskGraph g;
        const int32_t big = g.add_compute(0, 4e9, 0), a = g.add_compute(1, 2e9, 0),
                      b = g.add_compute(2, 2e9, 0);
        const SimResult res = simulate(g, net);
        EXPECT_NEAR(res.end_s[a], 1.5, 1e-12);
        EXPECT_NEAR(res.end_s[b], 1.5, 1e-12);
        EXPECT_NEAR(res.end_s[big], 1.5 + 2e9 / 2e9, 1e-12);
        EXPECT_NEAR(res.rank_compute_s[0], 2.5, 1e-12);
    }
    {  // one device runs one task at a time (each at a whole core)
        TaskGraph g;
        const int32_t a = g.add_compute(3, 2e9, 0), b = g.add_compute(3, 2e9, 0);
        const SimResult res = simulate(g, net);
        EXPECT_NEAR(std::min(res.end_s[a], res.end_s[b]), 1.0, 1e-12);
        EXPECT_NEAR(std::max(res.start_s[a], res.start_s[b]), 1.0, 1e-12);
        EXPECT_NEAR(std::max(res.end_s[a], res.end_s[b]), 2.0, 1e-12);
        EXPECT_NEAR(res.rank_compute_s[3], 2.0, 1e-12);
    }
    // As many cores as ranks: no sharing, every task at the calibrated rate.
    c.calibration = "  shared_cores: {ranks_per_host: 4, cores_per_host: 4}\n";
    const Network own = make_network(c);
    EXPECT_FALSE(own.shares_cores());
    TaskGraph g;
    const int32_t t = g.add_compute(0, 2e9, 0);
    EXPECT_NEAR(simulate(g, own).end_s[t], 2.0, 1e-12);
}

TEST(SimSharedCores, MeasuredAloneRateCapsOneRank) {
    // 2 ranks on 2 cores: 1 GFLOP/s each when both compute (as calibrated), 1.5 alone (measured: a core's
    // shared cache and memory bandwidth to itself). The file's dense rate is nominal, 4 GFLOP/s, with
    // gemm_efficiency 0.25: the alone rate scales with it.
    Cluster c;
    c.nodes = 1;
    c.devices = 2;
    c.gflops = 4;
    c.calibration =
        "  gemm_efficiency: 0.25\n  gemm_rate: 1 GFLOP/s\n  gemm_rate_alone: 1.5 GFLOP/s\n"
        "  shared_cores: {ranks_per_host: 2, cores_per_host: 2}\n";
    const Network net = make_network(c);
    ASSERT_TRUE(net.shares_cores());
    EXPECT_DOUBLE_EQ(net.rank_max_flops_per_s(), 1.5e9);
    EXPECT_DOUBLE_EQ(net.host_flops_per_s(), 2e9);
    TaskGraph g;
    const int32_t a = g.add_compute(0, 1e9, 0), b = g.add_compute(1, 2e9, 0);
    const SimResult res = simulate(g, net);
    EXPECT_NEAR(res.end_s[a], 1.0, 1e-12);                // both at 1 GFLOP/s
    EXPECT_NEAR(res.end_s[b], 1.0 + 1e9 / 1.5e9, 1e-12);  // then b alone at 1.5
}

TEST(SimSharedCores, LayerPhasesAddUpAndStayAboveTheBound) {
    // Skewed traffic on 4 ranks sharing 2 cores: the hot rank computes mostly alone, at a whole core.
    Cluster c;
    c.nodes = 2;
    c.devices = 2;
    c.gflops = 10;
    c.calibration = "  row_work_bandwidth: 2 GB/s\n  shared_cores: {ranks_per_host: 4, cores_per_host: 2}\n";
    std::vector<int64_t> rows = {100, 10, 10, 10, 100, 10, 10, 10, 100, 10, 10, 10, 100, 10, 10, 10};
    LayerWork w;
    w.num_ranks = 4;
    w.rows = rows.data();
    w.bytes_per_row = 1000;
    w.flops_per_row = 1e6;
    w.route_flops = 1e5;
    w.count_bytes = 64;
    for (ScheduleKind kind : {ScheduleKind::plain, ScheduleKind::pairwise, ScheduleKind::hierarchical}) {
        ScheduleSpec spec;
        spec.kind = kind;
        spec.group_size = 1;
        spec.aggregation = Aggregation::none;
        const Network shared = make_network(c);
        const LayerPrediction p = predict_layer(shared, w, spec);
        EXPECT_LE(p.bound.total_s, p.step_s * (1 + 1e-12)) << to_string(kind);
        for (int r = 0; r < 4; ++r) {
            double sum = 0;
            for (int k = 0; k < kNumSimPhases; ++k) {
                EXPECT_GE(p.phase_s[r * kNumSimPhases + k], -1e-12) << to_string(kind);
                sum += p.phase_s[r * kNumSimPhases + k];
            }
            EXPECT_NEAR(sum, p.rank_end_s[r], 1e-9 * p.rank_end_s[r]) << to_string(kind);
        }
        // The hot rank's forward expert compute: 400 rows × 1 MFLOP, at most a core (20 GFLOP/s), at least
        // the calibrated all-ranks rate (10 GFLOP/s).
        EXPECT_GE(p.phase_s[kSimFwdExpert], 400 * 1e6 / 20e9 * (1 - 1e-12)) << to_string(kind);
        EXPECT_LE(p.phase_s[kSimFwdExpert], 400 * 1e6 / 10e9 * (1 + 1e-12)) << to_string(kind);
        // Without sharing it is exactly FLOPs / the calibrated rate, and the step is no faster.
        Cluster own = c;
        own.calibration = "  row_work_bandwidth: 2 GB/s\n";
        const LayerPrediction q = predict_layer(make_network(own), w, spec);
        EXPECT_NEAR(q.phase_s[kSimFwdExpert], 400 * 1e6 / 10e9, 1e-12) << to_string(kind);
        EXPECT_LE(p.step_s, q.step_s * (1 + 1e-12)) << to_string(kind);
    }
}

TEST(SimRouterRate, GatePhasesTakeRouterFlopsAtTheRouterRate) {
    // One rank, no traffic to others: the forward gate is 1 MFLOP of other gate work at the GEMM rate plus
    // 2 MFLOP of router at its forward rate; the backward gate twice the FLOPs, the router at its backward
    // rate.
    Cluster c;
    c.nodes = 1;
    c.devices = 1;
    c.gflops = 10;
    std::vector<int64_t> rows = {100};
    LayerWork w;
    w.num_ranks = 1;
    w.rows = rows.data();
    w.bytes_per_row = 1000;
    w.flops_per_row = 1e6;
    w.route_flops = 3e6;
    w.router_flops = 2e6;
    ScheduleSpec spec;
    spec.aggregation = Aggregation::none;
    const LayerPrediction base = predict_layer(make_network(c), w, spec);
    EXPECT_NEAR(base.max_phase_s[kSimFwdRoute], 3e6 / 10e9, 1e-15);
    EXPECT_NEAR(base.max_phase_s[kSimBwdRoute], 6e6 / 10e9, 1e-15);
    c.calibration = "  router_rate: {forward: 0.5 GFLOP/s, backward: 2 GFLOP/s}\n";
    const LayerPrediction p = predict_layer(make_network(c), w, spec);
    EXPECT_NEAR(p.max_phase_s[kSimFwdRoute], 1e6 / 10e9 + 2e6 / 0.5e9, 1e-15);
    EXPECT_NEAR(p.max_phase_s[kSimBwdRoute], 2e6 / 10e9 + 4e6 / 2e9, 1e-15);
    EXPECT_NEAR(p.max_phase_s[kSimFwdExpert], base.max_phase_s[kSimFwdExpert], 1e-15);
    w.router_flops = 4e6;  // more than the gate's FLOPs
    EXPECT_NE(error_of([&] {
                  predict_layer(make_network(c), w, spec);
              }).find("router FLOPs must be in [0, route FLOPs]"),
              std::string::npos);
    c.calibration = "  router_rate: {forward: 1 GFLOP/s}\n";
    expect_topology_error(c, "backward");
    c.calibration = "  router_rate: {forward: 0 GFLOP/s, backward: 1 GFLOP/s}\n";
    expect_topology_error(c, "router_rate.forward: compute rate must be in [1e-06, 1e+09] GFLOP/s");
}

TEST(SimExchangeWait, EveryExchangeAfterComputeWaitsOnce) {
    // 4 ranks on 2 nodes, uniform traffic, forward and backward, under each schedule: a calibrated
    // exchange_wait of 3 ms adds exactly 3 ms to each of the step's five exchanges (the count exchange,
    // dispatch, combine and their backward), in those phases, and nothing to the expert phases.
    Cluster c;
    c.devices = 2;
    std::vector<int64_t> rows(16, 50);
    LayerWork w;
    w.num_ranks = 4;
    w.rows = rows.data();
    w.bytes_per_row = 4096;
    w.flops_per_row = 1e6;
    w.route_flops = 1e6;
    w.count_bytes = 64;
    for (ScheduleKind kind : {ScheduleKind::plain, ScheduleKind::pairwise, ScheduleKind::hierarchical}) {
        ScheduleSpec spec;
        spec.kind = kind;
        spec.group_size = 2;
        spec.aggregation = Aggregation::none;
        c.calibration.clear();
        const LayerPrediction base = predict_layer(make_network(c), w, spec);
        c.calibration = "  exchange_wait: 3000 us\n";
        const LayerPrediction p = predict_layer(make_network(c), w, spec);
        EXPECT_NEAR(p.step_s - base.step_s, 5 * 3e-3, 1e-12) << to_string(kind);
        for (int phase : {kSimFwdRoute, kSimFwdDispatch, kSimFwdCombine, kSimBwdCombine, kSimBwdDispatch})
            EXPECT_NEAR(p.max_phase_s[phase] - base.max_phase_s[phase], 3e-3, 1e-12)
                << to_string(kind) << " " << to_string(SimPhase(phase));
        for (int phase : {kSimFwdExpert, kSimBwdExpert, kSimBwdRoute})
            EXPECT_NEAR(p.max_phase_s[phase], base.max_phase_s[phase], 1e-12) << to_string(SimPhase(phase));
        EXPECT_LE(p.bound.total_s, p.step_s);
    }
    c.calibration = "  exchange_wait: -1 us\n";
    expect_topology_error(c, "calibration.exchange_wait: time must be in [0, 1e+06] us, got '-1 us'");
    c.calibration = "  exchange_wait: 1e300 s\n";
    expect_topology_error(c, "calibration.exchange_wait: time must be in [0, 1e+06] us");
    c.calibration = "  exchange_wait: 3 GB/s\n";
    expect_topology_error(c, "exchange_wait");
}

TEST(SimShadow, BroadcastIsAPipelinedBinaryTree) {
    // 7 ranks on one crossbar, one shadowed expert of 4 MiB from rank 0 (4 segments of 1 MiB), no other
    // traffic or compute. Every rank sends each segment to its two children at once (their sends share its
    // egress port): a segment hop takes α + 2 · 1 MiB / bandwidth, and the depth-2 tree fills its pipeline
    // in 4 + 1 of them.
    Cluster c;
    c.nodes = 1;
    c.devices = 7;
    c.intra_GBps = 100;
    c.intra_us = 2;
    std::vector<int64_t> rows(49, 0), shadow_rows(7, 0);
    LayerWork w;
    w.num_ranks = 7;
    w.rows = rows.data();
    w.bytes_per_row = 1000;
    w.shadow_owner = {0};
    w.shadow_rows = shadow_rows.data();
    w.expert_param_bytes = 4 << 20;
    w.backward = false;
    ScheduleSpec spec;
    spec.aggregation = Aggregation::none;
    const LayerPrediction p = predict_layer(make_network(c), w, spec);
    const double hop_s = 2e-6 + 2.0 * (1 << 20) / 100e9;
    EXPECT_NEAR(p.max_phase_s[kSimFwdDispatch], 5 * hop_s, 1e-12);
    // What the shadowing policy charges for it (latency aside) is the same tree.
    EXPECT_NEAR(p.max_phase_s[kSimFwdDispatch] - 5 * 2e-6,
                pipelined_tree_factor(7, 4 << 20) * (4 << 20) / 100e9, 1e-12);
    // Backward: the gradients go up the same tree, segment by segment, each rank sending to one parent.
    w.backward = true;
    const LayerPrediction q = predict_layer(make_network(c), w, spec);
    EXPECT_GT(q.step_s, p.step_s);
    EXPECT_LE(q.bound.total_s, q.step_s);
}

TEST(SimCalibration, BadSharedCores) {
    Cluster c;
    c.calibration = "  shared_cores: {ranks_per_host: 0, cores_per_host: 2}\n";
    expect_topology_error(c, "calibration.shared_cores.ranks_per_host: expected a whole number >= 1, got 0");
    c.calibration = "  shared_cores: {ranks_per_host: 4, cores_per_host: 1.5}\n";
    expect_topology_error(c, "cores_per_host: expected a whole number >= 1, got 1.5");
    c.calibration = "  shared_cores: {ranks_per_host: 4}\n";
    expect_topology_error(c, "cores_per_host");
    c.calibration = "  gemm_rate_alone: 0 GFLOP/s\n";
    expect_topology_error(c, "calibration.gemm_rate_alone: compute rate must be in [1e-06, 1e+09] GFLOP/s");
}

TEST(SimCalibration, BadRowWorkAndProgressValues) {
    Cluster c;
    c.calibration = "  async_progress: maybe\n";
    expect_topology_error(c, "calibration.async_progress: expected true or false, got 'maybe'");
    c.calibration = "  row_work_bandwidth: 5\n";
    expect_topology_error(c, "calibration.row_work_bandwidth: '5' has no unit");
    c.calibration = "  row_work_bandwidth: -1 GB/s\n";
    expect_topology_error(c, "row_work_bandwidth: bandwidth must be in [1e-06, 1e+07] GB/s");
}

// ------------------------------------------------------------------------------------------------
// Random clusters and traffic: bound, and aggregated against exact

struct RandomCase {
    Cluster cluster;
    std::vector<int64_t> rows, shadow_rows;
    LayerWork work;
    ScheduleSpec spec;
};

RandomCase random_case(std::mt19937_64& rng, bool uniform) {
    auto pick = [&](int n) { return static_cast<int>(rng() % n); };
    RandomCase rc;
    Cluster& c = rc.cluster;
    const int Ns[] = {1, 2, 3, 4}, Ms[] = {1, 2, 4};
    c.nodes = Ns[pick(4)];
    c.devices = Ms[pick(3)];
    c.nics = 1 + pick(c.devices);
    const char* intras[] = {"nvswitch", "ring", "pcie", "shared_memory"};
    c.intra = intras[pick(4)];
    c.inter = pick(2) ? "fat_tree" : "single_switch";
    c.oversubscription = c.inter == "fat_tree" ? 1 + pick(4) : 1;
    c.intra_GBps = 20 + pick(200);
    c.nic_GBps = 1 + pick(30);
    c.intra_us = pick(5);
    c.nic_us = pick(10);
    if (pick(2))
        c.calibration =
            "  alltoall_efficiency:\n    - [4 KiB, 0.3]\n    - [1 MiB, 0.9]\n  gemm_efficiency: 0.7\n";
    const int P = c.nodes * c.devices;

    rc.rows.resize(static_cast<size_t>(P) * P);
    const int hot = pick(P);
    for (int a = 0; a < P; ++a)
        for (int b = 0; b < P; ++b)
            rc.rows[a * P + b] = uniform ? 40 : (pick(4) == 0 ? 0 : pick(60)) + (b == hot ? pick(200) : 0);
    LayerWork& w = rc.work;
    w.num_ranks = P;
    w.rows = rc.rows.data();
    w.bytes_per_row = 512 * (1 + pick(8));
    w.flops_per_row = pick(3) == 0 ? 0 : 1e3 * (1 + pick(1000));
    w.route_flops = 1e6 * pick(10);
    w.count_bytes = 8 * 16;
    w.backward = pick(3) != 0;
    if (!uniform && pick(3) == 0) {
        w.shadow_owner = {pick(P), pick(P)};
        w.expert_param_bytes = 1e5 * (1 + pick(10));
        rc.shadow_rows.resize(P);
        for (int r = 0; r < P; ++r) rc.shadow_rows[r] = pick(50);
        w.shadow_rows = rc.shadow_rows.data();
    }
    ScheduleSpec& s = rc.spec;
    s.kind = static_cast<ScheduleKind>(pick(3));
    std::vector<int> sizes;
    for (int g = 1; g <= P; ++g)
        if (P % g == 0) sizes.push_back(g);
    s.group_size = sizes[pick(static_cast<int>(sizes.size()))];
    if (uniform) s.group_size = c.devices;
    return rc;
}

TEST(SimBound, NoPredictionFallsBelowTheBound) {
    std::mt19937_64 rng(20250605);
    for (int trial = 0; trial < 300; ++trial) {
        RandomCase rc = random_case(rng, false);
        if (trial % 4 == 1)  // CPU ranks sharing cores: hosts of 1 to P ranks (the last may be smaller)
            rc.cluster.calibration +=
                "  shared_cores: {ranks_per_host: " + std::to_string(1 + trial / 4 % rc.work.num_ranks) +
                ", cores_per_host: " + std::to_string(1 + trial / 8 % 2) + "}\n";
        const Topology t = make_topology(rc.cluster);
        const Network net(t, sim_node_map(t, rc.work.num_ranks),
                          trial % 5 == 0 ? NicModel::pooled : NicModel::per_port);
        for (const Aggregation agg : {Aggregation::none, Aggregation::node_pair}) {
            rc.spec.aggregation = agg;
            SimOptions options;
            options.rate_window = trial % 2 ? 0.0 : 0.01;
            const LayerPrediction p = predict_layer(net, rc.work, rc.spec, options);
            SCOPED_TRACE("trial " + std::to_string(trial) + " P=" + std::to_string(rc.work.num_ranks) + " " +
                         to_string(rc.spec.kind) + " g=" + std::to_string(rc.spec.group_size));
            ASSERT_GT(p.bound.total_s, 0);
            EXPECT_GE(p.step_s, p.bound.total_s * (1 - 1e-9));
            EXPECT_LE(p.efficiency, 1 + 1e-9);
            // Phases add up to each rank's end, none negative.
            for (int r = 0; r < rc.work.num_ranks; ++r) {
                double sum = 0;
                for (int k = 0; k < kNumSimPhases; ++k) {
                    EXPECT_GE(p.phase_s[r * kNumSimPhases + k], -1e-12)
                        << to_string(SimPhase(k)) << " agg " << p.aggregated;
                    sum += p.phase_s[r * kNumSimPhases + k];
                }
                EXPECT_NEAR(sum, p.rank_end_s[r], 1e-9 * p.rank_end_s[r] + 1e-15);
            }
        }
    }
}

TEST(SimAggregation, ExactOnUniformTraffic) {
    std::mt19937_64 rng(7);
    for (int trial = 0; trial < 60; ++trial) {
        RandomCase rc = random_case(rng, true);
        rc.cluster.calibration.clear();  // equal message sizes anyway; keep the check simple
        // Aggregated pairwise returns a stage's results when the group's whole stage compute is done,
        // the real code block by block: equal only without compute.
        if (rc.spec.kind == ScheduleKind::pairwise) rc.work.flops_per_row = 0;
        const Topology t = make_topology(rc.cluster);
        const Network net(t, sim_node_map(t, rc.work.num_ranks));
        rc.spec.aggregation = Aggregation::none;
        const LayerPrediction exact = predict_layer(net, rc.work, rc.spec);
        rc.spec.aggregation = Aggregation::node_pair;
        const LayerPrediction agg = predict_layer(net, rc.work, rc.spec);
        SCOPED_TRACE("trial " + std::to_string(trial) + " " + to_string(rc.spec.kind) +
                     " N=" + std::to_string(rc.cluster.nodes) + " M=" + std::to_string(rc.cluster.devices) +
                     " " + rc.cluster.intra);
        EXPECT_NEAR(agg.step_s, exact.step_s, 1e-9 * exact.step_s);
    }
}

TEST(SimAggregation, EvenlySpreadNicPortsArePooledExactly) {
    // 3 nodes × 4 devices × 4 NICs: uniform traffic spreads every bundle evenly over a node's ports, so
    // all 2 × 3 port sets are simulated as one port each, with the exact graph's step time. A hot
    // destination rank makes its node's ingress uneven, and its egress in the combine (which returns the
    // rows); every other node still spreads evenly (each of its devices sends the hot rank the same): 4
    // sets left.
    Cluster c;
    c.nodes = 3;
    c.devices = 4;
    c.nics = 4;
    const Network net = make_network(c);
    std::vector<int64_t> rows;
    LayerWork w = uniform_work(12, 50, rows);
    ScheduleSpec spec;
    spec.aggregation = Aggregation::none;
    const LayerPrediction exact = predict_layer(net, w, spec);
    EXPECT_EQ(exact.sim.num_pooled_nic_groups, 0);  // single messages on every port
    spec.aggregation = Aggregation::node_pair;
    const LayerPrediction pooled = predict_layer(net, w, spec);
    EXPECT_EQ(pooled.sim.num_pooled_nic_groups, 6);
    EXPECT_NEAR(pooled.step_s, exact.step_s, 1e-12 * exact.step_s);
    for (size_t l = 0; l < exact.sim.link_bytes.size(); ++l)  // every port still carries its bytes
        EXPECT_NEAR(pooled.sim.link_bytes[l], exact.sim.link_bytes[l], 1e-6 * exact.sim.link_bytes[l]) << l;
    for (int a = 0; a < 12; ++a) rows[a * 12 + 5] += 400;
    const LayerPrediction uneven = predict_layer(net, w, spec);
    EXPECT_EQ(uneven.sim.num_pooled_nic_groups, 4);
}

// Bundles force their messages to finish together and pairwise groups to move in step; on small random
// skewed cases the step time stays within this fraction of the exact graph's (docs/simulator.md).
constexpr double kAggregationTolerance = 0.2;

TEST(SimAggregation, WithinToleranceOnSkewedTraffic) {
    std::mt19937_64 rng(11);
    double worst = 0;
    for (int trial = 0; trial < 100; ++trial) {
        RandomCase rc = random_case(rng, false);
        const Topology t = make_topology(rc.cluster);
        const Network net(t, sim_node_map(t, rc.work.num_ranks));
        if (rc.spec.kind == ScheduleKind::pairwise) rc.spec.group_size = rc.cluster.devices;
        rc.spec.aggregation = Aggregation::none;
        const double exact = predict_layer(net, rc.work, rc.spec).step_s;
        rc.spec.aggregation = Aggregation::node_pair;
        const double agg = predict_layer(net, rc.work, rc.spec).step_s;
        worst = std::max(worst, std::abs(agg - exact) / exact);
        EXPECT_NEAR(agg, exact, kAggregationTolerance * exact) << "trial " << trial;
    }
    std::printf("aggregated vs exact step time, skewed traffic: worst relative difference %.3f\n", worst);
}

// What the timed 4,096-rank step once asserted, at the smallest sizes that show it (the timing itself is
// build/sim_scale_bench's, whose default cases include 4,096 ranks, plain, uniform, forward + backward):
// the automatic choice aggregates above 64 ranks, and there predicts the exact graph's step on uniform
// traffic, at or above the bound.
TEST(SimAggregation, AutomaticAboveSixtyFourRanksAndExactOnUniformTraffic) {
    for (const int nodes : {8, 9}) {
        Cluster c;
        c.nodes = nodes;
        c.devices = 8;
        c.nics = 8;
        const Network net = make_network(c);
        std::vector<int64_t> rows;
        LayerWork w = uniform_work(nodes * 8, 2, rows);
        w.backward = true;
        w.flops_per_row = 1e6;
        const LayerPrediction automatic = predict_layer(net, w, {});
        EXPECT_EQ(automatic.aggregated, nodes * 8 > 64) << nodes * 8 << " ranks";
        EXPECT_GE(automatic.step_s, automatic.bound.total_s * (1 - 1e-9));
        ScheduleSpec exact;
        exact.aggregation = Aggregation::none;
        const double exact_step_s = predict_layer(net, w, exact).step_s;
        EXPECT_NEAR(automatic.step_s, exact_step_s, 1e-9 * exact_step_s) << nodes * 8 << " ranks";
    }
}

TEST(SimAggregation, Int32RowsPredictTheSameAsInt64) {
    std::mt19937_64 rng(5);
    for (int trial = 0; trial < 20; ++trial) {
        RandomCase rc = random_case(rng, false);
        const Topology t = make_topology(rc.cluster);
        const Network net(t, sim_node_map(t, rc.work.num_ranks));
        const double wide = predict_layer(net, rc.work, rc.spec).step_s;
        std::vector<int32_t> rows32(rc.rows.begin(), rc.rows.end());
        rc.work.rows = nullptr;
        rc.work.rows32 = rows32.data();
        EXPECT_EQ(predict_layer(net, rc.work, rc.spec).step_s, wide) << "trial " << trial;
    }
}

TEST(SimTaskGraph, FinalizedGraphSimulatesAndWalksTheSame) {
    std::mt19937_64 rng(3);
    RandomCase rc = random_case(rng, false);
    const Topology t = make_topology(rc.cluster);
    const Network net(t, sim_node_map(t, rc.work.num_ranks));
    LayerGraph lg = build_layer_graph(net, rc.work, rc.spec);
    const SimResult plain = simulate(lg.graph, net);
    std::vector<int64_t> first_before, first_after;
    std::vector<int32_t> list_before, list_after;
    lg.graph.predecessors(first_before, list_before);
    const int64_t edges = lg.graph.num_edges();
    lg.graph.finalize();
    EXPECT_EQ(lg.graph.num_edges(), edges);
    lg.graph.predecessors(first_after, list_after);
    EXPECT_EQ(first_after, first_before);
    for (size_t t0 = 0; t0 + 1 < first_before.size(); ++t0) {  // same sets (order within a task may differ)
        std::sort(list_before.begin() + first_before[t0], list_before.begin() + first_before[t0 + 1]);
        std::sort(list_after.begin() + first_after[t0], list_after.begin() + first_after[t0 + 1]);
    }
    EXPECT_EQ(list_after, list_before);
    const SimResult finalized = simulate(lg.graph, net);
    EXPECT_EQ(finalized.end_s, plain.end_s);
}

// ------------------------------------------------------------------------------------------------
// Bad input

TEST(SimErrors, OneLineMessages) {
    Cluster c;
    c.nodes = 2;
    c.devices = 4;
    const Topology t = make_topology(c);
    EXPECT_EQ(error_of([&] { sim_node_map(t, 6); }),
              "the simulated rank count 6 is not a multiple of 4 devices per node (topology 't')");
    EXPECT_EQ(error_of([&] { sim_node_map(t, 0); }), "the simulated rank count must be positive, got 0");
    const Network net(t, sim_node_map(t, 8));
    std::vector<int64_t> rows(64, 1);
    LayerWork w;
    w.num_ranks = 4;
    w.rows = rows.data();
    w.bytes_per_row = 8;
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, {}); }),
              "simulated layer: the traffic is for 4 ranks, the network has 8");
    w.num_ranks = 8;
    rows[9] = -2;
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, {}); }),
              "simulated layer: negative row count -2 from rank 1 to rank 1");
    rows[9] = 1;
    std::vector<int32_t> rows32(64, 1);
    w.rows32 = rows32.data();
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, {}); }),
              "simulated layer: two traffic matrices (set rows or rows32, not both)");
    w.rows = nullptr;
    rows32[10] = -3;
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, {}); }),
              "simulated layer: negative row count -3 from rank 1 to rank 2");
    w.rows32 = nullptr;
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, {}); }), "simulated layer: no traffic matrix");
    w.rows = rows.data();
    ScheduleSpec spec;
    spec.kind = ScheduleKind::pairwise;
    spec.group_size = 3;
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, spec); }),
              "--group-size 3 does not divide the 8 ranks (pairwise schedule)");
    w.shadow_owner = {9};
    EXPECT_EQ(error_of([&] { build_layer_graph(net, w, {}); }),
              "simulated layer: shadowed expert owner 9 is not a rank");
}

}  // namespace
}  // namespace expar
