// `expar calibrate`: measures point-to-point α/β within and across (real or emulated) nodes, all-to-all
// efficiency by size and the expert GEMM rate, prints them, and writes a topology file with a
// calibration block (docs/topology.md, docs/simulator.md "Calibration").
#pragma once

namespace expar {
int run_calibrate_command(int argc, char** argv, bool print_help);
}
