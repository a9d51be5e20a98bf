// Training checkpoints in HDF5: parameters (experts under their global index), optimizer state, RNG and
// data position, and the attributes that define the model's shape. Writes are atomic (a temporary file,
// then rename), and a checkpoint written at one rank count loads at another (experts re-sharded).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "comm.h"

namespace expar {

// One tensor of the training state.
// Replicated (num_items_global == 1): every rank holds all of it; the file holds one copy.
// Sharded over experts: this rank holds items [first_item, first_item + num_items) of num_items_global
// items (experts), each item_shape; the file holds all items in global order,
// [num_items_global, item_shape...].
struct StateTensor {
    std::string path;  // HDF5 dataset path, e.g. "/params/h3.qkv_w", "/adam_m/moe1.w1"
    std::vector<int64_t> item_shape;
    float* data = nullptr;  // this rank's items, contiguous
    int64_t num_items_global = 1;
    int64_t first_item = 0;
    int64_t num_items = 1;
};

struct TrainingState {
    std::vector<StateTensor> tensors;
    std::vector<std::pair<std::string, int64_t>> counters;  // step, AdamW step, data position, seed, ...
    // Names of counters that load_checkpoint requires to be >= 0 (a step of -5 is a damaged file).
    std::vector<std::string> non_negative_counters;
    // What must match for a checkpoint to load: model shape and vocabulary (e.g. "d_model" -> "256").
    std::vector<std::pair<std::string, std::string>> shape_attributes;
    // Recorded, not checked: options, git revision, rank count.
    std::vector<std::pair<std::string, std::string>> info_attributes;
};

// Collective. Rank 0 writes path + ".partial" (sharded tensors gathered in rank order), then renames it over
// path, so a crash during the save leaves the previous checkpoint intact. Throws (all ranks) on failure.
// Ranks must hold consecutive item ranges in rank order (rank 0 the first items); any other split is an
// internal error. File layout: docs/hdf5.md, "Checkpoints".
void save_checkpoint(Comm& comm, const std::string& path, const TrainingState& state);

// Collective. Fills every tensor's data (each rank reads its own items) and every counter named in
// state. Throws (all ranks), one line, if the file is missing or unreadable, a shape attribute differs
// ("checkpoint 'F' is from another model: d_model 128 here, 256 in the file"), a tensor is missing or has
// another shape or type (tensors are float32, counters integers), or a counter is missing. Every rank
// checks these before any rank reads, so such a checkpoint leaves state unchanged. After the read it
// throws (all ranks) if a value is not finite or a non_negative_counters one is negative; state then
// holds the file's values. The items may be split differently from the save (any rank count).
void load_checkpoint(Comm& comm, const std::string& path, TrainingState& state);

}  // namespace expar
