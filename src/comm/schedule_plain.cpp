// The plain schedule: one MPI_Alltoallv (through Comm::alltoallv_rows); MPI picks the route.
#include "schedule.h"

namespace expar {

void TokenExchange::run_plain(const float* send, float* recv, const int64_t*, bool) {
    comm_.alltoallv_rows(send, send_rows_.data(), send_offsets_.data(), recv, recv_rows_.data(),
                         recv_offsets_.data(), row_width_);
    for (int r = 0; r < comm_.size(); ++r)
        if (r != comm_.rank()) count_sent(r, send_rows_[r]);
}

}  // namespace expar
