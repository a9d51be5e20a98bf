// The files a run reads (--config, --topology, --resume, ...) and writes (--log, --dump, --checkpoint,
// --out), checked before any work and before any output is opened: no output is an input or another
// output, and rank 0 can write every output, so that neither an input nor a long run is lost to a typo.
#pragma once

#include <string>
#include <vector>

#include "comm.h"

namespace expar {

struct InputPath {
    const char* option;  // "--resume"
    std::string path;    // empty = not read
};

struct OutputPath {
    const char* option;  // "--log"
    std::string path;    // empty = not written
    bool staged = true;  // written as partial_path(path), then renamed onto path (every output file now)
    // The input option this output may name (staged outputs only): the input is read whole before the
    // output is first written, and the rename replaces it in one step ("--resume" for --checkpoint).
    const char* may_replace = nullptr;
};

// Throws the same expar::Error on every rank, before anything is written, when an output is the same file
// as an input or as another output (a staged output's partial file counts as an output too), or when rank 0
// cannot write an output (a missing or read-only directory, or a directory in the file's place).
// "The same file": one inode (st_dev, st_ino) for existing files, so hard links and symbolic links count;
// for a file not yet there, one canonical path (the real path of its directory, then its name). Rank 0
// decides, as it writes the files. Every command calls this with all of its inputs and outputs.
void require_distinct_paths(Comm& comm,
                            const std::vector<InputPath>& inputs,
                            const std::vector<OutputPath>& outputs);

}  // namespace expar
