// The HDF5 files of `expar layer`: the per-step log (--log) and the one-step dump (--dump).
// Both are collective calls; rank 0 writes, gathering what other ranks hold. Schemas: docs/hdf5.md.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm.h"
#include "h5_file.h"
#include "h5_log_table.h"
#include "moe_layer.h"

namespace expar {

using Attributes = std::vector<std::pair<std::string, std::string>>;

// Collective: rank 0 creates a staged file for path (written as partial_path(path), see h5_file.h), null
// elsewhere. If rank 0 cannot, every rank throws the same one-line error, so all ranks fail together.
// what: the option that names the file ("--log"), for messages.
std::unique_ptr<H5File> create_on_root(Comm& comm, const std::string& path, const std::string& what);

// Collective: once every rank is here (the run or the dump succeeded everywhere), rank 0 closes the file
// and renames it onto its path. A failure there is rank 0's error (main aborts the others).
void commit_on_root(Comm& comm, H5File* file);

// Root attributes every expar file carries: the given options, git revision, rank count, BLAS.
void write_common_attributes(H5File& file, const Attributes& options, int num_ranks);

class LayerLog {
   public:
    // Collective. Throws the same error on every rank if rank 0 cannot create the file.
    LayerLog(Comm& comm, const std::string& path, const Attributes& options, const LayerConfig& config);
    ~LayerLog();
    // Collective. step_time_s: this rank's wall time of the step.
    void append(int64_t step, const MoeLayer& layer, double step_time_s, double tokens_per_s);
    void flush();
    // Collective, at the end of a successful run: the log replaces the file at its path.
    void commit(Comm& comm);

    struct Row;  // one step, as append gets it (layer_io.cpp)

   private:
    std::unique_ptr<H5File> file_;  // rank 0 only
    std::unique_ptr<H5LogTable<Row>> table_;
};

// Collective. Writes x, dy, y, dx, routing, losses, all parameters and all gradients in global order.
// Call after forward and backward of one step, with router gradients already all-reduced.
void write_layer_dump(Comm& comm,
                      const std::string& path,
                      const Attributes& options,
                      const MoeLayer& layer,
                      const float* x,
                      const float* dy,
                      const float* y,
                      const float* dx,
                      uint64_t seed,
                      int64_t step);

}  // namespace expar
