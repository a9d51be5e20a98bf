// The communication seam: the collectives the MoE layer needs, behind one interface.
// MpiComm (comm_mpi.cpp) implements it over an MPI communicator; an NCCL backend can implement the
// same calls later. Counts and displacements are in *elements* (rows for alltoallv_rows).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <vector>

namespace expar {

class Comm {
   public:
    virtual ~Comm() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;

    virtual void barrier() = 0;
    // recv[r*count + i] = send of rank r [i]
    virtual void allgather_i64(const int64_t* send, int64_t* recv, int64_t count) = 0;
    virtual void allgather_f64(const double* send, double* recv, int64_t count) = 0;
    // recv[r*count + i] = rank r's send[rank()*count + i]
    virtual void alltoall_i64(const int64_t* send, int64_t* recv, int64_t count) = 0;
    // Rows of row_width floats: send_rows[r] rows starting at row send_offsets[r] go to rank r.
    virtual void alltoallv_rows(const float* send,
                                const int64_t* send_rows,
                                const int64_t* send_offsets,
                                float* recv,
                                const int64_t* recv_rows,
                                const int64_t* recv_offsets,
                                int64_t row_width) = 0;
    virtual void allreduce_sum_f32(float* data, int64_t count) = 0;
    // Sum of every rank's data into root's data (in place at root; data is left unchanged elsewhere).
    virtual void reduce_sum_f32(float* data, int64_t count, int root) = 0;
    virtual void broadcast_f32(float* data, int64_t count, int root) = 0;
    virtual void allreduce_max_i64(int64_t* data, int64_t count) = 0;
    virtual void allreduce_max_f64(double* data, int64_t count) = 0;
    virtual void allreduce_min_f64(double* data, int64_t count) = 0;
    // Rank root receives recv[r*count + i] from every rank r; recv may be null elsewhere.
    virtual void gather_f64(const double* send, double* recv, int64_t count, int root) = 0;
    // Variable-length gather of floats to root, concatenated in rank order.
    virtual void gatherv_f32(const float* send, int64_t count, float* recv, int root) = 0;

    // Nonblocking point-to-point rows for the schedules. Each post returns a request id; ids count up
    // from 0 in posting order until clear_requests(). Room for max_requests() posts between clears.
    virtual int post_send_rows(const float* rows, int64_t num_rows, int64_t row_width, int peer, int tag) = 0;
    virtual int post_recv_rows(float* rows, int64_t num_rows, int64_t row_width, int peer, int tag) = 0;
    // Completes requests [first, first + count).
    virtual void wait_requests(int first, int count) = 0;
    // Forgets all requests; every posted one must have been waited for.
    virtual void clear_requests() = 0;
    virtual int num_posted() const = 0;
    virtual int max_requests() const = 0;
};

class MpiComm final : public Comm {
   public:
    explicit MpiComm(MPI_Comm comm);
    ~MpiComm() override;
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    MPI_Comm handle() const { return comm_; }

    void barrier() override;
    void allgather_i64(const int64_t* send, int64_t* recv, int64_t count) override;
    void allgather_f64(const double* send, double* recv, int64_t count) override;
    void alltoall_i64(const int64_t* send, int64_t* recv, int64_t count) override;
    void alltoallv_rows(const float* send,
                        const int64_t* send_rows,
                        const int64_t* send_offsets,
                        float* recv,
                        const int64_t* recv_rows,
                        const int64_t* recv_offsets,
                        int64_t row_width) override;
    void allreduce_sum_f32(float* data, int64_t count) override;
    void reduce_sum_f32(float* data, int64_t count, int root) override;
    void broadcast_f32(float* data, int64_t count, int root) override;
    void allreduce_max_i64(int64_t* data, int64_t count) override;
    void allreduce_max_f64(double* data, int64_t count) override;
    void allreduce_min_f64(double* data, int64_t count) override;
    void gather_f64(const double* send, double* recv, int64_t count, int root) override;
    void gatherv_f32(const float* send, int64_t count, float* recv, int root) override;
    int post_send_rows(const float* rows, int64_t num_rows, int64_t row_width, int peer, int tag) override;
    int post_recv_rows(float* rows, int64_t num_rows, int64_t row_width, int peer, int tag) override;
    void wait_requests(int first, int count) override;
    void clear_requests() override;
    int num_posted() const override { return num_posted_; }
    int max_requests() const override { return static_cast<int>(requests_.size()); }

   private:
    MPI_Datatype row_type(int64_t row_width);
    MPI_Comm comm_;
    int rank_ = 0;
    int size_ = 1;
    // MPI counts are int: alltoallv converts its int64 counts here, sized at construction.
    std::vector<int> scratch_ints_;  // 4 * size_
    MPI_Datatype row_type_ = MPI_DATATYPE_NULL;
    int64_t row_type_width_ = -1;
    std::vector<MPI_Request> requests_;  // 8 * size_, allocated once
    int num_posted_ = 0;
};

}  // namespace expar
