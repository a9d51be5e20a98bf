#include "topology_command.h"

#include <cstdio>
#include <string>
#include <vector>

#include "check.h"
#include "topology.h"

namespace expar {

namespace {

const char* kTopologyUsage =
    "usage: expar topology FILE...\n"
    "Loads each topology file (YAML; format in docs/topology.md), checks it and prints a summary:\n"
    "shape, fabrics, link bandwidths (GB/s, one direction) and latencies (us), the derived network and\n"
    "local bandwidth per device, dense rates (GFLOP/s) and the calibration block.\n"
    "  e.g. expar topology topology/*.yaml\n";

}  // namespace

int run_topology_command(int argc, char** argv) {
    const bool rank0 = world_rank_or_minus_one() <= 0;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            if (rank0) std::printf("%s", kTopologyUsage);
            return 0;
        }
        if (arg.size() > 1 && arg[0] == '-')
            EXPAR_FAIL("unrecognised option '" << arg << "' for `expar topology` (it takes only files)");
        paths.push_back(arg);
    }
    if (paths.empty())
        EXPAR_FAIL("`expar topology` needs at least one topology file; try `expar topology --help`");
    // Every rank loads every file, so a bad file fails identically everywhere (an all-ranks error).
    for (size_t i = 0; i < paths.size(); ++i) {
        const Topology topology = load_topology(paths[i]);
        if (rank0) std::printf("%s%s", i ? "\n" : "", describe(topology).c_str());
    }
    return 0;
}

}  // namespace expar
