// `expar topology FILE...`: loads each topology file (topology/*.yaml, docs/topology.md) and prints a
// summary on rank 0, so a new or edited file can be checked before a run uses it.
#pragma once

namespace expar {
int run_topology_command(int argc, char** argv);
}
