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
    virtual void allreduce_max_i64(int64_t* data, int64_t count) = 0;
    virtual void allreduce_max_f64(double* data, int64_t count) = 0;
    virtual void allreduce_min_f64(double* data, int64_t count) = 0;
    // Rank root receives recv[r*count + i] from every rank r; recv may be null elsewhere.
    virtual void gather_f64(const double* send, double* recv, int64_t count, int root) = 0;
    // Variable-length gather of floats to root, concatenated in rank order.
    virtual void gatherv_f32(const float* send, int64_t count, float* recv, int root) = 0;
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
    void allreduce_max_i64(int64_t* data, int64_t count) override;
    void allreduce_max_f64(double* data, int64_t count) override;
    void allreduce_min_f64(double* data, int64_t count) override;
    void gather_f64(const double* send, double* recv, int64_t count, int root) override;
    void gatherv_f32(const float* send, int64_t count, float* recv, int root) override;

   private:
    MPI_Comm comm_;
    int rank_ = 0;
    int size_ = 1;
    // MPI counts are int: alltoallv converts its int64 counts here, sized at construction.
    std::vector<int> scratch_ints_;  // 4 * size_
    MPI_Datatype row_type_ = MPI_DATATYPE_NULL;
    int64_t row_type_width_ = -1;
};

}  // namespace expar
