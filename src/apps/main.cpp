// expar: one executable, one subcommand per job. main() owns MPI and turns library errors into a
// one-line message and a non-zero exit on every rank.
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "alltoall_command.h"
#include "blas.h"
#include "calibrate_command.h"
#include "check.h"
#include "layer_command.h"
#include "simulate_command.h"
#include "staged_output.h"
#include "topology_command.h"
#include "train_command.h"

namespace {

const char* kUsage =
    "usage: expar <command> [options]     (run under mpirun; see launch/local.sh)\n"
    "\n"
    "commands:\n"
    "  layer      run steps of one expert-parallel MoE layer on synthetic tokens\n"
    "  topology   check topology files (topology/*.yaml) and print what they describe\n"
    "  alltoall   time the token-exchange schedules over a sweep of sizes (nccl-tests style)\n"
    "  calibrate  measure link latency/bandwidth, all-to-all efficiency and the GEMM rate; write a topology\n"
    "  train      train the MoE Transformer language model expert-parallel (synthetic, Brown or any text)\n"
    "  simulate   predict MoE layer and model steps on a topology file, at any rank count; sweeps\n"
    "`expar <command> --help` lists a command's options with defaults and units.\n";

int run(int argc, char** argv) {
    if (argc < 2) EXPAR_FAIL("no command given; try `expar --help`");
    const std::string command = argv[1];
    if (command == "--help" || command == "-h" || command == "help") {
        if (expar::world_rank_or_minus_one() <= 0) std::printf("%s\n", kUsage);
        return expar::run_layer_command(0, argv, true);  // and every option of `layer`
    }
    if (command == "layer") return expar::run_layer_command(argc - 1, argv + 1, false);
    if (command == "topology") return expar::run_topology_command(argc - 1, argv + 1);
    if (command == "train") return expar::run_train_command(argc - 1, argv + 1, false);
    if (command == "alltoall") return expar::run_alltoall_command(argc - 1, argv + 1, false);
    if (command == "simulate") return expar::run_simulate_command(argc - 1, argv + 1, false);
    if (command == "calibrate") return expar::run_calibrate_command(argc - 1, argv + 1, false);
    EXPAR_FAIL("unknown command '" << command << "'; try `expar --help`");
}

}  // namespace

int main(int argc, char** argv) {
    expar::blas_select_kernels_or_reexec(argv);
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int exit_code = 0;
    try {
        exit_code = run(argc, argv);
    } catch (const expar::Error& error) {
        // After the error: where the failed run's outputs are (rank 0 writes them; the others know none).
        if (!error.all_ranks()) {
            std::fprintf(stderr, "expar: error on rank %d: %s\n", rank, error.what());
            expar::print_kept_partials();
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rank == 0) std::fprintf(stderr, "expar: error: %s\n", error.what());
        expar::print_kept_partials();
        exit_code = 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(
            stderr,
            "expar: error on rank %d: out of memory (std::bad_alloc): the run needs more memory than "
            "this process may use: a smaller problem per process (its sizes and counts), or more memory\n",
            rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    } catch (const std::length_error& error) {  // a buffer larger than a std::vector can hold
        std::fprintf(
            stderr,
            "expar: error on rank %d: out of memory (a buffer of more elements than memory can "
            "hold, std::length_error: %s): give each process a smaller problem (its sizes and counts)\n",
            rank, error.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "expar: error on rank %d: %s\n", rank, error.what());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    return exit_code;
}
