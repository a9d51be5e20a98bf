// FasterMoE's smart schedule without the compute: n = P / group_size stages; in stage s the rank
// exchanges with the ranks of groups (i − s) and (i + s) mod n. Stage s+1 is posted before stage s is
// waited for, so two stages are always in flight. Stage 0 (the own group) keeps self rows local.
#include "check.h"
#include "schedule.h"
#include "timer.h"

namespace expar {

namespace {
// Results go back as soon as each source's rows are done, in no stage order: one tag for them all (one
// message per peer); the rows out travel with their stage's tag.
constexpr int kTagRoundTripResults = 6;
}  // namespace

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

void TokenExchange::run_pairwise_round_trip(
    const float* send, float* recv, float* results, RowWork& work, RoundTripTimes* times) {
    EXPAR_ASSERT(comm_.num_posted() == 0);
    const int P = comm_.size(), me = comm_.rank(), num_stages = static_cast<int>(stages_.size());
    const int64_t W = row_width_;
    const double t_start = now_s();
    double compute = 0, wait_in = 0;
    // Results come back into disjoint slices of `results`: post all their receives up front.
    for (int r = 0; r < P; ++r)
        if (r != me && send_rows_[r] > 0)
            comm_.post_recv_rows(results + send_offsets_[r] * W, send_rows_[r], W, r, kTagRoundTripResults);
    post_pairwise_stage(0, send, recv, false);
    copy_rows(recv + recv_offsets_[me] * W, send + send_offsets_[me] * W,
              send_rows_[me]);  // stage 0 holds me
    double t = now_s();
    work.compute_local();  // overlaps the first stage's transfers
    compute += now_s() - t;
    for (int s = 0; s < num_stages; ++s) {
        t = now_s();
        comm_.wait_requests(stage_first_request_[s], stage_num_requests_[s]);
        if (s + 1 < num_stages) post_pairwise_stage(s + 1, send, recv, false);
        wait_in += now_s() - t;
        for (int src : stages_[s].recv_from) {
            t = now_s();
            work.compute_source(src);
            compute += now_s() - t;
            const float* out = recv + recv_offsets_[src] * W;
            if (src == me) {
                copy_rows(results + send_offsets_[me] * W, out, recv_rows_[me]);
            } else if (recv_rows_[src] > 0) {
                comm_.post_send_rows(out, recv_rows_[src], W, src, kTagRoundTripResults);
                count_sent(src, recv_rows_[src]);
            }
        }
    }
    t = now_s();
    comm_.wait_requests(0, comm_.num_posted());
    comm_.clear_requests();
    times->wait_in_s = wait_in;
    times->compute_s = compute;
    times->wait_out_s = now_s() - t;
    // Posting the transfers counts as waiting for rows, so the three parts add up to the wall time.
    times->wait_in_s += (t - t_start) - wait_in - compute;
}

}  // namespace expar
