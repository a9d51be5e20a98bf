#include <climits>
#include <vector>

#include "check.h"
#include "comm.h"

namespace expar {

namespace {
int to_int(int64_t value) {
    if (value < 0 || value > INT_MAX) throw_error(__FILE__, __LINE__, "MPI count out of int range", false);
    return static_cast<int>(value);
}
}  // namespace

MpiComm::MpiComm(MPI_Comm comm) {
    MPI_CHECK(MPI_Comm_dup(comm, &comm_));
    MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    MPI_CHECK(MPI_Comm_size(comm_, &size_));
    scratch_ints_.resize(4 * static_cast<size_t>(size_));
    requests_.assign(8 * static_cast<size_t>(size_), MPI_REQUEST_NULL);
}

MpiComm::~MpiComm() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
        if (row_type_ != MPI_DATATYPE_NULL) MPI_Type_free(&row_type_);
        MPI_Comm_free(&comm_);
    }
}

void MpiComm::barrier() {
    MPI_CHECK(MPI_Barrier(comm_));
}

void MpiComm::allgather_i64(const int64_t* send, int64_t* recv, int64_t count) {
    MPI_CHECK(MPI_Allgather(send, to_int(count), MPI_INT64_T, recv, to_int(count), MPI_INT64_T, comm_));
}

void MpiComm::allgather_f64(const double* send, double* recv, int64_t count) {
    MPI_CHECK(MPI_Allgather(send, to_int(count), MPI_DOUBLE, recv, to_int(count), MPI_DOUBLE, comm_));
}

void MpiComm::alltoall_i64(const int64_t* send, int64_t* recv, int64_t count) {
    MPI_CHECK(MPI_Alltoall(send, to_int(count), MPI_INT64_T, recv, to_int(count), MPI_INT64_T, comm_));
}

void MpiComm::alltoallv_rows(const float* send,
                             const int64_t* send_rows,
                             const int64_t* send_offsets,
                             float* recv,
                             const int64_t* recv_rows,
                             const int64_t* recv_offsets,
                             int64_t row_width) {
    MPI_Datatype type = row_type(row_width);
    int* sc = scratch_ints_.data();
    int* sd = sc + size_;
    int* rc = sd + size_;
    int* rd = rc + size_;
    for (int r = 0; r < size_; ++r) {
        sc[r] = to_int(send_rows[r]);
        sd[r] = to_int(send_offsets[r]);
        rc[r] = to_int(recv_rows[r]);
        rd[r] = to_int(recv_offsets[r]);
    }
    MPI_CHECK(MPI_Alltoallv(send, sc, sd, type, recv, rc, rd, type, comm_));
}

// A contiguous row type keeps counts in rows, far from int overflow. Cached for the last width used.
MPI_Datatype MpiComm::row_type(int64_t row_width) {
    if (row_width != row_type_width_) {
        if (row_type_ != MPI_DATATYPE_NULL) MPI_CHECK(MPI_Type_free(&row_type_));
        MPI_CHECK(MPI_Type_contiguous(to_int(row_width), MPI_FLOAT, &row_type_));
        MPI_CHECK(MPI_Type_commit(&row_type_));
        row_type_width_ = row_width;
    }
    return row_type_;
}

int MpiComm::post_send_rows(const float* rows, int64_t num_rows, int64_t row_width, int peer, int tag) {
    EXPAR_ASSERT(num_posted_ < max_requests());
    MPI_Datatype type = row_type(row_width);
    MPI_CHECK(MPI_Isend(rows, to_int(num_rows), type, peer, tag, comm_, &requests_[num_posted_]));
    return num_posted_++;
}

int MpiComm::post_recv_rows(float* rows, int64_t num_rows, int64_t row_width, int peer, int tag) {
    EXPAR_ASSERT(num_posted_ < max_requests());
    MPI_Datatype type = row_type(row_width);
    MPI_CHECK(MPI_Irecv(rows, to_int(num_rows), type, peer, tag, comm_, &requests_[num_posted_]));
    return num_posted_++;
}

void MpiComm::wait_requests(int first, int count) {
    EXPAR_ASSERT(first >= 0 && count >= 0 && first + count <= num_posted_);
    if (count > 0) MPI_CHECK(MPI_Waitall(count, requests_.data() + first, MPI_STATUSES_IGNORE));
}

void MpiComm::clear_requests() {
    for (int i = 0; i < num_posted_; ++i) EXPAR_ASSERT(requests_[i] == MPI_REQUEST_NULL);
    num_posted_ = 0;
}

void MpiComm::reduce_sum_f32(float* data, int64_t count, int root) {
    if (rank_ == root)
        MPI_CHECK(MPI_Reduce(MPI_IN_PLACE, data, to_int(count), MPI_FLOAT, MPI_SUM, root, comm_));
    else
        MPI_CHECK(MPI_Reduce(data, nullptr, to_int(count), MPI_FLOAT, MPI_SUM, root, comm_));
}

void MpiComm::broadcast_f32(float* data, int64_t count, int root) {
    MPI_CHECK(MPI_Bcast(data, to_int(count), MPI_FLOAT, root, comm_));
}

void MpiComm::allreduce_sum_f32(float* data, int64_t count) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, to_int(count), MPI_FLOAT, MPI_SUM, comm_));
}

void MpiComm::allreduce_max_i64(int64_t* data, int64_t count) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, to_int(count), MPI_INT64_T, MPI_MAX, comm_));
}

void MpiComm::allreduce_max_f64(double* data, int64_t count) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, to_int(count), MPI_DOUBLE, MPI_MAX, comm_));
}

void MpiComm::allreduce_min_f64(double* data, int64_t count) {
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, to_int(count), MPI_DOUBLE, MPI_MIN, comm_));
}

void MpiComm::gather_f64(const double* send, double* recv, int64_t count, int root) {
    MPI_CHECK(MPI_Gather(send, to_int(count), MPI_DOUBLE, recv, to_int(count), MPI_DOUBLE, root, comm_));
}

void MpiComm::gatherv_f32(const float* send, int64_t count, float* recv, int root) {
    // Used for dumps only (not in the step), so the small count arrays may allocate.
    int my_count = to_int(count);
    std::vector<int> counts(size_), displs(size_);
    MPI_CHECK(MPI_Gather(&my_count, 1, MPI_INT, counts.data(), 1, MPI_INT, root, comm_));
    if (rank_ == root) {
        int64_t offset = 0;
        for (int r = 0; r < size_; ++r) {
            displs[r] = to_int(offset);
            offset += counts[r];
        }
    }
    MPI_CHECK(
        MPI_Gatherv(send, my_count, MPI_FLOAT, recv, counts.data(), displs.data(), MPI_FLOAT, root, comm_));
}

}  // namespace expar
