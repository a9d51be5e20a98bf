// Token-exchange schedules (ScheduleKind, the pairwise group-size rule): how the rows of one all-to-all(v)
// travel between ranks, alone (alltoallv) or as the MoE layer's round trip with the expert work between
// (round_trip). plain = one MPI_Alltoallv; pairwise = FasterMoE's grouped ring of pairwise exchanges;
// hierarchical = a 2D all-to-all (intra-node, then inter-node between same-index ranks, Tutel 2DH).
// All three deliver the same bytes to the same places; only the route and the timing differ.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm.h"
#include "enum_names.h"
#include "node_map.h"

namespace expar {

enum class ScheduleKind { plain, pairwise, hierarchical };
// Option names (enum_names.h): to_string, --help and option parsing read this table.
inline const auto& enum_names(ScheduleKind) {
    static constexpr EnumName<ScheduleKind> names[] = {
        {ScheduleKind::plain, "plain", "one MPI_Alltoallv"},
        {ScheduleKind::pairwise, "pairwise", "FasterMoE, overlapped with expert compute"},
        {ScheduleKind::hierarchical, "hierarchical", "2D: intra-node, then inter-node"}};
    return names;
}

// --group-size G of the pairwise schedule, the same in every command that runs it (layer, train, simulate,
// alltoall): 0 = the largest divisor of the P ranks up to 4; otherwise G clipped to P, which must then
// divide P (pairwise_stages throws otherwise; the layer's validate() says so up front).
inline int effective_group_size(int group_size, int num_ranks) {
    if (group_size > 0) return group_size < num_ranks ? group_size : num_ranks;
    int g = 1;
    for (int d = 1; d <= 4 && d <= num_ranks; ++d)
        if (num_ranks % d == 0) g = d;
    return g;
}
// One --help text for --group-size in every command.
constexpr const char* kGroupSizeHelp =
    "pairwise: ranks per group [ranks]; clipped to the rank count, then must divide it; 0 = the largest "
    "divisor of the rank count up to 4";

// FasterMoE stage s of the rank's group i (n groups of group_size ranks in a ring):
// send to the ranks of group (i − s) mod n, receive from the ranks of group (i + s) mod n.
// Stage 0 is the rank's own group (itself included), so the fastest, intra-group exchange comes first.
struct PairwiseStage {
    std::vector<int> send_to;
    std::vector<int> recv_from;
};

// Groups are consecutive blocks of group_size ranks in node order (node 0's ranks, node 1's, ...), so a
// group never straddles a node boundary when group_size divides ranks_per_node. Throws (all ranks)
// unless group_size divides the rank count.
std::vector<PairwiseStage> pairwise_stages(const NodeMap& map, int group_size, int rank);

// The expert work between the two exchanges of a round trip (TokenExchange::round_trip).
class RoundTripWork {
   public:
    virtual ~RoundTripWork() = default;
    // Work that needs no received rows (the shadowed experts' rows, computed at their source).
    virtual void compute_local() = 0;
    // The rows received from `src`, in place in the round trip's `recv` buffer.
    virtual void compute_source(int src) = 0;
};

// Where a round trip's time went on this rank [s]: posting and waiting for the rows in, RoundTripWork, and
// sending the results back and waiting for this rank's. Every interval goes to one part, so their sum is
// the round trip's wall time (less the bookkeeping before the first clock read).
struct RoundTripTimes {
    double wait_in_s = 0, compute_s = 0, wait_out_s = 0;
    double exchange_s() const { return wait_in_s + wait_out_s; }
};

// The traffic of one exchange, identical on every rank: rows[src * P + dst] rows from src to dst.
// Layouts: a sender's rows are grouped by destination in rank order; a receiver's by source in rank order.
class TokenExchange {
   public:
    // max_send_rows / max_recv_rows bound the rows any one rank sends / receives in one call (either
    // direction); every buffer is sized from them here, never in alltoallv.
    TokenExchange(ScheduleKind kind,
                  Comm& comm,
                  const NodeMap& map,
                  int group_size,
                  int64_t max_send_rows,
                  int64_t max_recv_rows,
                  int64_t row_width);
    ~TokenExchange();
    TokenExchange(const TokenExchange&) = delete;
    TokenExchange& operator=(const TokenExchange&) = delete;

