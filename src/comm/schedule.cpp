// What every schedule shares: FasterMoE's stage plan, the per-call send and receive
// layouts, tags and byte accounting. Each route lives in its own file: schedule_plain.cpp,
// schedule_pairwise.cpp, schedule_hierarchical.cpp.
#include "schedule.h"

#include <cstring>

#include "check.h"
#include "timer.h"

namespace expar {

namespace {
// MPI guarantees tags up to 32767; the layout below stays under it for up to 16 379 ranks.
constexpr int kMaxTag = 32767;
constexpr int kTagPairwiseBase = 8;  // 2..5 are the hierarchical phases (schedule_hierarchical.cpp),
                                     // 6 the pairwise round trip's results (schedule_pairwise.cpp)
}  // namespace

std::vector<PairwiseStage> pairwise_stages(const NodeMap& map, int group_size, int rank) {
    const int P = map.num_ranks;
    EXPAR_REQUIRE(group_size > 0, "--group-size must be positive, got " << group_size);
    EXPAR_REQUIRE(P % group_size == 0, "--group-size " << group_size << " does not divide the " << P
                                                       << " ranks (pairwise schedule)");
    EXPAR_ASSERT(rank >= 0 && rank < P);
    const int num_groups = P / group_size;
    // node_ranks lists the ranks node by node: position in it = place in node order.
    const int position = map.node_of_rank[rank] * map.ranks_per_node + map.local_index[rank];
    const int group = position / group_size;
    std::vector<PairwiseStage> stages(num_groups);
    for (int s = 0; s < num_groups; ++s) {
        const int to = (group - s + num_groups) % num_groups, from = (group + s) % num_groups;
        for (int m = 0; m < group_size; ++m) {
            stages[s].send_to.push_back(map.node_ranks[to * group_size + m]);
            stages[s].recv_from.push_back(map.node_ranks[from * group_size + m]);
        }
    }
    return stages;
}

int TokenExchange::pairwise_tag(int stage, bool reverse) {
    const int tag = kTagPairwiseBase + 2 * stage + (reverse ? 1 : 0);
    EXPAR_ASSERT(stage >= 0 && tag <= kMaxTag);
    return tag;
}

TokenExchange::TokenExchange(ScheduleKind kind,
                             Comm& comm,
                             const NodeMap& map,
                             int group_size,
                             int64_t max_send_rows,
                             int64_t max_recv_rows,
                             int64_t row_width)
    : kind_(kind),
      comm_(comm),
      map_(map),
      group_size_(group_size),
      row_width_(row_width),
      max_send_rows_(max_send_rows),
      max_recv_rows_(max_recv_rows) {
    const int P = comm.size();
    EXPAR_ASSERT(map.num_ranks == P);
    EXPAR_ASSERT(max_send_rows >= 0 && max_recv_rows >= 0 && row_width > 0);
    // Between clears an exchange posts at most one send and one receive per peer, a pairwise round trip
    // two of each (its rows out and its results back).
    EXPAR_ASSERT(comm.max_requests() >= 4 * P);
    send_rows_.resize(P);
    send_offsets_.resize(P);
    recv_rows_.resize(P);
    recv_offsets_.resize(P);
    if (kind == ScheduleKind::pairwise) {
        stages_ = pairwise_stages(map, group_size, comm.rank());
        pairwise_tag(static_cast<int>(stages_.size()) - 1, true);  // asserts the tags fit
        stage_first_request_.resize(stages_.size());
        stage_num_requests_.resize(stages_.size());
    }
    if (kind == ScheduleKind::hierarchical) init_hierarchical();
}

TokenExchange::~TokenExchange() = default;

void TokenExchange::plan_call(const int64_t* rows, bool reverse) {
    const int P = comm_.size(), me = comm_.rank();
    int64_t num_send = 0, num_recv = 0;
    for (int r = 0; r < P; ++r) {
        send_rows_[r] = traffic(rows, P, me, r, reverse);
        recv_rows_[r] = traffic(rows, P, r, me, reverse);
        EXPAR_ASSERT(send_rows_[r] >= 0 && recv_rows_[r] >= 0);
        send_offsets_[r] = num_send;
        recv_offsets_[r] = num_recv;
        num_send += send_rows_[r];
        num_recv += recv_rows_[r];
    }
    // The buffers (the caller's and the relays) were sized for these bounds.
    EXPAR_ASSERT(num_send <= max_send_rows_ && num_recv <= max_recv_rows_);
}

void TokenExchange::alltoallv(const float* send, float* recv, const int64_t* rows, bool reverse) {
    plan_call(rows, reverse);
    bytes_intra_ = 0;
    bytes_inter_ = 0;
    switch (kind_) {
        case ScheduleKind::plain:
            run_plain(send, recv, rows, reverse);
            break;
        case ScheduleKind::pairwise:
            run_pairwise(send, recv, rows, reverse);
            break;
        case ScheduleKind::hierarchical:
            run_hierarchical(send, recv, rows, reverse);
            break;
    }
}

void TokenExchange::round_trip(const float* send,
                               float* recv,
                               float* results,
                               const int64_t* rows,
                               RoundTripWork& work,
                               RoundTripTimes* times) {
    if (kind_ == ScheduleKind::pairwise) {
        plan_call(rows, false);
        bytes_intra_ = 0;
        bytes_inter_ = 0;
        run_pairwise_round_trip(send, recv, results, work, times);
        return;
    }
    const double t0 = now_s();
    alltoallv(send, recv, rows, false);
    int64_t intra = bytes_intra_, inter = bytes_inter_;
    const double t1 = now_s();
    work.compute_local();
    for (int src = 0; src < comm_.size(); ++src) work.compute_source(src);
    const double t2 = now_s();
    alltoallv(recv, results, rows, true);
    bytes_intra_ += intra;
    bytes_inter_ += inter;
    times->wait_in_s = t1 - t0;
    times->compute_s = t2 - t1;
    times->wait_out_s = now_s() - t2;
}

void TokenExchange::copy_rows(float* to, const float* from, int64_t num_rows) const {
    if (num_rows > 0) std::memcpy(to, from, static_cast<size_t>(num_rows * row_width_) * sizeof(float));
}

void TokenExchange::count_sent(int peer, int64_t num_rows) {
    EXPAR_ASSERT(peer != comm_.rank());
    const int64_t bytes = num_rows * row_width_ * static_cast<int64_t>(sizeof(float));
    if (map_.same_node(comm_.rank(), peer))
        bytes_intra_ += bytes;
    else
        bytes_inter_ += bytes;
}

}  // namespace expar
