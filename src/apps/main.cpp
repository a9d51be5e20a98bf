// expar: one executable, one subcommand per job. main() owns MPI and turns library errors into a
// one-line message and a non-zero exit on every rank.
#include <mpi.h>
#include <unistd.h>

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

// Out of memory: a rank cannot tell whether the others failed too. A deterministic one (sizes no process
// can hold) hits every rank at the same allocation, and should print one line; one that hits some ranks
// only must still end the job, while the others may be blocked in a collective waiting for this rank.
// So a failing rank offers a non-blocking allreduce on a communicator of its own (no other collective is
// pending on it, whatever MPI_COMM_WORLD was doing) and waits for it at most kOomAgreementSeconds:
// complete, every rank failed and rank 0 reports once for the job; not, this rank reports and aborts.
// Ranks that fail on the same allocation reach it within milliseconds of each other, even when they
// outnumber cores and start late under load; 5 s leaves them a wide margin and is the delay a partial
// failure adds to the job.
constexpr double kOomAgreementSeconds = 5.0;

// True when every rank of error_comm reported out of memory within kOomAgreementSeconds.
bool all_ranks_out_of_memory(MPI_Comm error_comm) {
    int mine = 1, all = 0;
    MPI_Request request = MPI_REQUEST_NULL;
    if (MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MIN, error_comm, &request) != MPI_SUCCESS) return false;
    const double deadline = MPI_Wtime() + kOomAgreementSeconds;
    for (;;) {
        int done = 0;
        if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
        if (done) return all == 1;
        if (MPI_Wtime() > deadline) return false;  // the request is left pending: MPI_Abort follows
        usleep(1000);                              // leave the core to ranks that are still computing
    }
}

}  // namespace

int main(int argc, char** argv) {
    expar::blas_select_kernels_or_reexec(argv);
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm error_comm = MPI_COMM_NULL;  // used only by all_ranks_out_of_memory
    MPI_Comm_dup(MPI_COMM_WORLD, &error_comm);
    int exit_code = 0;
    std::string out_of_memory;  // the message of an out-of-memory error, reported below
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
        out_of_memory =
            "out of memory (std::bad_alloc): the run needs more memory than this process may use: a smaller "
            "problem per process (its sizes and counts), or more memory";
    } catch (const std::length_error& error) {  // a buffer larger than a std::vector can hold
        out_of_memory = std::string(
                            "out of memory (a buffer of more elements than memory can hold, "
                            "std::length_error: ") +
                        error.what() + "): give each process a smaller problem (its sizes and counts)";
    } catch (const std::exception& error) {
        std::fprintf(stderr, "expar: error on rank %d: %s\n", rank, expar::printable(error.what()).c_str());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (!out_of_memory.empty()) {
        if (!all_ranks_out_of_memory(error_comm)) {
            std::fprintf(stderr, "expar: error on rank %d: %s\n", rank, out_of_memory.c_str());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (rank == 0) std::fprintf(stderr, "expar: error: %s (on every rank)\n", out_of_memory.c_str());
        exit_code = 1;
    }
    MPI_Comm_free(&error_comm);
    MPI_Finalize();
    return exit_code;
}
