// FasterMoE's smart schedule: n = P / group_size stages; in stage s the rank exchanges with the ranks of
// groups (i − s) and (i + s) mod n; stage 0 (the own group) keeps self rows local. The exchange alone
// posts stage s+1 before it waits for stage s, so two stages are always in flight; the round trip waits
// for stage s, posts stage s+1, then computes stage s's sources while s+1 travels, and sends each
// source's results back as soon as they are done.
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
    const float* send, float* recv, float* results, RoundTripWork& work, RoundTripTimes* times) {
    EXPAR_ASSERT(comm_.num_posted() == 0);
    const int P = comm_.size(), me = comm_.rank(), num_stages = static_cast<int>(stages_.size());
    const int64_t W = row_width_;
    // One clock, every interval charged to one part, so the parts add up to the wall time: posting and
    // waiting for rows in, the work, and sending results back and waiting for ours.
    *times = RoundTripTimes{};
    double mark = now_s();
    auto charge = [&mark](double* part) {
        const double t = now_s();
        *part += t - mark;
        mark = t;
    };
    // Results come back into disjoint slices of `results`: post all their receives up front.
    for (int r = 0; r < P; ++r)
        if (r != me && send_rows_[r] > 0)
            comm_.post_recv_rows(results + send_offsets_[r] * W, send_rows_[r], W, r, kTagRoundTripResults);
    post_pairwise_stage(0, send, recv, false);
    copy_rows(recv + recv_offsets_[me] * W, send + send_offsets_[me] * W,
              send_rows_[me]);  // stage 0 holds me
    charge(&times->wait_in_s);
    work.compute_local();  // overlaps the first stage's transfers
    charge(&times->compute_s);
    for (int s = 0; s < num_stages; ++s) {
        comm_.wait_requests(stage_first_request_[s], stage_num_requests_[s]);
        if (s + 1 < num_stages) post_pairwise_stage(s + 1, send, recv, false);
        charge(&times->wait_in_s);
        for (int src : stages_[s].recv_from) {
            work.compute_source(src);
            charge(&times->compute_s);
            const float* out = recv + recv_offsets_[src] * W;
            if (src == me) {
                copy_rows(results + send_offsets_[me] * W, out, recv_rows_[me]);
            } else if (recv_rows_[src] > 0) {
                comm_.post_send_rows(out, recv_rows_[src], W, src, kTagRoundTripResults);
                count_sent(src, recv_rows_[src]);
            }
            charge(&times->wait_out_s);
        }
    }
    comm_.wait_requests(0, comm_.num_posted());
    comm_.clear_requests();
    charge(&times->wait_out_s);
}

}  // namespace expar
