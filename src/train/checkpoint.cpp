#include "checkpoint.h"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <memory>

#include "check.h"
#include "fingerprint.h"
#include "h5_file.h"
#include "h5_reader.h"
#include "staged_output.h"

namespace expar {

namespace {

constexpr int64_t kFormatVersion = 1;
constexpr const char* kVersionAttr = "checkpoint_format_version";
constexpr const char* kShapeGroup = "/shape";
constexpr const char* kCounterGroup = "/counters";
// Sharded tensors travel to rank 0 in rounds of whole items, at most this many floats a round (at least
// one item per rank): rank 0's buffer stays bounded however large the model, and MPI's int counts hold.
constexpr int64_t kMaxRoundFloats = int64_t(1) << 26;  // 256 MiB

// Why a save failed, agreed by all ranks (the largest code wins).
enum SaveFailure : int64_t { kSaveOk = 0, kCreateFailed, kWriteFailed, kRenameFailed };

bool is_sharded(const StateTensor& t) {
    return t.num_items_global != 1;
}

int64_t item_floats(const StateTensor& t) {
    int64_t n = 1;
    for (int64_t d : t.item_shape) n *= d;
    return n;
}

// Replicated: item_shape; sharded: [num_items_global, item_shape...].
std::vector<hsize_t> file_dims(const StateTensor& t) {
    std::vector<hsize_t> dims;
    if (is_sharded(t)) dims.push_back(static_cast<hsize_t>(t.num_items_global));
    for (int64_t d : t.item_shape) dims.push_back(static_cast<hsize_t>(d));
    return dims;
}

std::string shape_text(const std::vector<hsize_t>& dims) {
    std::string text = "[";
    for (size_t i = 0; i < dims.size(); ++i) text += (i ? ", " : "") + std::to_string(dims[i]);
    return text + "]";
}

void check_local_tensors(const TrainingState& state) {
    for (const StateTensor& t : state.tensors) {
        EXPAR_ASSERT(!t.path.empty() && t.path[0] == '/');
        for (int64_t d : t.item_shape) EXPAR_ASSERT(d > 0);
        EXPAR_ASSERT(t.num_items_global >= 1);
        if (!is_sharded(t)) EXPAR_ASSERT(t.first_item == 0 && t.num_items == 1);
        EXPAR_ASSERT(t.first_item >= 0 && t.num_items >= 0 &&
                     t.first_item + t.num_items <= t.num_items_global);
        EXPAR_ASSERT(t.data != nullptr || t.num_items == 0 || item_floats(t) == 0);
    }
}

// What every rank must agree on: tensor paths and global shapes, counter names and shape attributes; for a
// save also the values of the counters and attributes, which rank 0 writes for all.
uint64_t state_fingerprint(const TrainingState& state, bool with_values) {
    uint64_t h = kFnvOffset;
    for (const StateTensor& t : state.tensors) {
        h = fnv1a64(t.path + '\n', h);
        const std::vector<hsize_t> dims = file_dims(t);
        h = fnv1a64(dims.data(), dims.size() * sizeof(hsize_t), h);
    }
    for (const auto& [name, value] : state.counters) {
        h = fnv1a64(name + '\n', h);
        if (with_values) h = fnv1a64(&value, sizeof value, h);
    }
    for (const auto& [name, value] : state.shape_attributes) h = fnv1a64(name + '\n' + value + '\n', h);
    if (with_values)
        for (const auto& [name, value] : state.info_attributes) h = fnv1a64(name + '\n' + value + '\n', h);
    return h;
}

// A disagreement is a bug in the caller (and would leave ranks in different collectives).
void check_same_on_every_rank(Comm& comm, uint64_t fingerprint, const char* what) {
    std::vector<int64_t> all(comm.size());
    const int64_t mine = static_cast<int64_t>(fingerprint);
    comm.allgather_i64(&mine, all.data(), 1);
    for (int r = 0; r < comm.size(); ++r)
        if (all[r] != all[0])
            throw_error(__FILE__, __LINE__,
                        std::string("ranks 0 and ") + std::to_string(r) + " pass different " + what, false);
}

// reason: rank 0's account of a failed write (the other ranks' messages are not printed).
[[noreturn]] void fail_save(const std::string& path, int64_t failure, const std::string& reason) {
    const std::string partial = partial_path(path);
    if (failure == kCreateFailed)
        EXPAR_FAIL("cannot write checkpoint '" << path << "': cannot create '" << partial
                                               << "' (check that its directory exists and is writable)");
    if (failure == kWriteFailed)
        EXPAR_FAIL("cannot write checkpoint '" << path << "': writing '" << partial << "' failed: " << reason
                                               << "; the previous checkpoint is untouched");
    EXPAR_FAIL("cannot write checkpoint '" << path << "': cannot rename '" << partial
                                           << "' onto it; the previous checkpoint is untouched");
}

// Checks the file against state on this rank; returns the one-line error, "" if it fits (file then open).
std::string check_checkpoint(const std::string& path,
                             const TrainingState& state,
                             std::unique_ptr<H5Reader>& file) {
    const std::string in_file = "checkpoint '" + path + "'";
    struct stat status;
    if (::stat(path.c_str(), &status) != 0) return in_file + " does not exist";
    try {
        file = std::make_unique<H5Reader>(path);
    } catch (const Error&) {
        return in_file + " is not a readable HDF5 file";
    }
    std::string reading = std::string("the attribute ") + kVersionAttr;  // names what an HDF5 failure hit
    try {
        if (!file->has_attr(kVersionAttr))
            return "'" + path + "' is not an expar checkpoint (it has no " + kVersionAttr + " attribute)";
        const int64_t version = file->int64_attr(kVersionAttr);
        if (version != kFormatVersion)
            return in_file + " has format version " + std::to_string(version) +
                   "; this expar reads version " + std::to_string(kFormatVersion);

        reading = "the shape attributes";
        const std::string another_model = in_file + " is from another model: ";
        const bool has_shape = file->has(kShapeGroup);
        for (const auto& [name, value] : state.shape_attributes) {
            if (!has_shape || !file->has_attr(name, kShapeGroup))
                return another_model + name + " " + value + " here, none in the file";
            const std::string saved = file->string_attr(name, kShapeGroup);
            if (saved != value)
                return another_model + name + " " + value + " here, " + saved + " in the file";
        }
        for (const std::string& name :
             has_shape ? file->attr_names(kShapeGroup) : std::vector<std::string>{}) {
            const auto& here = state.shape_attributes;
            if (std::none_of(here.begin(), here.end(), [&](const auto& a) { return a.first == name; }))
                return another_model + name + " none here, " + file->string_attr(name, kShapeGroup) +
                       " in the file";
        }

        for (const StateTensor& t : state.tensors) {
            reading = "tensor '" + t.path + "'";
            if (!file->has(t.path)) return in_file + " has no tensor '" + t.path + "'";
            const std::vector<hsize_t> saved = file->dims(t.path), here = file_dims(t);
            if (saved != here)
                return another_model + "tensor '" + t.path + "' is " + shape_text(here) + " here, " +
                       shape_text(saved) + " in the file";
            // HDF5 would convert any numeric type on read: int8 weights would load as small integers.
            const std::string type = file->type_name(t.path);
            if (type != "float32")
                return in_file + ": tensor '" + t.path + "' is " + type + "; checkpoints hold float32";
        }
        for (const auto& counter : state.counters) {
            const std::string counter_path = std::string(kCounterGroup) + "/" + counter.first;
            reading = "counter '" + counter.first + "'";
            if (!file->has(counter_path)) return in_file + " has no counter '" + counter.first + "'";
            const std::vector<hsize_t> saved = file->dims(counter_path);
            if (!saved.empty())
                return in_file + ": counter '" + counter.first + "' is " + shape_text(saved) +
                       ", not a scalar";
            // A float step (5.7) would be cut to an integer on read.
            const std::string type = file->type_name(counter_path);
            if (type.compare(0, 3, "int") != 0 && type.compare(0, 4, "uint") != 0)
                return in_file + ": counter '" + counter_path + "' is " + type + ", not an integer";
        }
    } catch (const Error&) {
        return "cannot read " + reading + " of " + in_file;
    }
    return "";
}

// Reads this rank's items of every tensor and every counter from a checked file; returns the error or "".
std::string read_checkpoint(const std::string& path, const H5Reader& file, TrainingState& state) {
    std::string reading;
    try {
        for (StateTensor& t : state.tensors) {
            reading = "tensor '" + t.path + "'";
            if (!is_sharded(t))
                file.read(t.path, t.data);
            else if (t.num_items > 0)
                file.read_rows(t.path, static_cast<hsize_t>(t.first_item), static_cast<hsize_t>(t.num_items),
                               t.data);
        }
        for (auto& counter : state.counters) {
            reading = "counter '" + counter.first + "'";
            file.read(std::string(kCounterGroup) + "/" + counter.first, &counter.second);
        }
    } catch (const Error&) {
        return "cannot read " + reading + " of checkpoint '" + path + "'";
    }
    return "";
}

// Collective: throws on every rank if any rank has an error. Ranks that read the same file reach the same
// verdict, so compare them by a hash of the message; otherwise name the first failing rank.
void agree_on_load_error(Comm& comm, const std::string& path, const std::string& error) {
    const int64_t mine = error.empty() ? 0 : static_cast<int64_t>(fnv1a64(error) | 1);
    std::vector<int64_t> all(comm.size());
    comm.allgather_i64(&mine, all.data(), 1);
    if (std::all_of(all.begin(), all.end(), [&](int64_t h) { return h == all[0]; })) {
        if (!error.empty()) EXPAR_FAIL(error);
        return;
    }
    const auto failing = std::find_if(all.begin(), all.end(), [](int64_t h) { return h != 0; });
    EXPAR_FAIL("checkpoint '" << path << "' does not read the same on every rank (rank "
                              << failing - all.begin()
                              << " fails; check that every rank sees the same file)");
}

// Collective, after read_checkpoint: every value read is finite (a NaN weight would otherwise surface
// steps later as a non-finite MoE input that does not name the checkpoint) and every counter of
// state.non_negative_counters is >= 0. Each rank scans its own items; the first bad value in file order
// over all ranks is reported, so every rank throws the same message.
void check_loaded_values(Comm& comm, const std::string& path, const TrainingState& state) {
    constexpr int64_t kNone = INT64_MAX;
    int64_t mine[2] = {kNone, kNone};  // (tensor index, flat index in the file's dataset)
    for (size_t i = 0; i < state.tensors.size() && mine[0] == kNone; ++i) {
        const StateTensor& t = state.tensors[i];
        const int64_t n = t.num_items * item_floats(t);
        const float* bad = std::find_if(t.data, t.data + n, [](float x) { return !std::isfinite(x); });
        if (bad != t.data + n) {
            mine[0] = static_cast<int64_t>(i);
            mine[1] = t.first_item * item_floats(t) + (bad - t.data);
        }
    }
    std::vector<int64_t> all(2 * comm.size());
    comm.allgather_i64(mine, all.data(), 2);
    int64_t tensor = kNone, flat = kNone;
    for (int r = 0; r < comm.size(); ++r)
        if (std::make_pair(all[2 * r], all[2 * r + 1]) < std::make_pair(tensor, flat)) {
            tensor = all[2 * r];
            flat = all[2 * r + 1];
        }
    if (tensor != kNone) {
        const StateTensor& t = state.tensors[tensor];
        const std::vector<hsize_t> dims = file_dims(t);
        std::vector<hsize_t> index(dims.size());
        for (size_t d = dims.size(); d-- > 0;) {
            index[d] = static_cast<hsize_t>(flat) % dims[d];
            flat /= static_cast<int64_t>(dims[d]);
        }
        // The rank that found it knows the value; NaN and Inf are the only non-finite floats.
        EXPAR_FAIL("checkpoint '" << path << "': tensor '" << t.path << "' holds a non-finite value (NaN or "
                                  << "Inf) at " << shape_text(index)
                                  << "; the checkpoint is damaged or was saved after training diverged");
    }
    for (const std::string& name : state.non_negative_counters)
        for (const auto& [counter, value] : state.counters)
            if (counter == name)
                EXPAR_REQUIRE(value >= 0, "checkpoint '" << path << "': counter '" << kCounterGroup << "/"
                                                         << name << "' is " << value << "; it must be >= 0");
}

}  // namespace

void save_checkpoint(Comm& comm, const std::string& path, const TrainingState& state) {
    const int P = comm.size();
    const bool root = comm.rank() == 0;
    check_local_tensors(state);
    for (const auto& info : state.info_attributes) EXPAR_ASSERT(info.first != kVersionAttr);
    check_same_on_every_rank(comm, state_fingerprint(state, true), "training states to save_checkpoint");

    // Item ranges of the sharded tensors on every rank: ranges[(r·S + s)·2 + {0, 1}] = (first, count) of
    // sharded tensor s on rank r. Rank order must be item order for the gather to be global order.
    std::vector<const StateTensor*> sharded;
    for (const StateTensor& t : state.tensors)
        if (is_sharded(t)) sharded.push_back(&t);
    const int64_t S = static_cast<int64_t>(sharded.size());
    std::vector<int64_t> local_ranges, ranges(2 * S * P);
    for (const StateTensor* t : sharded) {
        local_ranges.push_back(t->first_item);
        local_ranges.push_back(t->num_items);
    }
    comm.allgather_i64(local_ranges.data(), ranges.data(), 2 * S);
    auto first_of = [&](int r, int64_t s) { return ranges[(r * S + s) * 2]; };
    auto count_of = [&](int r, int64_t s) { return ranges[(r * S + s) * 2 + 1]; };
    for (int64_t s = 0; s < S; ++s) {
        int64_t next = 0;
        for (int r = 0; r < P; ++r) {
            if (first_of(r, s) != next)
                throw_error(__FILE__, __LINE__,
                            "checkpoint: the items of '" + sharded[s]->path +
                                "' are not split over ranks in rank order (rank " + std::to_string(r) +
                                " starts at item " + std::to_string(first_of(r, s)) + ", expected " +
                                std::to_string(next) + ")",
                            false);
            next += count_of(r, s);
        }
        if (next != sharded[s]->num_items_global)
            throw_error(__FILE__, __LINE__,
                        "checkpoint: the ranks hold " + std::to_string(next) + " items of '" +
                            sharded[s]->path + "', expected " + std::to_string(sharded[s]->num_items_global),
                        false);
    }
    std::vector<int64_t> items_per_round(S);
    int64_t buffer_floats = 0;
    for (int64_t s = 0; s < S; ++s) {
        const int64_t item = std::max<int64_t>(1, item_floats(*sharded[s]));
        items_per_round[s] = std::max<int64_t>(1, kMaxRoundFloats / (item * P));
        buffer_floats =
            std::max(buffer_floats, std::min(sharded[s]->num_items_global, items_per_round[s] * P) * item);
    }

    // Rank 0 writes; the others only send. A failure on rank 0 is remembered, not thrown, so that rank 0
    // keeps taking part in the gathers, and all ranks learn of it at the end.
    std::unique_ptr<H5File> file;
    std::vector<float> buffer;
    int64_t failure = kSaveOk;
    std::string reason;
    if (root) {
        try {
            file = std::make_unique<H5File>(path, Staged{"checkpoint"});
            buffer.resize(buffer_floats);
        } catch (const std::exception&) {
            failure = kCreateFailed;
        }
    }
    comm.allreduce_max_i64(&failure, 1);
    if (failure != kSaveOk) fail_save(path, failure, reason);
    auto on_root = [&](auto&& write) {
        if (!root || failure != kSaveOk) return;
        try {
            write();
        } catch (const std::exception&) {
            failure = kWriteFailed;
            reason = describe_write_failure(file->written_path(), 0);  // the file system is still full
        }
    };

    on_root([&] {
        file->attr(kVersionAttr, kFormatVersion);
        for (const auto& [name, value] : state.info_attributes) file->attr(name, value);
        file->create_group(kShapeGroup);
        for (const auto& [name, value] : state.shape_attributes) file->attr(name, value, kShapeGroup);
        file->create_group(kCounterGroup);
        for (const auto& [name, value] : state.counters)
            file->write(std::string(kCounterGroup) + "/" + name, {}, &value);
    });
    int64_t s = 0;
    for (const StateTensor& t : state.tensors) {
        if (!is_sharded(t)) {
            on_root([&] { file->write(t.path, file_dims(t), t.data); });
            continue;
        }
        on_root([&] { file->create_f32(t.path, file_dims(t)); });
        const int64_t item = item_floats(t), per_round = items_per_round[s];
        int64_t max_items = 0;
        for (int r = 0; r < P; ++r) max_items = std::max(max_items, count_of(r, s));
        // Round j0: every rank sends its local items [j0, j0 + per_round); rank 0 receives them in rank
        // order and writes each rank's block at that rank's global rows.
        for (int64_t j0 = 0; j0 < max_items; j0 += per_round) {
            const int64_t n = std::clamp<int64_t>(t.num_items - j0, 0, per_round);
            comm.gatherv_f32(n > 0 ? t.data + j0 * item : t.data, n * item, buffer.data(), 0);
            on_root([&] {
                int64_t offset = 0;
                for (int r = 0; r < P; ++r) {
                    const int64_t n_r = std::clamp<int64_t>(count_of(r, s) - j0, 0, per_round);
                    if (n_r == 0) continue;
                    file->write_rows(t.path, static_cast<hsize_t>(first_of(r, s) + j0),
                                     static_cast<hsize_t>(n_r), buffer.data() + offset);
                    offset += n_r * item;
                }
            });
        }
        ++s;
    }
    on_root([&] { file->close(); });
    if (root && failure == kSaveOk) {
        // Atomic rename (staged_output.h): a reader, or a crash, sees the old checkpoint or the new one.
        try {
            file->commit();
        } catch (const Error&) {
            failure = kRenameFailed;
        }
    }
    // A partial checkpoint cannot be resumed from, unlike a partial log: it goes.
    if (root && failure != kSaveOk) file->discard();
    comm.allreduce_max_i64(&failure, 1);
    if (failure != kSaveOk) fail_save(path, failure, reason);
}

void load_checkpoint(Comm& comm, const std::string& path, TrainingState& state) {
    check_local_tensors(state);
    check_same_on_every_rank(comm, state_fingerprint(state, false), "training states to load_checkpoint");
    // Every rank checks the file before any rank reads into state: a rejected checkpoint changes nothing.
    std::unique_ptr<H5Reader> file;
    agree_on_load_error(comm, path, check_checkpoint(path, state, file));
    agree_on_load_error(comm, path, read_checkpoint(path, *file, state));
    check_loaded_values(comm, path, state);
}

}  // namespace expar
