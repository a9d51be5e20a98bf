// `expar simulate`: predicts steps of an MoE layer (and, by the number of MoE layers, of a model) on a
// cluster described by a topology file; decisions by the real routing code, time by the simulator's
// engine. Sweeps over any option are spread across MPI ranks and gathered into one HDF5 file.
#pragma once

namespace expar {
int run_simulate_command(int argc, char** argv, bool print_help);
}
