// TEMPORARY stand-in until the a2a branch lands: every schedule runs as plain.
#include "check.h"
#include "schedule.h"

namespace expar {

std::vector<PairwiseStage> pairwise_stages(const NodeMap& map, int g, int rank) {
    const int P = map.num_ranks;
    EXPAR_REQUIRE(P % g == 0, "--group-size " << g << " does not divide " << P);
    std::vector<int> order;
    for (int n = 0; n < map.num_nodes; ++n)
        for (int l = 0; l < map.ranks_per_node; ++l) order.push_back(map.rank_at(n, l));
    int pos = 0;
    for (int i = 0; i < P; ++i)
        if (order[i] == rank) pos = i;
    const int n = P / g, i = pos / g;
    std::vector<PairwiseStage> stages(n);
    for (int s = 0; s < n; ++s) {
        const int to = ((i - s) % n + n) % n, from = (i + s) % n;
        for (int m = 0; m < g; ++m) {
            stages[s].send_to.push_back(order[to * g + m]);
            stages[s].recv_from.push_back(order[from * g + m]);
        }
    }
    return stages;
}

TokenExchange::TokenExchange(
    ScheduleKind kind, Comm& comm, const NodeMap& map, int group_size, int64_t, int64_t, int64_t row_width)
    : kind_(kind), comm_(comm), map_(map), group_size_(group_size), row_width_(row_width) {
    const int P = comm.size();
    if (kind == ScheduleKind::pairwise) stages_ = pairwise_stages(map, group_size, comm.rank());
    send_rows_.resize(P);
    send_offsets_.resize(P);
    recv_rows_.resize(P);
    recv_offsets_.resize(P);
}
TokenExchange::~TokenExchange() = default;

void TokenExchange::alltoallv(const float* send, float* recv, const int64_t* rows, bool reverse) {
    const int P = comm_.size(), me = comm_.rank();
    int64_t so = 0, ro = 0;
    bytes_intra_ = bytes_inter_ = 0;
    for (int r = 0; r < P; ++r) {
        send_rows_[r] = reverse ? rows[r * P + me] : rows[me * P + r];
        recv_rows_[r] = reverse ? rows[me * P + r] : rows[r * P + me];
        send_offsets_[r] = so;
        recv_offsets_[r] = ro;
        so += send_rows_[r];
        ro += recv_rows_[r];
        if (r != me) (map_.same_node(me, r) ? bytes_intra_ : bytes_inter_) += send_rows_[r] * row_width_ * 4;
    }
    comm_.alltoallv_rows(send, send_rows_.data(), send_offsets_.data(), recv, recv_rows_.data(),
                         recv_offsets_.data(), row_width_);
}

}  // namespace expar
