// The FasterMoE-era switches on real ranks: every schedule against plain (bit for bit), the routing
// constraints against the plain-loop reference, shadowing against the unshadowed run, and the
// router-bias update against its rule. Run at 1, 2, 4 and 8 ranks, nodes emulated with node_map_blocks.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "layer_harness.h"
#include "mpi_world.h"
#include "rng.h"
#include "synthetic.h"

namespace expar::test {
namespace {

constexpr int64_t kGlobalTokens = 64;
constexpr double kTolerance = 1e-5;

LayerConfig small_config(int P) {
    LayerConfig c;
    c.num_experts = 8;
    c.top_k = 2;
    c.d_model = 16;
    c.d_ff = 24;
    c.tokens_per_rank = kGlobalTokens / P;
    c.capacity_factor = 1.0;
    c.skew = 1.0;
    c.aux_loss_coef = 0.3;
    c.z_loss_coef = 0.2;
    return c;
}

// Rates that make the cost model's choices visible on tiny layers (units as in LayerCluster).
LayerCluster emulated_cluster(int P, int ranks_per_node) {
    LayerCluster cluster{node_map_blocks(P, ranks_per_node)};
    cluster.local_GBps = 1.0;
    cluster.net_GBps = 1.0;
    cluster.device_gflops = 1.0;
    return cluster;
}

void expect_bitwise_equal(const GlobalResult& got, const GlobalResult& want, const std::string& what) {
    if (world_rank() != 0) return;
    EXPECT_EQ(got.expert, want.expert) << what;
    EXPECT_EQ(got.y, want.y) << what;
    EXPECT_EQ(got.dx, want.dx) << what;
    EXPECT_EQ(all_grads(got), all_grads(want)) << what;
}

// ---------------------------------------------------------------- schedules

struct ScheduleCase {
    const char* name;
    Activation activation;
    bool bias;
    double cf;
    CapacityScope scope;
    DropPolicy policy;
    bool shadow;
};

class Schedules : public ::testing::TestWithParam<ScheduleCase> {};

TEST_P(Schedules, BitwiseEqualToPlain) {
    const int P = world_size();
    const ScheduleCase& sc = GetParam();
    LayerConfig c = small_config(P);
    c.activation = sc.activation;
    c.expert_bias = sc.bias;
    c.capacity_factor = sc.cf;
    c.capacity_scope = sc.scope;
    c.drop_policy = sc.policy;
    c.shadow = sc.shadow;
    c.skew = sc.shadow ? 2.0 : 1.0;
    int num_compared = 0;
    for (int ranks_per_node = 1; ranks_per_node <= P; ranks_per_node *= 2) {
        if (P % ranks_per_node) continue;
        const LayerCluster cluster = emulated_cluster(P, ranks_per_node);
        c.schedule = ScheduleKind::plain;
        const GlobalResult plain = run_distributed(c, MPI_COMM_WORLD, 11, 2, nullptr, &cluster);
        if (sc.shadow && P > 1) EXPECT_GT(plain.num_shadowed, 0) << "the shadowed case must shadow";
        c.schedule = ScheduleKind::hierarchical;
        std::ostringstream what;
        what << "hierarchical, " << ranks_per_node << " ranks/node";
        expect_bitwise_equal(run_distributed(c, MPI_COMM_WORLD, 11, 2, nullptr, &cluster), plain, what.str());
        ++num_compared;
        for (int group = 1; group <= P; group *= 2) {
            c.schedule = ScheduleKind::pairwise;
            c.group_size = group;
            std::ostringstream what_pairwise;
            what_pairwise << "pairwise, group " << group << ", " << ranks_per_node << " ranks/node";
            expect_bitwise_equal(run_distributed(c, MPI_COMM_WORLD, 11, 2, nullptr, &cluster), plain,
                                 what_pairwise.str());
            ++num_compared;
        }
    }
    EXPECT_GE(num_compared, 2);
}

using A = Activation;
const ScheduleCase kScheduleCases[] = {
    {"gelu_cf1_local", A::gelu, true, 1.0, CapacityScope::local, DropPolicy::position, false},
    {"swiglu_dropless", A::swiglu, false, 0.0, CapacityScope::global, DropPolicy::position, false},
    {"relu_cf1_global_probs", A::relu, true, 1.0, CapacityScope::global, DropPolicy::probs, false},
    {"gelu_dropless_shadowed", A::gelu, true, 0.0, CapacityScope::local, DropPolicy::position, true},
};
INSTANTIATE_TEST_SUITE_P(Cases,
                         Schedules,
                         ::testing::ValuesIn(kScheduleCases),
                         [](const ::testing::TestParamInfo<ScheduleCase>& info) {
                             return std::string(info.param.name);
                         });

// ---------------------------------------------------------------- routing constraints vs the reference

void expect_matches_reference(const LayerConfig& c,
                              const LayerCluster& cluster,
                              const std::vector<float>& bias,
                              int64_t max_offnode) {
    const int P = world_size();
    const GlobalResult got =
        run_distributed(c, MPI_COMM_WORLD, 5, 1, nullptr, &cluster, bias.empty() ? nullptr : bias.data());
    if (world_rank() != 0) return;
    std::vector<float> x, dy;
    make_global_inputs(c, kGlobalTokens, 5, 1, &x, &dy);
    ReferenceRouting routing;
    routing.node_of_rank = cluster.nodes.node_of_rank;
    routing.selection_bias = bias;
    routing.max_offnode = max_offnode;
    ReferenceResult<float> ref;
    reference_layer(c, P, 5, 1, x, dy, reference_params_init<float>(c, 5), &ref, routing);
    for (int64_t s = 0; s < kGlobalTokens * c.top_k; ++s) {
        const int32_t want = ref.kept[s] ? static_cast<int32_t>(ref.expert[s]) : -1;
        ASSERT_EQ(got.expert[s], want) << "slot " << s;
    }
    EXPECT_EQ(got.num_redirected, ref.num_redirected);
    EXPECT_LT(relative_error(got.y, ref.y), kTolerance);
    EXPECT_LT(relative_error(got.dx, ref.dx), kTolerance);
    EXPECT_LT(relative_error(got.grad.router_w, ref.grad.router_w), kTolerance);
    EXPECT_LT(relative_error(got.grad.w1, ref.grad.w1), kTolerance);
    EXPECT_LT(relative_error(got.grad.w2, ref.grad.w2), kTolerance);
}

TEST(Routing, FasterMoeTopologyGateMatchesReference) {
    const int P = world_size();
    LayerConfig c = small_config(P);
    c.capacity_factor = 0;  // dropless, so every redirected assignment is visible in the output
    c.gate_topology = GateTopology::fastermoe;
    LayerCluster cluster = emulated_cluster(P, std::max(1, P / 2));
    cluster.net_GBps = 0.5;
    const int64_t max_offnode = topology_gate_max_offnode(c, cluster);
    // W_net = W_local / 2: L = B / (2·M) assignments per rank.
    EXPECT_EQ(max_offnode, c.tokens_per_rank * c.top_k / (2 * cluster.nodes.ranks_per_node));
    expect_matches_reference(c, cluster, {}, max_offnode);
    // With two or more nodes and a skewed router, the limit binds on the second node's ranks.
    const GlobalResult got = run_distributed(c, MPI_COMM_WORLD, 5, 1, nullptr, &cluster);
    if (cluster.nodes.num_nodes > 1) EXPECT_GT(got.num_redirected, 0);
}

TEST(Routing, NodeLimitedMatchesReference) {
    const int P = world_size();
    LayerConfig c = small_config(P);
    c.node_limit = 1;
    c.capacity_factor = 1.25;
    const LayerCluster cluster = emulated_cluster(P, std::max(1, P / 4));
    expect_matches_reference(c, cluster, {}, -1);
}

TEST(Routing, RouterBiasSelectionMatchesReference) {
    const int P = world_size();
    LayerConfig c = small_config(P);
    c.router_bias_rate = 0.01;
    std::vector<float> bias(c.num_experts);
    for (int64_t e = 0; e < c.num_experts; ++e) bias[e] = 0.2f * rng_normal(3, 99, e);
    expect_matches_reference(c, emulated_cluster(P, P), bias, -1);
}

// After a step, each bias moves by -gamma if the expert's global load was above the mean, +gamma below.
TEST(Routing, RouterBiasUpdateFollowsTheRule) {
    const int P = world_size();
    LayerConfig c = small_config(P);
    c.router_bias_rate = 0.125;  // a power of two: the sums below are exact
    MpiComm comm(MPI_COMM_WORLD);
    BlasExpertCompute blas;
    MoeLayer layer(c, comm, blas);
    layer.init_params(3);
    const int64_t T = c.tokens_per_rank, d = c.d_model, E = c.num_experts;
    std::vector<float> x(T * d), y(T * d);
    std::vector<float> expected(E, 0.0f);
    std::vector<int64_t> first_load, last_load;
    for (int64_t step = 0; step < 40; ++step) {
        synthetic_rows(x.data(), 3, kStreamTokens, step, comm.rank() * T, T, d);
        layer.forward(y.data(), x.data(), step, 3);
        std::vector<int64_t> load(E, 0);
        int64_t total = 0;
        for (int r = 0; r < P; ++r)
            for (int64_t e = 0; e < E; ++e) load[e] += layer.layout().requested[r * E + e];
        for (int64_t e = 0; e < E; ++e) total += load[e];
        for (int64_t e = 0; e < E; ++e) {
            if (load[e] * E > total) expected[e] -= 0.125f;
            if (load[e] * E < total) expected[e] += 0.125f;
        }
        for (int64_t e = 0; e < E; ++e) ASSERT_EQ(layer.selection_bias()[e], expected[e]) << "step " << step;
        if (step == 0) first_load = load;
        last_load = load;
    }
    // The point of the bias: the skewed router's hottest expert is relieved.
    EXPECT_LT(*std::max_element(last_load.begin(), last_load.end()),
              *std::max_element(first_load.begin(), first_load.end()));
}

// ---------------------------------------------------------------- shadowing

TEST(Shadowing, MatchesUnshadowedRunAndShadowsTheHotExpert) {
    const int P = world_size();
    LayerConfig c = small_config(P);
    c.skew = 2.0;
    c.capacity_factor = 0;  // dropless: expert 0 alone is the hottest, by far
    LayerCluster cluster = emulated_cluster(P, std::max(1, P / 2));
    // Slow compute, so that the hottest expert's tokens outweigh its weights' broadcast and reduce trees
    // (6x the weights' bytes at 8 ranks: depth 3, one segment) at every rank count.
    cluster.device_gflops = 0.25;
    const GlobalResult plain = run_distributed(c, MPI_COMM_WORLD, 9, 4, nullptr, &cluster);
    c.shadow = true;
    const GlobalResult shadowed = run_distributed(c, MPI_COMM_WORLD, 9, 4, nullptr, &cluster);
    // One rank has no traffic to save; with more, the hottest expert's tokens cost more than its weights.
    if (P == 1) EXPECT_EQ(shadowed.num_shadowed, 0);
    if (P > 1) EXPECT_GE(shadowed.num_shadowed, 1);
    if (world_rank() != 0) return;
    EXPECT_EQ(shadowed.expert, plain.expert);
    EXPECT_LT(relative_error(shadowed.y, plain.y), kTolerance);
    EXPECT_LT(relative_error(shadowed.dx, plain.dx), kTolerance);
    EXPECT_LT(relative_error(all_grads(shadowed), all_grads(plain)), kTolerance);
    EXPECT_LT(relative_error(shadowed.grad.w1, plain.grad.w1), kTolerance);
    EXPECT_LT(relative_error(shadowed.grad.w2, plain.grad.w2), kTolerance);
    EXPECT_LT(relative_error(shadowed.grad.b1, plain.grad.b1), kTolerance);
}

}  // namespace
}  // namespace expar::test
