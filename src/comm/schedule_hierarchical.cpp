// The hierarchical schedule, a 2D all-to-all in Tutel's 2DH manner, on M ranks per node and N nodes.
// Rank (node n, local index l) is on "rail" l. Phase 1 (intra-node): to each local peer l' the rank sends
// one message with all its rows for rail l' (for every node). Phase 2 (inter-node): along its own rail, the
// rank sends to each other node one message with the rows of all M ranks of its node for that node's rail
// rank: N − 1 messages of M·(rows per pair) instead of M·(N − 1) small ones. With M == 1 or N == 1 there is
// only one hop, so it is the plain exchange.
//
// Buffers, in rows of row_width floats, for S = max_send_rows and R = max_recv_rows:
//   relay_a_  phase-1 send pack [peer l' != l][node n]: my rows to rank (n, l')          <= S
//             then phase-2 send pack [node n != mine][l']: rows of (mine, l') to (n, l)   <= min(M·S,
//             (N−1)·R)
//   relay_b_  phase-1 receive [peer l' != l][node n]: rows of (mine, l') to (n, l)        <= min((M−1)·S,
//   N·R)
//             + phase-2 receive [node n != mine][l'] when nodes are not rank-contiguous   <= R
//             (otherwise phase 2 receives straight into the caller's buffer).
#include <algorithm>

#include "check.h"
#include "schedule.h"

