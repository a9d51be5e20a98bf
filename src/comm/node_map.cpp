#include "node_map.h"

#include <algorithm>
#include <map>

#include "check.h"

namespace expar {

NodeMap node_map_from_labels(const std::vector<int>& label_of_rank, bool emulated) {
    NodeMap map;
    map.num_ranks = static_cast<int>(label_of_rank.size());
    map.emulated = emulated;
    // Nodes numbered in order of their lowest rank, so the numbering is the same on every rank.
    std::map<int, int> node_of_label;
    std::vector<int> node_size;
    map.node_of_rank.resize(map.num_ranks);
    map.local_index.resize(map.num_ranks);
    for (int r = 0; r < map.num_ranks; ++r) {
        auto [it, inserted] = node_of_label.emplace(label_of_rank[r], static_cast<int>(node_size.size()));
        if (inserted) node_size.push_back(0);
        map.node_of_rank[r] = it->second;
        map.local_index[r] = node_size[it->second]++;
    }
    map.num_nodes = static_cast<int>(node_size.size());
    map.ranks_per_node = node_size.empty() ? 0 : node_size[0];
    for (int n = 0; n < map.num_nodes; ++n)
        EXPAR_REQUIRE(node_size[n] == map.ranks_per_node, "nodes hold different numbers of ranks (node 0: "
                                                              << map.ranks_per_node << ", node " << n << ": "
                                                              << node_size[n]
                                                              << "); launch the same number per node "
                                                                 "or set --ranks-per-node");
    map.node_ranks.resize(map.num_ranks);
    for (int r = 0; r < map.num_ranks; ++r)
        map.node_ranks[map.node_of_rank[r] * map.ranks_per_node + map.local_index[r]] = r;
    return map;
}

NodeMap node_map_blocks(int num_ranks, int ranks_per_node) {
    EXPAR_REQUIRE(ranks_per_node > 0, "--ranks-per-node must be positive, got " << ranks_per_node);
    EXPAR_REQUIRE(num_ranks % ranks_per_node == 0,
                  "--ranks-per-node " << ranks_per_node << " does not divide the " << num_ranks << " ranks");
    std::vector<int> labels(num_ranks);
    for (int r = 0; r < num_ranks; ++r) labels[r] = r / ranks_per_node;
    return node_map_from_labels(labels, true);
}

NodeMap make_node_map(MPI_Comm comm, int ranks_per_node) {
    int size = 0, rank = 0;
    MPI_CHECK(MPI_Comm_size(comm, &size));
    MPI_CHECK(MPI_Comm_rank(comm, &rank));
    EXPAR_REQUIRE(ranks_per_node >= 0,
                  "--ranks-per-node must be >= 0 (0 = from MPI), got " << ranks_per_node);
    if (ranks_per_node > 0) return node_map_blocks(size, ranks_per_node);
    MPI_Comm shared;
    MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &shared));
    int shared_rank = 0;
    MPI_CHECK(MPI_Comm_rank(shared, &shared_rank));
    // Label each node by its lowest world rank: broadcast it within the node, then gather everywhere.
    int leader = rank;
    MPI_CHECK(MPI_Bcast(&leader, 1, MPI_INT, 0, shared));
    MPI_CHECK(MPI_Comm_free(&shared));
    std::vector<int> labels(size);
    MPI_CHECK(MPI_Allgather(&leader, 1, MPI_INT, labels.data(), 1, MPI_INT, comm));
    return node_map_from_labels(labels, false);
}

}  // namespace expar
