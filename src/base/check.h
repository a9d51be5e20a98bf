// Error handling for all of expar: one exception type and the check macros.
// Library code throws expar::Error (file:line, rank, message); each main catches it. An error that
// every rank raises identically (bad options, a bad collective check) is marked all_ranks, so main
// can print it once and exit cleanly instead of calling MPI_Abort.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace expar {

// message with its control characters (bytes below 0x20, and 0x7f) written as \n, \t, \r, \0 or \xHH:
// an error stays one line on the terminal whatever a value in it held (a newline in an option, a NUL
// byte read from a file), and printf's %s does not cut it at a NUL. Other bytes (UTF-8 paths) are kept.
std::string printable(const std::string& message);

class Error : public std::runtime_error {
   public:
    // The message is stored printable(): every error expar reports is one line.
    Error(const std::string& message, bool all_ranks)
        : std::runtime_error(printable(message)), all_ranks_(all_ranks) {}
    // True when every rank of the job raises this same error at the same point.
    bool all_ranks() const { return all_ranks_; }

   private:
    bool all_ranks_;
};

// Rank of this process in MPI_COMM_WORLD, or -1 before MPI_Init / after MPI_Finalize.
int world_rank_or_minus_one();

[[noreturn]] void throw_error(const char* file, int line, const std::string& message, bool all_ranks);

}  // namespace expar

// A user-facing error that all ranks detect identically (validated options, collective checks).
#define EXPAR_FAIL(msg)                               \
    do {                                              \
        std::ostringstream expar_oss_;                \
        expar_oss_ << msg;                            \
        throw ::expar::Error(expar_oss_.str(), true); \
    } while (0)

#define EXPAR_REQUIRE(cond, msg)      \
    do {                              \
        if (!(cond)) EXPAR_FAIL(msg); \
    } while (0)

// An internal invariant; failing it is a bug, reported with file:line and rank.
#define EXPAR_ASSERT(cond)                                                                        \
    do {                                                                                          \
        if (!(cond)) ::expar::throw_error(__FILE__, __LINE__, "assertion failed: " #cond, false); \
    } while (0)

#define MPI_CHECK(call)                                                                                 \
    do {                                                                                                \
        int expar_rc_ = (call);                                                                         \
        if (expar_rc_ != 0 /* MPI_SUCCESS */)                                                           \
            ::expar::throw_error(__FILE__, __LINE__,                                                    \
                                 std::string(#call " failed: ") + ::expar::mpi_error_string(expar_rc_), \
                                 false);                                                                \
    } while (0)

#define HDF5_CHECK(call)                                                                                \
    ([&]() {                                                                                            \
        auto expar_h5_ = (call);                                                                        \
        if (expar_h5_ < 0) ::expar::throw_error(__FILE__, __LINE__, "HDF5 call failed: " #call, false); \
        return expar_h5_;                                                                               \
    }())

#ifdef EXPAR_WITH_CUDA
#define CUDA_CHECK(call)                                                                          \
    do {                                                                                          \
        cudaError_t expar_ce_ = (call);                                                           \
        if (expar_ce_ != cudaSuccess)                                                             \
            ::expar::throw_error(__FILE__, __LINE__,                                              \
                                 std::string(#call ": ") + cudaGetErrorString(expar_ce_), false); \
    } while (0)
#endif

#ifdef EXPAR_WITH_NCCL
#define NCCL_CHECK(call)                                                                          \
    do {                                                                                          \
        ncclResult_t expar_nr_ = (call);                                                          \
        if (expar_nr_ != ncclSuccess)                                                             \
            ::expar::throw_error(__FILE__, __LINE__,                                              \
                                 std::string(#call ": ") + ncclGetErrorString(expar_nr_), false); \
    } while (0)
#endif

namespace expar {
std::string mpi_error_string(int code);
}
