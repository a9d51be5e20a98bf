// Routing constraints of the plain-loop reference (docs/layer.md, "Routing constraints") held against
// their definitions: node-limited tokens span at most M nodes, the topology gate keeps at most L
// assignments off-node and redirects exactly the excess, and the router bias steers selection only.
#include <gtest/gtest.h>

#include <set>

#include "reference_layer.h"
#include "rng.h"
#include "synthetic.h"

namespace expar {
namespace {

LayerConfig routing_config() {
    LayerConfig c;
    c.num_experts = 8;
    c.top_k = 4;
    c.d_model = 8;
    c.d_ff = 8;
    c.tokens_per_rank = 32;
    c.capacity_factor = 0;  // dropless: every routed assignment is kept
    c.skew = 0.5;
    return c;
}

ReferenceResult<double> run(const LayerConfig& c, int P, const ReferenceRouting& routing) {
    const int64_t T = P * c.tokens_per_rank, d = c.d_model;
    std::vector<double> x(T * d), dy(T * d);
    for (int64_t i = 0; i < T * d; ++i) {
        x[i] = rng_normal(4, kStreamTokens, i);
        dy[i] = rng_normal(4, kStreamUpstreamGrad, i);
    }
    ReferenceResult<double> out;
    reference_layer(c, P, 4, 0, x, dy, reference_params_init<double>(c, 4), &out, routing);
    return out;
}

int max_nodes_per_token(const ReferenceResult<double>& r,
                        const LayerConfig& c,
                        const std::vector<int>& node_of_rank) {
    const int64_t k = c.top_k, EL = c.num_experts / static_cast<int64_t>(node_of_rank.size());
    int worst = 0;
    for (size_t t = 0; t < r.expert.size() / k; ++t) {
        std::set<int> nodes;
        for (int64_t j = 0; j < k; ++j) nodes.insert(node_of_rank[r.expert[t * k + j] / EL]);
        worst = std::max(worst, static_cast<int>(nodes.size()));
    }
    return worst;
}

TEST(Routing, NodeLimitKeepsEveryTokenOnAtMostMNodes) {
    LayerConfig c = routing_config();
    ReferenceRouting routing;
    routing.node_of_rank = {0, 1, 2, 3};  // 4 ranks, one per node, 2 experts each
    EXPECT_GT(max_nodes_per_token(run(c, 4, routing), c, routing.node_of_rank), 2)
        << "without the limit some token spans more than 2 nodes (else this test proves nothing)";
    c.node_limit = 2;
    EXPECT_LE(max_nodes_per_token(run(c, 4, routing), c, routing.node_of_rank), 2);
    c.node_limit = 1;
    c.top_k = 2;  // one node holds 2 experts
    EXPECT_EQ(max_nodes_per_token(run(c, 4, routing), c, routing.node_of_rank), 1);
}

TEST(Routing, TopologyGateRedirectsExactlyTheExcess) {
    LayerConfig c = routing_config();
    c.top_k = 2;
    c.skew = 1.5;  // experts 0-3 (node 0) are favoured: node 1's ranks send most assignments off-node
    ReferenceRouting routing;
    routing.node_of_rank = {0, 0, 1, 1};
    const int64_t k = c.top_k, T = c.tokens_per_rank, EL = 2;
    auto offnode = [&](const ReferenceResult<double>& r, int rank) {
        int64_t n = 0;
        for (int64_t s = rank * T * k; s < (rank + 1) * T * k; ++s)
            n += routing.node_of_rank[r.expert[s] / EL] != routing.node_of_rank[rank];
        return n;
    };
    const ReferenceResult<double> free_routing = run(c, 4, routing);
    routing.max_offnode = 12;
    const ReferenceResult<double> gated = run(c, 4, routing);
    int64_t excess = 0;
    for (int rank = 0; rank < 4; ++rank) {
        excess += std::max<int64_t>(0, offnode(free_routing, rank) - routing.max_offnode);
        EXPECT_LE(offnode(gated, rank), routing.max_offnode) << "rank " << rank;
        EXPECT_EQ(offnode(gated, rank), std::min<int64_t>(offnode(free_routing, rank), routing.max_offnode));
    }
    EXPECT_GT(excess, 0) << "the limit must bind for this test to mean anything";
    EXPECT_EQ(gated.num_redirected, excess);
}

TEST(Routing, RouterBiasSteersSelectionButNotWeights) {
    LayerConfig c = routing_config();
    c.top_k = 1;
    ReferenceRouting routing;
    routing.selection_bias.assign(c.num_experts, 0.0f);
    routing.selection_bias[5] = 10.0f;  // far above any probability
    const ReferenceResult<double> r = run(c, 2, routing);
    const ReferenceResult<double> unbiased = run(c, 2, ReferenceRouting{});
    bool some_token_moved = false;
    for (size_t t = 0; t < r.expert.size(); ++t) {
        EXPECT_EQ(r.expert[t], 5);
        some_token_moved |= unbiased.expert[t] != 5;
    }
    EXPECT_TRUE(some_token_moved);
    // The weight is expert 5's softmax probability, untouched by the bias: where the unbiased router
    // also picked expert 5, the weights agree exactly.
    int num_same = 0;
    for (size_t t = 0; t < r.expert.size(); ++t)
        if (unbiased.expert[t] == 5) {
            EXPECT_EQ(r.weight[t], unbiased.weight[t]);
            ++num_same;
        }
    EXPECT_GT(num_same, 0);
}

}  // namespace
}  // namespace expar
