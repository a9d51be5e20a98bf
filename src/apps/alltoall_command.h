// `expar alltoall`: the token-exchange microbenchmark in the nccl-tests manner. Times each schedule
// (plain, pairwise, hierarchical, and MPI_Alltoallv called directly) over a sweep of sizes and traffic
// patterns, checks every received float, prints one table per pattern and optionally logs it to HDF5.
#pragma once

namespace expar {
int run_alltoall_command(int argc, char** argv, bool print_help);
}
