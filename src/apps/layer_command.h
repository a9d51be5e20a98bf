// `expar layer`: N steps of one expert-parallel MoE layer on synthetic tokens, with a summary table,
// an optional HDF5 log and an optional one-step dump.
#pragma once

namespace expar {
int run_layer_command(int argc, char** argv, bool print_help);
}
