// FasterMoE's pairwise stage plan on node maps without MPI: every ordered (source, destination) pair
// meets exactly once, at the same stage on both ends; stage 0 is the own group; bad group sizes throw.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "check.h"
#include "node_map.h"
#include "schedule.h"

namespace expar {
namespace {

// Block maps for every ranks-per-node dividing P, plus round-robin placements (rank r on node r % N),
// where node order differs from rank order.
std::vector<NodeMap> maps_for(int P) {
    std::vector<NodeMap> maps;
    for (int rpn = 1; rpn <= P; ++rpn)
        if (P % rpn == 0) maps.push_back(node_map_blocks(P, rpn));
    for (int nodes = 2; nodes < P; ++nodes)
        if (P % nodes == 0) {
            std::vector<int> labels(P);
            for (int r = 0; r < P; ++r) labels[r] = r % nodes;
            maps.push_back(node_map_from_labels(labels, true));
        }
    return maps;
}

TEST(PairwiseStages, EveryPairOnceAtTheSameStageOnBothEnds) {
    for (int P : {1, 2, 3, 4, 6, 8, 12}) {
        for (const NodeMap& map : maps_for(P)) {
            for (int g = 1; g <= P; ++g) {
                if (P % g) continue;
                SCOPED_TRACE("P=" + std::to_string(P) + " nodes=" + std::to_string(map.num_nodes) +
                             " g=" + std::to_string(g));
                std::map<std::pair<int, int>, int> send_stage, recv_stage;  // (src, dst) -> stage
                int duplicates = 0;
                for (int r = 0; r < P; ++r) {
                    const std::vector<PairwiseStage> stages = pairwise_stages(map, g, r);
                    ASSERT_EQ(static_cast<int>(stages.size()), P / g);
                    for (int s = 0; s < P / g; ++s) {
                        EXPECT_EQ(static_cast<int>(stages[s].send_to.size()), g);
                        EXPECT_EQ(static_cast<int>(stages[s].recv_from.size()), g);
                        for (int dst : stages[s].send_to)
                            duplicates += !send_stage.emplace(std::make_pair(r, dst), s).second;
                        for (int src : stages[s].recv_from)
                            duplicates += !recv_stage.emplace(std::make_pair(src, r), s).second;
                    }
                }
                EXPECT_EQ(duplicates, 0);
                EXPECT_EQ(static_cast<int>(send_stage.size()), P * P);
                EXPECT_EQ(send_stage, recv_stage);  // src sends to dst at the stage dst receives from src
            }
        }
    }
}

TEST(PairwiseStages, StageZeroIsTheOwnGroupInNodeOrder) {
    for (int P : {2, 4, 8, 12}) {
        for (const NodeMap& map : maps_for(P)) {
            for (int g = 1; g <= P; ++g) {
                if (P % g) continue;
                for (int r = 0; r < P; ++r) {
                    const std::vector<PairwiseStage> stages = pairwise_stages(map, g, r);
                    const std::set<int> to(stages[0].send_to.begin(), stages[0].send_to.end());
                    const std::set<int> from(stages[0].recv_from.begin(), stages[0].recv_from.end());
                    EXPECT_EQ(to, from);
                    EXPECT_EQ(to.count(r), 1u) << "rank " << r << " is in its own group";
                    // A group never straddles a node when g divides ranks_per_node, and is a whole
                    // node when g == ranks_per_node.
                    if (map.ranks_per_node % g == 0)
                        for (int peer : to) EXPECT_TRUE(map.same_node(r, peer)) << r << " " << peer;
                    if (map.ranks_per_node == g) {
                        std::set<int> node;
                        for (int q = 0; q < P; ++q)
                            if (map.same_node(r, q)) node.insert(q);
                        EXPECT_EQ(to, node);
                    }
                }
            }
        }
    }
}

// On block maps node order is rank order: group i = ranks i*g .. i*g+g-1, and stage s pairs group i
// with groups i - s (send) and i + s (receive), as in FasterMoE's paper.
TEST(PairwiseStages, RingOfGroupsOnBlockMaps) {
    const int P = 12;
    for (int g : {1, 2, 3, 4, 6, 12}) {
        const NodeMap map = node_map_blocks(P, 6);
        const int n = P / g;
        for (int r = 0; r < P; ++r) {
            const std::vector<PairwiseStage> stages = pairwise_stages(map, g, r);
            for (int s = 0; s < n; ++s) {
                const int i = r / g;
                std::vector<int> want_to, want_from;
                for (int m = 0; m < g; ++m) {
                    want_to.push_back(((i - s + n) % n) * g + m);
                    want_from.push_back(((i + s) % n) * g + m);
                }
                EXPECT_EQ(stages[s].send_to, want_to) << "g=" << g << " rank " << r << " stage " << s;
                EXPECT_EQ(stages[s].recv_from, want_from) << "g=" << g << " rank " << r << " stage " << s;
            }
        }
    }
}

TEST(PairwiseStages, GroupSizeMustDivideTheRanks) {
    const NodeMap map = node_map_blocks(4, 2);
    for (int g : {3, 5, 8}) {
        try {
            pairwise_stages(map, g, 0);
            ADD_FAILURE() << "group size " << g << " accepted";
        } catch (const Error& e) {
            EXPECT_TRUE(e.all_ranks());
            const std::string want = "--group-size " + std::to_string(g) + " does not divide the 4 ranks";
            EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
        }
    }
    for (int g : {0, -2}) {
        try {
            pairwise_stages(map, g, 0);
            ADD_FAILURE() << "group size " << g << " accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("--group-size must be positive"), std::string::npos)
                << e.what();
        }
    }
}

TEST(ScheduleNames, RoundTripAndUnknownName) {
    for (ScheduleKind kind : {ScheduleKind::plain, ScheduleKind::pairwise, ScheduleKind::hierarchical})
        EXPECT_EQ(parse_enum<ScheduleKind>(to_string(kind), "--schedule"), kind);
    try {
        parse_enum<ScheduleKind>("ring", "--schedule");
        ADD_FAILURE() << "'ring' accepted";
    } catch (const Error& e) {
        EXPECT_TRUE(e.all_ranks());
        EXPECT_NE(std::string(e.what()).find("unknown --schedule 'ring'"), std::string::npos) << e.what();
    }
}

TEST(ScheduleTags, DistinctPerStageAndDirection) {
    std::set<int> tags;
    for (int s = 0; s < 1000; ++s)
        for (bool reverse : {false, true})
            EXPECT_TRUE(tags.insert(TokenExchange::pairwise_tag(s, reverse)).second);
}

}  // namespace
}  // namespace expar
