#include "check.h"

#include <mpi.h>

namespace expar {

int world_rank_or_minus_one() {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) return -1;
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

void throw_error(const char* file, int line, const std::string& message, bool all_ranks) {
    std::ostringstream oss;
    oss << message << " [" << file << ":" << line << ", rank " << world_rank_or_minus_one() << "]";
    throw Error(oss.str(), all_ranks);
}

std::string mpi_error_string(int code) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
        return "unknown MPI error " + std::to_string(code);
    return std::string(text, length);
}

}  // namespace expar
