// The HDF5 files of `expar train`: the training log (--log: per-step losses, rates and phase times,
// per-step expert loads and drops, routing count matrices every K steps, evaluations, POS-tag routing
// counts) and the one-step dump (--dump: parameters, batch, logits, losses and every gradient).
// Collective calls; rank 0 writes. Schemas: docs/hdf5.md, "Training log" and "Training dump".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "h5_file.h"
#include "h5_log_table.h"
#include "layer_io.h"
#include "trainer.h"

namespace expar {

class TrainLog {
   public:
    // Collective. Throws the same error on every rank if rank 0 cannot create the file. attributes: the
    // options and any other root attributes (git revision, rank count and BLAS are added).
    TrainLog(Comm& comm, const std::string& path, const Attributes& attributes, const Trainer& trainer);
    ~TrainLog();
    // Not collective: every value is global (the same on every rank); rank 0 writes, others return.
    void append_step(int64_t step, const StepResult& result, double step_time_s, double tokens_per_s);
    void append_routing(int64_t step);  // the [P, E] requested-count matrix of every MoE block
    void append_eval(int64_t step, const EvalResult& result);
    // POS-tag routing counts of an evaluation, [M, E, tags], and the tag names (rank 0).
    void write_tag_counts(const EvalResult& result, const std::vector<std::string>& tag_names);
    void flush();
    // Collective, at the end of a successful run (or one stopped by --stop-at): the log replaces the file
    // at its path.
    void commit(Comm& comm);

    // What append_step, append_routing and append_eval get (train_io.cpp).
    struct StepRow;
    struct RoutingRow;
    struct EvalRow;

   private:
    const Trainer& trainer_;
    bool root_;
    std::unique_ptr<H5File> file_;  // rank 0 only, as are the tables
    std::unique_ptr<H5LogTable<StepRow>> steps_;
    std::unique_ptr<H5LogTable<RoutingRow>> routing_;  // with MoE blocks only
    std::unique_ptr<H5LogTable<EvalRow>> eval_;
};

// Collective. Runs one forward (logits) and trainer_compute_grads on this batch, then writes the batch
// in global order, the logits, the losses, every parameter and every gradient (experts gathered in global
// order), before any update. inputs, targets: this rank's [B, S]. Returns the step's result so far (the
// caller finishes the step with trainer_update).
StepResult write_train_dump(Trainer& trainer,
                            const std::string& path,
                            const Attributes& attributes,
                            int64_t step,
                            const int32_t* inputs,
                            const int32_t* targets);

}  // namespace expar