namespace expar {

namespace {
constexpr int kTagIntraNode = 2;  // + reverse
constexpr int kTagInterNode = 4;  // + reverse
}  // namespace

void TokenExchange::init_hierarchical() {
    const int64_t M = map_.ranks_per_node, N = map_.num_nodes;
    for (int n = 0; n < N; ++n)
        for (int l = 0; l < M; ++l)
            if (map_.rank_at(n, l) != map_.rank_at(n, 0) + l) nodes_contiguous_ = false;
    if (M == 1 || N == 1) return;  // run_plain: no relays
    const int64_t S = max_send_rows_, R = max_recv_rows_;
    const int64_t a_rows = std::max(S, std::min(M * S, (N - 1) * R));
    const int64_t b_rows = std::min((M - 1) * S, N * R) + (nodes_contiguous_ ? 0 : R);
    // value-initialised: touched now, not at the first call
    relay_a_.resize(static_cast<size_t>(a_rows * row_width_));
    relay_b_.resize(static_cast<size_t>(b_rows * row_width_));
    relay_cursor_.resize(M);
}

void TokenExchange::run_hierarchical(const float* send, float* recv, const int64_t* rows, bool reverse) {
    const int M = map_.ranks_per_node, N = map_.num_nodes;
    if (M == 1 || N == 1) {
        run_plain(send, recv, rows, reverse);
        return;
    }
    EXPAR_ASSERT(comm_.num_posted() == 0);
    const int P = comm_.size(), me = comm_.rank();
    const int my_node = map_.node_of_rank[me], my_local = map_.local_index[me];
    const int64_t W = row_width_;
    auto T = [&](int src, int dst) { return traffic(rows, P, src, dst, reverse); };

    // Exact sizes of this call's relay regions, checked against the construction-time bounds.
    int64_t pack1 = 0, recv1 = 0, pack2 = 0, recv2 = 0;
    for (int l = 0; l < M; ++l)
        for (int n = 0; n < N; ++n) {
            const int peer = map_.rank_at(my_node, l);
            if (l != my_local) pack1 += send_rows_[map_.rank_at(n, l)];
            if (l != my_local) recv1 += T(peer, map_.rank_at(n, my_local));
            if (n != my_node) pack2 += T(peer, map_.rank_at(n, my_local));
            if (n != my_node) recv2 += recv_rows_[map_.rank_at(n, l)];
        }
    const int64_t a_rows = static_cast<int64_t>(relay_a_.size()) / W;
    const int64_t b_rows = static_cast<int64_t>(relay_b_.size()) / W;
    EXPAR_ASSERT(pack1 <= a_rows && pack2 <= a_rows);
    EXPAR_ASSERT(recv1 + (nodes_contiguous_ ? 0 : recv2) <= b_rows);
    float* relay_a = relay_a_.data();
    float* relay_b = relay_b_.data();

    // Phase 1, intra-node: chunk l' holds rows for rail l' on every node, in node order.
    const int tag1 = kTagIntraNode + (reverse ? 1 : 0);
    int64_t offset = 0;
    for (int l = 0; l < M; ++l) {
        relay_cursor_[l] = offset;  // where peer l's chunk starts in relay_b
        if (l == my_local) continue;
        const int peer = map_.rank_at(my_node, l);
        const int64_t start = offset;
        for (int n = 0; n < N; ++n) offset += T(peer, map_.rank_at(n, my_local));
        if (offset > start) comm_.post_recv_rows(relay_b + start * W, offset - start, W, peer, tag1);
    }
    offset = 0;
    for (int l = 0; l < M; ++l) {
        if (l == my_local) continue;
        const int64_t start = offset;
        for (int n = 0; n < N; ++n) {
            const int dst = map_.rank_at(n, l);
            copy_rows(relay_a + offset * W, send + send_offsets_[dst] * W, send_rows_[dst]);
            offset += send_rows_[dst];
        }
        const int peer = map_.rank_at(my_node, l);
        if (offset > start) {
            comm_.post_send_rows(relay_a + start * W, offset - start, W, peer, tag1);
            count_sent(peer, offset - start);
        }
    }
    const int num_phase1 = comm_.num_posted();
    comm_.wait_requests(0, num_phase1);

    // Phase 2, inter-node, along my rail: receive from (n', my_local) the rows of all of node n' for me.
    const int tag2 = kTagInterNode + (reverse ? 1 : 0);
    float* staging = relay_b + recv1 * W;
    offset = 0;
    for (int n = 0; n < N; ++n) {
        if (n == my_node) continue;
        int64_t count = 0;
        for (int l = 0; l < M; ++l) count += recv_rows_[map_.rank_at(n, l)];
        if (count == 0) continue;
        // Contiguous node: its ranks' rows are adjacent, in local order, in my receive layout.
        float* to = nodes_contiguous_ ? recv + recv_offsets_[map_.rank_at(n, 0)] * W : staging + offset * W;
        comm_.post_recv_rows(to, count, W, map_.rank_at(n, my_local), tag2);
        offset += count;
    }
    // Regroup by destination node; rows for my own node are delivered here (for me: final place).
    offset = 0;
    for (int n = 0; n < N; ++n) {
        const int dst = map_.rank_at(n, my_local);
        const int64_t start = offset;
        for (int l = 0; l < M; ++l) {
            const int src = map_.rank_at(my_node, l);
            const int64_t count = T(src, dst);
            const float* from =
                l == my_local ? send + send_offsets_[dst] * W : relay_b + relay_cursor_[l] * W;
            if (l != my_local) relay_cursor_[l] += count;
            if (n == my_node) {
                copy_rows(recv + recv_offsets_[src] * W, from, count);  // dst == me
            } else {
                copy_rows(relay_a + offset * W, from, count);
                offset += count;
            }
        }
        if (n != my_node && offset > start) {
            comm_.post_send_rows(relay_a + start * W, offset - start, W, dst, tag2);
            count_sent(dst, offset - start);
        }
    }
    comm_.wait_requests(num_phase1, comm_.num_posted() - num_phase1);
    comm_.clear_requests();

    if (nodes_contiguous_) return;
    // Local reorder: staged rows (by node, then local index) to their sources' places in rank order.
    offset = 0;
    for (int n = 0; n < N; ++n) {
        if (n == my_node) continue;
        for (int l = 0; l < M; ++l) {
            const int src = map_.rank_at(n, l);
            copy_rows(recv + recv_offsets_[src] * W, staging + offset * W, recv_rows_[src]);
            offset += recv_rows_[src];
        }
    }
}

}  // namespace expar
