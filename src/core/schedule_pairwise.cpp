// FasterMoE's smart schedule without the compute: n = P / group_size stages; in stage s the rank
// exchanges with the ranks of groups (i − s) and (i + s) mod n. Stage s+1 is posted before stage s is
// waited for, so two stages are always in flight. Stage 0 (the own group) keeps self rows local.
#include "check.h"
#include "schedule.h"

namespace expar {

// Reverse traffic runs each stage backwards: send to whom the forward stage received from.
void TokenExchange::post_pairwise_stage(int stage, const float* send, float* recv, bool reverse) {
    const PairwiseStage& st = stages_[stage];
    const std::vector<int>& to = reverse ? st.recv_from : st.send_to;
    const std::vector<int>& from = reverse ? st.send_to : st.recv_from;
    const int me = comm_.rank(), tag = pairwise_tag(stage, reverse);
    const int first = comm_.num_posted();
    // Both ends know every count, so empty messages are skipped on both sides.
    for (int peer : from)
        if (peer != me && recv_rows_[peer] > 0)
            comm_.post_recv_rows(recv + recv_offsets_[peer] * row_width_, recv_rows_[peer], row_width_, peer,
                                 tag);
    for (int peer : to)
        if (peer != me && send_rows_[peer] > 0) {
            comm_.post_send_rows(send + send_offsets_[peer] * row_width_, send_rows_[peer], row_width_, peer,
                                 tag);
            count_sent(peer, send_rows_[peer]);
        }
    stage_first_request_[stage] = first;
    stage_num_requests_[stage] = comm_.num_posted() - first;
}

void TokenExchange::run_pairwise(const float* send, float* recv, const int64_t*, bool reverse) {
    EXPAR_ASSERT(comm_.num_posted() == 0);
    const int num_stages = static_cast<int>(stages_.size()), me = comm_.rank();
    post_pairwise_stage(0, send, recv, reverse);
    for (int s = 0; s < num_stages; ++s) {
        if (s + 1 < num_stages) post_pairwise_stage(s + 1, send, recv, reverse);
        if (s == 0)  // while stages 0 and 1 are in flight
            copy_rows(recv + recv_offsets_[me] * row_width_, send + send_offsets_[me] * row_width_,
                      send_rows_[me]);
        comm_.wait_requests(stage_first_request_[s], stage_num_requests_[s]);
    }
    comm_.clear_requests();
}

}  // namespace expar
