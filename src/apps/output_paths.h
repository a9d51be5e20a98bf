// The files a run writes (--log, --dump, --checkpoint, --out), checked before any work: distinct from
// each other, and writable by rank 0, so that a long run is not lost to a typo found at its end.
#pragma once

#include <string>
#include <vector>

#include "comm.h"

namespace expar {

struct OutputPath {
    const char* option;  // "--log"
    std::string path;    // empty = not written
    bool staged = true;  // written as partial_path(path), then renamed onto path (every output file now)
};

// Throws on every rank when two non-empty paths name the same file, or rank 0 cannot write one (a
// missing or read-only directory, or a directory in the file's place). An existing file is left as it was.
void require_output_paths(Comm& comm, const std::vector<OutputPath>& outputs);

}  // namespace expar
