// The simulator's routing against definitions and against the core: distributions match their closed
// forms statistically (Zipf and Plackett–Luce frequencies, Dirichlet moments, drift of the hot expert),
// every rank routes T·k assignments, replay preserves the log's per-expert fractions, and the capacity,
// shadowing and topology-gate decisions are those of the layer's own functions (src/layer: the same code
// path).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <numeric>

#include "capacity.h"
#include "check.h"
#include "h5_file.h"
#include "routing.h"
#include "shadow_policy.h"

using testing::HasSubstr;

namespace expar {
namespace {

template <typename F>
std::string error_of(F f) {
    try {
        f();
    } catch (const Error& error) {
        EXPECT_TRUE(error.all_ranks());
        return error.what();
    }
    return "";
}

LayerConfig small_config(int64_t E, int k, int64_t T) {
    LayerConfig c;
    c.num_experts = E;
    c.top_k = k;
    c.tokens_per_rank = T;
    c.capacity_factor = 0;  // dropless unless a test says otherwise
    c.d_model = 16;
    c.d_ff = 32;
    return c;
}

LayerCluster cluster_of(int P, int ranks_per_node) {
    LayerCluster cluster{node_map_blocks(P, ranks_per_node)};
    cluster.local_GBps = 10;
    cluster.net_GBps = 1;
    cluster.device_gflops = 100;
    return cluster;
}

// Column sums of requested over `steps` steps.
std::vector<double> expert_totals(RoutingModel& model, int steps, int64_t E) {
    RoutingStep s = model.make_step();
    std::vector<double> totals(E, 0.0);
    for (int t = 0; t < steps; ++t) {
        model.step(t, &s);
        for (int r = 0; r < s.num_ranks; ++r)
            for (int64_t e = 0; e < E; ++e) totals[e] += static_cast<double>(s.requested[r * E + e]);
    }
    return totals;
}

// cap: no expert gets more than T (a token takes an expert once); replay with merged experts may.
void expect_rows_sum_to_tk(const RoutingStep& s, int k, bool cap = true) {
    for (int r = 0; r < s.num_ranks; ++r) {
        int64_t sum = 0;
        for (int64_t e = 0; e < s.num_experts; ++e) {
            const int64_t n = s.requested[r * s.num_experts + e];
            EXPECT_GE(n, 0);
            if (cap) EXPECT_LE(n, s.tokens_per_rank) << "an expert gets a token at most once";
            sum += n;
        }
        EXPECT_EQ(sum, s.tokens_per_rank * k) << "rank " << r;
    }
}

TEST(SimRouting, EveryRankRoutesTokensTimesK) {
    for (RoutingKind kind :
         {RoutingKind::uniform, RoutingKind::zipf, RoutingKind::dirichlet, RoutingKind::drift}) {
        for (RoutingPath path : {RoutingPath::count, RoutingPath::gate}) {
            for (int64_t sim_tokens : {0, 100}) {
                RoutingSpec spec;
                spec.kind = kind;
                spec.path = path;
                spec.zipf_s = kind == RoutingKind::zipf || kind == RoutingKind::drift ? 1.5 : 0.0;
                spec.dirichlet_alpha = 0.3;
                spec.sim_tokens = sim_tokens;
                RoutingModel model(spec, small_config(16, 3, 333), cluster_of(4, 2), ShadowCostModel{});
                RoutingStep s = model.make_step();
                for (int t = 0; t < 3; ++t) {
                    model.step(t, &s);
                    SCOPED_TRACE(std::string(to_string(kind)) + " " + to_string(path));
                    expect_rows_sum_to_tk(s, 3);
                }
            }
        }
    }
}

// k = 1: expert e is chosen with probability (e+1)^-s / H(E, s), the Zipf closed form. 4 ranks × 20000
// tokens × 2 steps = 160000 draws: a frequency's standard deviation is below 0.0013, tolerance 5 sd.
TEST(SimRouting, ZipfTopOneFrequenciesMatchTheClosedForm) {
    const int64_t E = 8, T = 20000;
    const double s = 1.2;
    double H = 0;
    for (int64_t e = 0; e < E; ++e) H += std::pow(e + 1.0, -s);
    for (RoutingPath path : {RoutingPath::count, RoutingPath::gate}) {
        RoutingSpec spec;
        spec.kind = RoutingKind::zipf;
        spec.zipf_s = s;
        spec.path = path;
        RoutingModel model(spec, small_config(E, 1, T), cluster_of(4, 4), ShadowCostModel{});
        const std::vector<double> totals = expert_totals(model, 2, E);
        const double n = 4.0 * T * 2;
        for (int64_t e = 0; e < E; ++e) {
            const double p = std::pow(e + 1.0, -s) / H;
            EXPECT_NEAR(totals[e] / n, p, 5 * std::sqrt(p * (1 - p) / n))
                << "expert " << e << " " << to_string(path);
        }
    }
}

// k = 2 without replacement: P(e among the two) = p_e + Σ_{j≠e} p_j · p_e / (1 − p_j) (Plackett–Luce).
TEST(SimRouting, TopTwoInclusionMatchesSuccessiveSampling) {
    const int64_t E = 4, T = 20000;
    const double s = 1.0;
    double H = 0;
    for (int64_t e = 0; e < E; ++e) H += std::pow(e + 1.0, -s);
    std::vector<double> p(E), inclusion(E);
    for (int64_t e = 0; e < E; ++e) p[e] = std::pow(e + 1.0, -s) / H;
    for (int64_t e = 0; e < E; ++e) {
        inclusion[e] = p[e];
        for (int64_t j = 0; j < E; ++j)
            if (j != e) inclusion[e] += p[j] * p[e] / (1 - p[j]);
    }
    for (RoutingPath path : {RoutingPath::count, RoutingPath::gate}) {
        RoutingSpec spec;
        spec.kind = RoutingKind::zipf;
        spec.zipf_s = s;
        spec.path = path;
        spec.seed = 7;
        RoutingModel model(spec, small_config(E, 2, T), cluster_of(4, 4), ShadowCostModel{});
        const std::vector<double> totals = expert_totals(model, 2, E);
        const double tokens = 4.0 * T * 2;
        for (int64_t e = 0; e < E; ++e) {
            const double q = inclusion[e];
            EXPECT_NEAR(totals[e] / tokens, q, 5 * std::sqrt(q * (1 - q) / tokens))
                << "expert " << e << " " << to_string(path);
        }
    }
}

// Dirichlet(alpha, ..., alpha) weights: mean 1/E and variance (1/E)(1 − 1/E)/(E·alpha + 1) per expert.
TEST(SimRouting, DirichletPreferencesHaveTheDirichletMoments) {
    const int P = 256;
    const int64_t E = 256;
    const double alpha = 0.05;  // E·alpha = 12.8: each rank leans on a few dozen experts
    RoutingSpec spec;
    spec.kind = RoutingKind::dirichlet;
    spec.dirichlet_alpha = alpha;
    RoutingModel model(spec, small_config(E, 2, 64), cluster_of(P, 1), ShadowCostModel{});
    std::vector<double> w(E), mean(E, 0.0), square(E, 0.0);
    for (int r = 0; r < P; ++r) {
        model.expert_weights(0, r, w.data());
        const double total = std::accumulate(w.begin(), w.end(), 0.0);
        for (int64_t e = 0; e < E; ++e) {
            mean[e] += w[e] / total / P;
            square[e] += (w[e] / total) * (w[e] / total) / P;
        }
    }
    const double m = 1.0 / E, var = m * (1 - m) / (E * alpha + 1);
    double pooled_var = 0;
    for (int64_t e = 0; e < E; ++e) {
        EXPECT_NEAR(mean[e], m, 5 * std::sqrt(var / P)) << "expert " << e;
        pooled_var += (square[e] - m * m) / E;
    }
    EXPECT_NEAR(pooled_var, var, 0.1 * var);
    // A rank's preference is fixed over steps, and ranks differ.
    std::vector<double> again(E), other(E);
    model.expert_weights(5, 3, w.data());
    model.expert_weights(9, 3, again.data());
    model.expert_weights(9, 4, other.data());
    EXPECT_EQ(w, again);
    EXPECT_NE(w, other);
}

// Dirichlet(alpha → 0) puts all of a rank's weight on one expert. The gamma variates behind it are
// U^(1/alpha)-small (alpha = 1e-4: U^10000), which once underflowed to one floor for every expert of most
// ranks: uniform routing where the most concentrated was asked for.
TEST(SimRouting, TinyDirichletAlphaSendsEachRankToOneExpert) {
    for (double alpha : {1e-4, 1e-6}) {
        for (RoutingPath path : {RoutingPath::count, RoutingPath::gate}) {
            RoutingSpec spec;
            spec.kind = RoutingKind::dirichlet;
            spec.dirichlet_alpha = alpha;
            spec.path = path;
            const int P = 8;
            const int64_t E = 8, T = 256;
            RoutingModel model(spec, small_config(E, 1, T), cluster_of(P, 4), ShadowCostModel{});
            RoutingStep s = model.make_step();
            model.step(0, &s);
            for (int r = 0; r < P; ++r) {
                const int64_t* row = s.requested.data() + r * E;
                EXPECT_EQ(*std::max_element(row, row + E), T)
                    << "rank " << r << ", alpha " << alpha << ", " << to_string(path);
            }
        }
    }
}

// At an extreme skew every weight but the hottest underflows to 0 (2^-1100). The law still ranks the
// experts: each token's second choice is the second hottest, on both paths (the count path once took the
// last expert of its scan).
TEST(SimRouting, ExtremeZipfSkewKeepsTheRankingOnBothPaths) {
    for (RoutingPath path : {RoutingPath::count, RoutingPath::gate}) {
        RoutingSpec spec;
        spec.kind = RoutingKind::zipf;
        spec.zipf_s = 1100;
        spec.path = path;
        const int64_t E = 8, T = 64;
        RoutingModel model(spec, small_config(E, 2, T), cluster_of(2, 2), ShadowCostModel{});
        RoutingStep s = model.make_step();
        model.step(0, &s);
        for (int r = 0; r < 2; ++r) {
            EXPECT_EQ(s.requested[r * E + 0], T) << to_string(path);
            EXPECT_EQ(s.requested[r * E + 1], T) << to_string(path);
        }
    }
}

TEST(SimRouting, DriftMovesTheHotExpertAtTheGivenRate) {
    const int64_t E = 16;
    RoutingSpec spec;
    spec.kind = RoutingKind::drift;
    spec.zipf_s = 2.0;  // the hottest expert takes ~62% of top-1 picks, the next ~15%
    spec.drift_rate = 0.5;
    RoutingModel model(spec, small_config(E, 1, 500), cluster_of(4, 2), ShadowCostModel{});
    RoutingStep s = model.make_step();
    for (int t = 0; t < 40; ++t) {
        model.step(t, &s);
        std::vector<int64_t> load(E, 0);
        for (int r = 0; r < 4; ++r)
            for (int64_t e = 0; e < E; ++e) load[e] += s.requested[r * E + e];
        const int64_t hottest = std::max_element(load.begin(), load.end()) - load.begin();
        EXPECT_EQ(hottest, (t / 2) % E) << "step " << t;
    }
}

TEST(SimRouting, SameSeedSameBitsOtherSeedOtherBits) {
    RoutingSpec spec;
    spec.kind = RoutingKind::zipf;
    spec.zipf_s = 1.0;
    auto run = [&](RoutingPath path, uint64_t seed) {
        spec.path = path;
        spec.seed = seed;
        RoutingModel model(spec, small_config(8, 2, 200), cluster_of(4, 2), ShadowCostModel{});
        RoutingStep s = model.make_step();
        model.step(3, &s);
        return s.requested;
    };
    for (RoutingPath path : {RoutingPath::count, RoutingPath::gate}) {
        EXPECT_EQ(run(path, 1), run(path, 1));
        EXPECT_NE(run(path, 1), run(path, 2));
    }
}

// ---------------------------------------------------------------------------------------------------
// Replay

class ReplayFile : public testing::Test {
   protected:
    // counts[record][q][e] = 1 + (7·record + 3·q + e·e) mod 11: distinct, positive, easy to recompute.
    static double count(int64_t record, int64_t q, int64_t e) {
        return 1 + (7 * record + 3 * q + e * e) % 11;
    }
    void SetUp() override {
        path_ = testing::TempDir() + "expar_replay_" + std::to_string(getpid()) + ".h5";
        std::vector<int64_t> data(kRecords * kRanks * kExperts);
        for (int64_t i = 0; i < kRecords; ++i)
            for (int64_t q = 0; q < kRanks; ++q)
                for (int64_t e = 0; e < kExperts; ++e)
                    data[(i * kRanks + q) * kExperts + e] = static_cast<int64_t>(count(i, q, e));
        H5File file(path_);
        file.write("/routing/layer0", {kRecords, kRanks, kExperts}, data.data());
        const std::vector<int64_t> flat(6, 1);
        file.write("/flat", {6}, flat.data());
        file.write("/empty", {0, kRanks, kExperts}, flat.data());
        // The trainer's layout [records, layers, ranks, experts]: layer 1 holds the 3-D data, layer 0 a
        // reversed copy, so reading the wrong layer changes the result.
        std::vector<int64_t> layers(kRecords * 2 * kRanks * kExperts);
        for (int64_t i = 0; i < kRecords; ++i)
            for (int64_t q = 0; q < kRanks; ++q)
                for (int64_t e = 0; e < kExperts; ++e) {
                    layers[((i * 2 + 0) * kRanks + q) * kExperts + e] =
                        data[(i * kRanks + q) * kExperts + kExperts - 1 - e];
                    layers[((i * 2 + 1) * kRanks + q) * kExperts + e] = data[(i * kRanks + q) * kExperts + e];
                }
        file.write("/routing/counts", {kRecords, 2, kRanks, kExperts}, layers.data());
    }
    void TearDown() override { std::remove(path_.c_str()); }
    static constexpr int64_t kRecords = 3, kRanks = 4, kExperts = 4;
    std::string path_;
};

TEST_F(ReplayFile, ScalingPreservesPerExpertFractions) {
    const int64_t T = 1000;
    const int k = 2;
    struct Case {
        int P;
        int64_t E;
    };
    // Tile ranks + split experts; merge ranks + merge experts; equal.
    for (const Case c : {Case{8, 8}, Case{2, 2}, Case{4, 4}}) {
        RoutingSpec spec;
        spec.kind = RoutingKind::replay;
        spec.replay = path_ + ":/routing/layer0";
        RoutingModel model(spec, small_config(c.E, k, T), cluster_of(c.P, 1), ShadowCostModel{});
        RoutingStep s = model.make_step();
        for (int64_t step = 0; step < 4; ++step) {
            model.step(step, &s);
            const int64_t record = step % kRecords;
            for (int r = 0; r < c.P; ++r) {
                // The source rows of simulated rank r.
                std::vector<double> trained(kExperts, 0.0);
                for (int64_t q = 0; q < kRanks; ++q) {
                    const bool mine = c.P < kRanks ? q % c.P == r : q == r % kRanks;
                    if (mine)
                        for (int64_t e = 0; e < kExperts; ++e) trained[e] += count(record, q, e);
                }
                const double total = std::accumulate(trained.begin(), trained.end(), 0.0);
                for (int64_t j = 0; j < c.E; ++j) {
                    double f = 0;
                    if (c.E >= kExperts)
                        f = trained[j / (c.E / kExperts)] / (c.E / kExperts) / total;
                    else
                        for (int64_t e = j * (kExperts / c.E); e < (j + 1) * (kExperts / c.E); ++e)
                            f += trained[e] / total;
                    // Largest remainder: within one assignment of the exact share.
                    EXPECT_NEAR(static_cast<double>(s.requested[r * c.E + j]), f * T * k, 1.0)
                        << "P " << c.P << " E " << c.E << " step " << step << " rank " << r << " expert "
                        << j;
                }
            }
            expect_rows_sum_to_tk(s, k, false);
        }
    }
}

TEST_F(ReplayFile, TrainerLogLayerIsSelected) {
    const RoutingLog flat = read_routing_log(path_ + ":/routing/layer0");
    const RoutingLog layer1 = read_routing_log(path_ + ":/routing/counts", 1);
    const RoutingLog layer0 = read_routing_log(path_ + ":/routing/counts", 0);
    EXPECT_EQ(layer1.num_records, kRecords);
    EXPECT_EQ(layer1.num_ranks, kRanks);
    EXPECT_EQ(layer1.num_experts, kExperts);
    EXPECT_EQ(layer1.counts, flat.counts);
    EXPECT_NE(layer0.counts, flat.counts);
    EXPECT_EQ(layer0.counts[0], flat.counts[kExperts - 1]);
    EXPECT_THAT(error_of([&] { read_routing_log(path_ + ":/routing/counts", 2); }),
                HasSubstr("--replay-layer 2 is out of range: " + path_ + ":/routing/counts has 2 layers"));
    EXPECT_THAT(error_of([&] { read_routing_log(path_ + ":/routing/layer0", 1); }),
                HasSubstr("--replay-layer 1 is out of range"));
}

TEST_F(ReplayFile, BadInputIsOneClearLine) {
    LayerConfig c = small_config(8, 2, 100);
    auto make = [&](const std::string& replay, int64_t E) {
        RoutingSpec spec;
        spec.kind = RoutingKind::replay;
        spec.replay = replay;
        c.num_experts = E;
        RoutingModel model(spec, c, cluster_of(2, 1), ShadowCostModel{});
    };
    EXPECT_THAT(error_of([&] { make("/nonexistent/log.h5:/routing/layer0", 8); }),
                HasSubstr("cannot read --replay file '/nonexistent/log.h5'"));
    EXPECT_THAT(error_of([&] { make(path_ + ":/routing/layer9", 8); }),
                HasSubstr("has no dataset '/routing/layer9'"));
    EXPECT_THAT(error_of([&] { make(path_, 8); }), HasSubstr("must be FILE.h5:/dataset"));
    EXPECT_THAT(error_of([&] { make(path_ + ":/flat", 8); }),
                HasSubstr("must be a non-empty [records, ranks, experts] array"));
    EXPECT_THAT(error_of([&] { make(path_ + ":/flat", 8); }),
                HasSubstr("of routed counts (got 1 dimensions)"));
    EXPECT_THAT(error_of([&] { make(path_ + ":/empty", 8); }), HasSubstr("(got shape [0, 4, 4])"));
    EXPECT_THAT(
        error_of([&] { make(path_ + ":/routing/layer0", 6); }),
        HasSubstr("has 4 experts, the simulation 6: they must be equal, or one a multiple of the other"));
}

// ---------------------------------------------------------------------------------------------------
// Decisions: the same functions as the MoE layer, and their documented effect.

TEST(SimRouting, CapacityAndShadowingAreTheCoreFunctions) {
    const int P = 4;
    const int64_t E = 8, T = 256;
    for (CapacityScope scope : {CapacityScope::local, CapacityScope::global}) {
        for (DropPolicy policy : {DropPolicy::position, DropPolicy::probs}) {
            LayerConfig c = small_config(E, 2, T);
            c.capacity_factor = 1.0;
            c.capacity_scope = scope;
            c.drop_policy = policy;
            c.shadow = true;
            c.shadow_max_experts = 3;
            RoutingSpec spec;
            spec.kind = RoutingKind::zipf;
            spec.zipf_s = 1.2;
            Workload w;
            w.model.d_model = 1024;
            w.model.d_ff = 4096;
            w.model.activation = Activation::gelu;
            w.dtype_bytes = 2;
            const LayerCluster cluster = cluster_of(P, 2);
            const ShadowCostModel cost = shadow_cost_model(w, cluster);
            RoutingModel model(spec, c, cluster, cost);
            RoutingStep s = model.make_step();
            model.step(0, &s);

            std::vector<int64_t> allowed(P * E);
            capacity_allowed_from_counts(allowed.data(), s.requested.data(), P, c);
            EXPECT_EQ(s.allowed, allowed);
            EXPECT_EQ(s.capacity, capacity_of_step(c, s.requested.data(), P));
            // Independently: ceil(cf·T_group·k/E) per group, never more than requested.
            const int64_t group_tokens = scope == CapacityScope::local ? T : P * T;
            EXPECT_EQ(s.capacity, (group_tokens * 2 + E - 1) / E);
            for (int64_t i = 0; i < P * E; ++i) EXPECT_LE(s.allowed[i], s.requested[i]);
            if (scope == CapacityScope::local)
                for (int64_t i = 0; i < P * E; ++i)
                    EXPECT_EQ(s.allowed[i], std::min(s.requested[i], s.capacity));
            EXPECT_GT(s.num_dropped(), 0) << "Zipf 1.2 at cf 1 must overflow (else the test proves nothing)";

            // The rest is the layer's own plan_counts (checked against brute force in test_dispatch_layout).
            ShadowPolicy policy_direct(P, E, cost);
            DispatchCounts direct;
            direct.resize(P, E, 3);
            direct.requested = s.requested;
            plan_counts(&direct, c, &policy_direct);
            EXPECT_EQ(s.num_shadowed, direct.num_shadowed);
            EXPECT_EQ(s.shadowed, direct.shadowed);
            EXPECT_EQ(s.sent, direct.sent);
            EXPECT_EQ(s.rows, direct.rows);
            EXPECT_EQ(s.block_rows(1, 0, 3), s.sent[3 * E + 2]);  // rank 1's first expert is expert 2
        }
    }
}

// Shadowing must actually trigger in the test above for the comparison to mean something.
TEST(SimRouting, ShadowingTriggersUnderSkew) {
    LayerConfig c = small_config(8, 2, 256);
    c.shadow = true;
    RoutingSpec spec;
    spec.kind = RoutingKind::zipf;
    spec.zipf_s = 2.0;
    Workload w;
    w.model.d_model = 1024;
    w.model.d_ff = 4096;
    w.model.activation = Activation::gelu;
    const LayerCluster cluster = cluster_of(4, 2);
    RoutingModel model(spec, c, cluster, shadow_cost_model(w, cluster));
    RoutingStep s = model.make_step();
    model.step(0, &s);
    EXPECT_GE(s.num_shadowed, 1);
    EXPECT_EQ(s.shadowed[0], 1) << "expert 0 is the hottest";
    EXPECT_EQ(s.shadow_tokens(3, 0), s.allowed[3 * 8 + 0]);
}

// With every token routed (sim-tokens = T), each rank sends at most L = topology_gate_max_offnode
// assignments off its node, and the redirected count is the excess moved on-node.
TEST(SimRouting, TopologyGateKeepsOffNodeAssignmentsWithinL) {
    const int P = 4;
    const int64_t E = 8, T = 200;
    LayerConfig c = small_config(E, 2, T);
    c.gate_topology = GateTopology::fastermoe;
    const LayerCluster cluster = cluster_of(P, 2);  // W_net/(M·W_local) = 1/(2·10): L = floor(T·k/20) = 20
    const int64_t L = topology_gate_max_offnode(c, cluster);
    ASSERT_EQ(L, 20);
    RoutingSpec spec;
    spec.path = RoutingPath::gate;
    RoutingModel model(spec, c, cluster, ShadowCostModel{});
    RoutingStep s = model.make_step();
    model.step(0, &s);
    expect_rows_sum_to_tk(s, 2);
    // The same scores without the gate limit.
    LayerConfig free_config = c;
    free_config.gate_topology = GateTopology::none;
    RoutingModel free_model(spec, free_config, cluster, ShadowCostModel{});
    RoutingStep before = free_model.make_step();
    free_model.step(0, &before);
    auto offnode = [&](const RoutingStep& x, int r) {
        int64_t n = 0;
        for (int64_t e = 0; e < E; ++e)
            if (cluster.nodes.node_of_rank[e / 2] != cluster.nodes.node_of_rank[r])
                n += x.requested[r * E + e];
        return n;
    };
    for (int r = 0; r < P; ++r) {
        ASSERT_GT(offnode(before, r), L) << "uniform routing sends about half of T·k = 400 off-node";
        EXPECT_EQ(offnode(s, r), L) << "rank " << r;
        EXPECT_EQ(s.redirected[r], offnode(before, r) - L) << "rank " << r;
    }
    EXPECT_EQ(s.num_redirected, std::accumulate(s.redirected.begin(), s.redirected.end(), int64_t{0}));
}

TEST(SimRouting, RouterBiasEvensOutASkewedLoad) {
    const int64_t E = 8;
    LayerConfig c = small_config(E, 2, 256);
    c.router_bias_rate = 0.02;
    RoutingSpec spec;
    spec.kind = RoutingKind::zipf;
    spec.zipf_s = 1.0;
    RoutingModel model(spec, c, cluster_of(4, 2), ShadowCostModel{});
    EXPECT_TRUE(model.uses_gate());
    RoutingStep s = model.make_step();
    auto max_load = [&]() {
        int64_t worst = 0;
        for (int64_t e = 0; e < E; ++e) {
            int64_t load = 0;
            for (int r = 0; r < 4; ++r) load += s.requested[r * E + e];
            worst = std::max(worst, load);
        }
        return worst;
    };
    model.step(0, &s);
    const int64_t first = max_load();
    for (int t = 1; t < 60; ++t) model.step(t, &s);
    EXPECT_LT(max_load(), 0.8 * first);
    EXPECT_LT(model.selection_bias()[0], 0.0f) << "the hot expert's bias went down";
}

TEST(SimRouting, BadOptionsAreOneClearLine) {
    RoutingOptions o;
    // An unknown name fails when the option is parsed (enum_option.h).
    try {
        const char* argv[] = {"x", "--routing", "hot"};
        boost::program_options::variables_map vm;
        boost::program_options::store(
            boost::program_options::parse_command_line(3, argv, routing_options_description(&o)), vm);
        ADD_FAILURE() << "--routing hot accepted";
    } catch (const boost::program_options::error& e) {
        EXPECT_EQ(std::string(e.what()),
                  "unknown --routing 'hot' (expected uniform, zipf, dirichlet, drift or replay)");
    }
    o.routing = RoutingKind::uniform;
    EXPECT_THAT(error_of([&] { make_routing_spec(o, 1.0, 1); }),
                HasSubstr("--skew 1 applies to --routing zipf or drift, not uniform"));
    o.routing = RoutingKind::replay;
    EXPECT_THAT(error_of([&] { make_routing_spec(o, 0, 1); }), HasSubstr("--routing replay needs --replay"));
    o.routing = RoutingKind::drift;
    o.drift_rate = 1e300;  // once cast to int64 unchecked
    EXPECT_THAT(error_of([&] { make_routing_spec(o, 1.0, 1); }),
                HasSubstr("--drift-rate must be in [0, 1e9] experts per step, got 1e+300"));
    RoutingSpec spec;
    spec.path = RoutingPath::count;
    LayerConfig c = small_config(8, 2, 100);
    c.node_limit = 1;
    EXPECT_THAT(error_of([&] { RoutingModel m(spec, c, cluster_of(4, 2), ShadowCostModel{}); }),
                HasSubstr("--routing-path count cannot apply token-level routing"));
}

}  // namespace
}  // namespace expar
