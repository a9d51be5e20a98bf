// Which node each rank is on: from MPI's shared-memory split by default, or contiguous blocks of
// --ranks-per-node ranks so one machine can emulate several nodes. Every rank holds the same map.
// Schedules, topology-aware gates and byte accounting read it; nothing else decides "same node".
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

namespace expar {

struct NodeMap {
    int num_ranks = 1;
    int num_nodes = 1;
    int ranks_per_node = 1;         // every node holds the same number of ranks
    bool emulated = false;          // true when set by --ranks-per-node
    std::vector<int> node_of_rank;  // [P]
    std::vector<int> local_index;   // [P] position of the rank within its node, 0..ranks_per_node-1
    std::vector<int> node_ranks;    // [num_nodes, ranks_per_node] ranks of each node, ascending

    int rank_at(int node, int local) const { return node_ranks[node * ranks_per_node + local]; }
    bool same_node(int a, int b) const { return node_of_rank[a] == node_of_rank[b]; }
};

// Contiguous blocks: rank r on node r / ranks_per_node. Throws (all ranks) unless it divides num_ranks.
NodeMap node_map_blocks(int num_ranks, int ranks_per_node);

// ranks_per_node > 0: node_map_blocks. 0: MPI_Comm_split_type(MPI_COMM_TYPE_SHARED); nodes are numbered by
// their lowest rank. Throws (all ranks) if the nodes hold different numbers of ranks.
NodeMap make_node_map(MPI_Comm comm, int ranks_per_node);

// Builds the map from node_of_rank (any labels); checks equal node sizes.
NodeMap node_map_from_labels(const std::vector<int>& node_label_of_rank, bool emulated);

}  // namespace expar
