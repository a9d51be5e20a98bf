// FasterMoE Algorithm 1 (src/layer/shadow_policy.h): the cost model against hand-computed latencies, and
// the decisions it must make: a skewed load shadows the hot expert, a balanced one shadows nothing.
#include <gtest/gtest.h>

#include <vector>

#include "shadow_policy.h"

namespace expar {
namespace {

// Round numbers: 1 FLOP per token of forward, 1 FLOP/s, 1 byte per token at 1 byte/s, 10-byte experts.
ShadowCostModel unit_model(double bytes_per_expert = 10) {
    ShadowCostModel m;
    m.expert_flops_per_token = 1;
    m.bytes_per_token = 1;
    m.bytes_per_expert = bytes_per_expert;
    m.device_flops_per_s = 1;
    m.network_bytes_per_s = 1;
    return m;
}

TEST(ShadowPolicy, LatencyMatchesHandComputation) {
    // P = 2, E = 2 (expert 0 on rank 0, expert 1 on rank 1). tokens[src][e]:
    const std::vector<int64_t> tokens = {5, 1,   // rank 0 sends 5 to expert 0 (itself), 1 to expert 1
                                         3, 2};  // rank 1 sends 3 to expert 0, 2 to itself
    ShadowPolicy policy(2, 2, unit_model());
    const uint8_t none[2] = {0, 0}, first[2] = {1, 0};
    // No shadow: rank 0 computes 8, sends 1, receives 3 -> 3*8 + 4*3 = 36; rank 1: 3*3 + 4*3 = 21.
    EXPECT_DOUBLE_EQ(policy.predicted_latency_s(tokens.data(), none), 36.0);
    // Shadow expert 0: rank 0 computes its own 5, traffic max(sent 1, received 0) -> 15 + 4 = 19;
    // rank 1 computes 1 + 2 on expert 1 and its 3 on expert 0 = 6, traffic max(0, 1) -> 18 + 4 = 22;
    // plus 2 * 10 for the broadcast and the reduce of one expert.
    EXPECT_DOUBLE_EQ(policy.predicted_latency_s(tokens.data(), first), 22.0 + 20.0);
}

TEST(ShadowPolicy, CollectiveFactorPricesTheTree) {
    // The same case with the weights' broadcast and reduce at 2.5x bytes / W_net: 22 + 2.5 * 20.
    const std::vector<int64_t> tokens = {5, 1, 3, 2};
    ShadowCostModel m = unit_model();
    m.collective_factor = 2.5;
    ShadowPolicy policy(2, 2, m);
    const uint8_t first[2] = {1, 0};
    EXPECT_DOUBLE_EQ(policy.predicted_latency_s(tokens.data(), first), 22.0 + 2.5 * 20.0);
}

TEST(ShadowPolicy, PipelinedTreeFactorClosedForm) {
    // Depth: edges from rank 0 down to rank P - 1 (children 2v + 1, 2v + 2).
    EXPECT_EQ(shadow_tree_depth(1), 0);
    EXPECT_EQ(shadow_tree_depth(2), 1);
    EXPECT_EQ(shadow_tree_depth(3), 1);
    EXPECT_EQ(shadow_tree_depth(7), 2);
    EXPECT_EQ(shadow_tree_depth(8), 3);
    EXPECT_EQ(shadow_tree_depth(64), 6);
    // Segments of at least 1 MiB, at most 16.
    EXPECT_EQ(shadow_tree_segments(1000), 1);
    EXPECT_EQ(shadow_tree_segments(4 << 20), 4);
    EXPECT_EQ(shadow_tree_segments(1e9), 16);
    // 2 ranks: one child, the segments back to back: 1 x bytes / bandwidth.
    EXPECT_DOUBLE_EQ(pipelined_tree_factor(2, 4 << 20), 1.0);
    // 7 ranks, 4 segments, depth 2: 2 (4 + 1) / 4 (the simulated tree: SimShadow).
    EXPECT_DOUBLE_EQ(pipelined_tree_factor(7, 4 << 20), 2.5);
    // trevor-like: 64 ranks, 16 segments, depth 6: 2 (16 + 5) / 16.
    EXPECT_DOUBLE_EQ(pipelined_tree_factor(64, 64 << 20), 2.625);
    EXPECT_EQ(pipelined_tree_factor(1, 4 << 20), 0.0);
}

TEST(ShadowPolicy, SkewedLoadShadowsTheHotExpert) {
    const int P = 4;
    const int64_t E = 8;
    std::vector<int64_t> tokens(P * E, 10);
    for (int src = 0; src < P; ++src) tokens[src * E + 3] = 400;  // expert 3 (on rank 1) is hot
    ShadowPolicy policy(P, E, unit_model());
    std::vector<uint8_t> shadowed(E, 9);
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), 4), 1);
    for (int64_t e = 0; e < E; ++e) EXPECT_EQ(shadowed[e], e == 3 ? 1 : 0) << "expert " << e;
}

TEST(ShadowPolicy, BalancedLoadShadowsNothing) {
    const int P = 4;
    const int64_t E = 8;
    const std::vector<int64_t> tokens(P * E, 100);
    ShadowPolicy policy(P, E, unit_model(1.0));  // even cheap weights do not pay when nothing is hot
    std::vector<uint8_t> shadowed(E, 9);
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), E), 0);
    for (int64_t e = 0; e < E; ++e) EXPECT_EQ(shadowed[e], 0);
}

TEST(ShadowPolicy, HeavyWeightsAreNotWorthBroadcasting) {
    const int P = 4;
    const int64_t E = 4;
    std::vector<int64_t> tokens(P * E, 10);
    for (int src = 0; src < P; ++src) tokens[src * E + 0] = 400;
    ShadowPolicy policy(P, E, unit_model(1e6));  // weights far larger than the tokens they would save
    std::vector<uint8_t> shadowed(E);
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), E), 0);
}

TEST(ShadowPolicy, RespectsTheCapAndVisitsHottestFirst) {
    const int P = 4;
    const int64_t E = 4;
    std::vector<int64_t> tokens(P * E, 1);
    for (int src = 0; src < P; ++src) {
        tokens[src * E + 1] = 300;  // hottest, on rank 1
        tokens[src * E + 2] = 300;  // as hot, on rank 2: the tie goes to expert 1
    }
    ShadowPolicy policy(P, E, unit_model());
    std::vector<uint8_t> shadowed(E);
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), 1), 0)
        << "one of two equally hot experts on different ranks leaves the max where it was";
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), 2), 0)
        << "Algorithm 1 stops at the first expert that does not pay, even if a pair would";
    tokens[0 * E + 2] = 100;  // now expert 1 alone is the hottest
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), 1), 1);
    EXPECT_EQ(shadowed[1], 1);
}

TEST(ShadowPolicy, ExpertUsedOnlyByItsOwnerIsNotShadowed) {
    const int P = 2;
    const int64_t E = 2;
    const std::vector<int64_t> tokens = {1000, 0,  // only rank 0 uses expert 0, and rank 0 owns it
                                         0, 1};
    ShadowPolicy policy(P, E, unit_model());
    std::vector<uint8_t> shadowed(E);
    EXPECT_EQ(policy.select(shadowed.data(), tokens.data(), 2), 0);
}

}  // namespace
}  // namespace expar
