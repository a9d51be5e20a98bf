// MPI_COMM_WORLD's rank and size for the MPI test binaries (every test runs on every rank).
#pragma once

#include <mpi.h>

namespace expar::test {

inline int world_size() {
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    return size;
}

inline int world_rank() {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

}  // namespace expar::test