    ScheduleKind kind() const { return kind_; }
    const std::vector<PairwiseStage>& stages() const { return stages_; }
    // MPI tag of stage s of the pairwise exchange (forward or reverse): distinct per stage and direction,
    // and from the hierarchical phases, so a caller interleaving stages with compute cannot mix them up.
    static int pairwise_tag(int stage, bool reverse);

    // reverse = false: rank me sends rows[me][dst] to each dst and receives rows[src][me] from each src.
    // reverse = true: the same traffic sent back (sends rows[dst][me], receives rows[me][src]).
    void alltoallv(const float* send, float* recv, const int64_t* rows, bool reverse);

    // Rows out to their owners, work on them, results back: send → recv (at the owner, by source in rank
    // order), work.compute_local() and work.compute_source(src) for every src, then recv → results (at
    // the sender, in send order). plain and hierarchical run two whole exchanges around the work;
    // pairwise pipelines it (FasterMoE's smart schedule): the next stage's transfers are posted before
    // the current stage's compute, and each source's results are sent back as soon as they are done.
    // The work sees the same blocks in the same order in every schedule. Bytes count both directions.
    void round_trip(const float* send,
                    float* recv,
                    float* results,
                    const int64_t* rows,
                    RoundTripWork& work,
                    RoundTripTimes* times);

    // Bytes this rank put on the wire in the last alltoallv or round trip (both directions), split by link
    // class (relayed rows count at every hop). Rows a rank keeps for itself are not counted.
    int64_t last_bytes_intra_node() const { return bytes_intra_; }
    int64_t last_bytes_inter_node() const { return bytes_inter_; }

   private:
    // Rows from src to dst in this call's direction.
    static int64_t traffic(const int64_t* rows, int num_ranks, int src, int dst, bool reverse) {
        return reverse ? rows[dst * num_ranks + src] : rows[src * num_ranks + dst];
    }
    void copy_rows(float* to, const float* from, int64_t num_rows) const;
    void count_sent(int peer, int64_t num_rows);  // adds to bytes_intra_ or bytes_inter_
    void init_hierarchical();                     // sizes the relays
    void post_pairwise_stage(int stage, const float* send, float* recv, bool reverse);
    void run_plain(const float* send, float* recv, const int64_t* rows, bool reverse);
    void run_pairwise(const float* send, float* recv, const int64_t* rows, bool reverse);
    void run_hierarchical(const float* send, float* recv, const int64_t* rows, bool reverse);
    void plan_call(const int64_t* rows, bool reverse);  // per-peer rows and offsets of one call
    void run_pairwise_round_trip(
        const float* send, float* recv, float* results, RoundTripWork& work, RoundTripTimes* times);

    ScheduleKind kind_;
    Comm& comm_;
    const NodeMap& map_;
    int group_size_;
    int64_t row_width_;
    std::vector<PairwiseStage> stages_;
    int64_t max_send_rows_, max_recv_rows_;
    std::vector<int64_t> send_rows_, send_offsets_, recv_rows_, recv_offsets_;  // [P]
    std::vector<int> stage_first_request_, stage_num_requests_;                 // [num stages], pairwise
    // Hierarchical staging, sized at construction (bounds in schedule_hierarchical.cpp):
    // relay_a_ = phase-1 send pack, then phase-2 send pack; relay_b_ = phase-1 receive [+ phase-2 receive].
    std::vector<float> relay_a_, relay_b_;
    std::vector<int64_t> relay_cursor_;  // [ranks_per_node] read position in each phase-1 chunk
    bool nodes_contiguous_ = true;       // every node's ranks are consecutive: phase 2 receives in place
    int64_t bytes_intra_ = 0, bytes_inter_ = 0;
};

}  // namespace expar
