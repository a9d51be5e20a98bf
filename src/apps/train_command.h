// `expar train`: trains the MoE Transformer language model expert-parallel over the MPI ranks, with
// evaluation, an HDF5 log, a one-step dump and a progress line on rank 0.
#pragma once

namespace expar {
int run_train_command(int argc, char** argv, bool print_help);
}
