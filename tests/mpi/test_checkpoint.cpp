// Checkpoints on self-checking data: every float encodes (tensor, global item, index), so a rank can tell
// exactly which items it got. Same-rank round trips, re-sharding over sub-communicators of every size,
// atomic replacement under failures, and the one-line errors of bad checkpoints.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "check.h"
#include "checkpoint.h"
#include "comm.h"
#include "h5_file.h"
#include "h5_reader.h"
#include "mpi_world.h"

using namespace expar;

namespace {

using expar::test::world_rank;
using expar::test::world_size;

constexpr int64_t kNumExperts = 8;

struct Range {
    int64_t first = 0, count = 0;
};

// As even as possible: the first N mod P ranks hold one item more.
Range even_range(int64_t N, int P, int r) {
    const int64_t base = N / P, extra = N % P;
    return {r * base + std::min<int64_t>(r, extra), base + (r < extra ? 1 : 0)};
}

// Later ranks hold more; at P = 4 rank 0 holds none (bounds 0, 0, 2, 4, 8).
Range skewed_range(int64_t N, int P, int r) {
    auto bound = [&](int64_t q) { return N * q * (q + 1) / (int64_t(P) * (P + 1)); };
    return {bound(r), bound(r + 1) - bound(r)};
}

using Partition = Range (*)(int64_t, int, int);

// The value of float `index` of global item `item` of tensor `tensor`, in checkpoint `generation`:
// distinct and exact in float32 (below 2^24), signed and fractional.
float encoded(int generation, int tensor, int64_t item, int64_t index) {
    const float magnitude =
        static_cast<float>(generation * 100000 + tensor * 10000 + item * 100 + index) + 0.25f;
    return item % 2 ? -magnitude : magnitude;
}

struct TensorSpec {
    const char* path;
    std::vector<int64_t> item_shape;
    bool sharded;
};

const std::vector<TensorSpec>& tensor_specs() {
    static const std::vector<TensorSpec> specs = {
        {"/params/embed", {4, 6}, false},  {"/params/moe1.w1", {3, 5}, true},
        {"/adam_m/moe1.w1", {3, 5}, true}, {"/params/moe1.b1", {5}, true},
        {"/router_bias", {}, false},  // a scalar
    };
    return specs;
}

std::vector<std::pair<std::string, int64_t>> expected_counters(int generation) {
    return {{"step", 1000 + generation},
            {"adam_step", 999 + generation},
            {"data_seed", static_cast<int64_t>(0xDEADBEEFCAFEF00Dull)},  // negative as int64
            {"data_position.next_step", std::numeric_limits<int64_t>::max() - generation}};
}

// A training state of this rank: storage plus the TrainingState that points into it. filled: the
// encoded values of `generation`; else NaN everywhere and zero counters, to be loaded into.
struct TestState {
    std::vector<std::vector<float>> storage;
    TrainingState state;
};

TestState make_state(int P, int rank, Partition partition, bool filled, int generation = 1) {
    TestState ts;
    const auto& specs = tensor_specs();
    ts.storage.resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
        StateTensor t;
        t.path = specs[i].path;
        t.item_shape = specs[i].item_shape;
        int64_t item_size = 1;
        for (int64_t d : t.item_shape) item_size *= d;
        if (specs[i].sharded) {
            const Range range = partition(kNumExperts, P, rank);
            t.num_items_global = kNumExperts;
            t.first_item = range.first;
            t.num_items = range.count;
        }
        std::vector<float>& data = ts.storage[i];
        data.assign(t.num_items * item_size, std::numeric_limits<float>::quiet_NaN());
        if (filled)
            for (int64_t j = 0; j < t.num_items; ++j)
                for (int64_t x = 0; x < item_size; ++x)
                    data[j * item_size + x] = encoded(generation, static_cast<int>(i), t.first_item + j, x);
        t.data = data.data();
        ts.state.tensors.push_back(t);
    }
    ts.state.counters = expected_counters(generation);
    if (!filled)
        for (auto& counter : ts.state.counters) counter.second = 0;
    ts.state.shape_attributes = {{"d_model", "6"}, {"experts", "8"}, {"vocab_fingerprint", "123456789"}};
    ts.state.info_attributes = {{"git_revision", "test"}, {"num_ranks", std::to_string(P)}};
    return ts;
}

// Number of floats and counters that are not bitwise what generation `generation` encodes.
int64_t count_wrong(const TestState& ts, int generation) {
    int64_t wrong = 0;
    for (size_t i = 0; i < ts.state.tensors.size(); ++i) {
        const StateTensor& t = ts.state.tensors[i];
        const int64_t item_size =
            static_cast<int64_t>(ts.storage[i].size()) / std::max<int64_t>(1, t.num_items);
        for (int64_t j = 0; j < t.num_items; ++j)
            for (int64_t x = 0; x < item_size; ++x) {
                const float want = encoded(generation, static_cast<int>(i), t.first_item + j, x);
                wrong += std::memcmp(&ts.storage[i][j * item_size + x], &want, sizeof(float)) != 0;
            }
    }
    const auto want = expected_counters(generation);
    for (size_t c = 0; c < want.size(); ++c) wrong += ts.state.counters[c] != want[c];
    return wrong;
}

// The all-ranks message an expar::Error carries, or "" if f does not throw; an internal error fails the test.
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        EXPECT_TRUE(e.all_ranks()) << e.what();
        return e.what();
    }
    return "";
}

bool exists(const std::string& path) {
    return std::filesystem::exists(path);
}

// A fresh directory shared by all ranks, removed after the test.
class CheckpointTest : public ::testing::Test {
   protected:
    void SetUp() override {
        char name[512] = {0};
        if (world_rank() == 0) {
            std::string pattern =
                (std::filesystem::temp_directory_path() / "expar_checkpoint_XXXXXX").string();
            ASSERT_LT(pattern.size(), sizeof name);
            std::strcpy(name, pattern.c_str());
            ASSERT_NE(mkdtemp(name), nullptr);
        }
        MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD);
        dir_ = name;
    }
    void TearDown() override {
        MPI_Barrier(MPI_COMM_WORLD);
        if (world_rank() == 0) std::filesystem::remove_all(dir_);
    }
    std::string file(const std::string& name) const { return dir_ + "/" + name; }
    std::string dir_;
};

// ------------------------------------------------------------------------------------------------
// Round trips and re-sharding

TEST_F(CheckpointTest, SameRankCountIsBitwiseAndLeavesNoTemporary) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), rank = comm.rank();
    const std::string path = file("ckpt.h5");
    TestState saved = make_state(P, rank, even_range, true);
    save_checkpoint(comm, path, saved.state);
    EXPECT_TRUE(exists(path));
    EXPECT_FALSE(exists(path + ".partial"));
    TestState loaded = make_state(P, rank, even_range, false);
    load_checkpoint(comm, path, loaded.state);
    EXPECT_EQ(count_wrong(loaded, 1), 0);
}

// The file itself, read independently of load_checkpoint: full global shapes, items in global order.
TEST_F(CheckpointTest, FileHoldsGlobalTensorsInItemOrder) {
    MpiComm comm(MPI_COMM_WORLD);
    const std::string path = file("layout.h5");
    TestState saved = make_state(comm.size(), comm.rank(), skewed_range, true);
    save_checkpoint(comm, path, saved.state);
    if (comm.rank() != 0) return;
    H5Reader reader(path);
    EXPECT_EQ(reader.int64_attr("checkpoint_format_version"), 1);
    EXPECT_EQ(reader.string_attr("git_revision"), "test");
    EXPECT_EQ(reader.string_attr("num_ranks"), std::to_string(comm.size()));
    EXPECT_EQ(reader.string_attr("d_model", "/shape"), "6");
    EXPECT_EQ(reader.string_attr("vocab_fingerprint", "/shape"), "123456789");
    const auto& specs = tensor_specs();
    for (size_t i = 0; i < specs.size(); ++i) {
        SCOPED_TRACE(specs[i].path);
        std::vector<hsize_t> want_dims;
        if (specs[i].sharded) want_dims.push_back(kNumExperts);
        for (int64_t d : specs[i].item_shape) want_dims.push_back(d);
        ASSERT_EQ(reader.dims(specs[i].path), want_dims);
        int64_t item_size = 1, num_items = specs[i].sharded ? kNumExperts : 1;
        for (int64_t d : specs[i].item_shape) item_size *= d;
        std::vector<float> all(num_items * item_size);
        reader.read(specs[i].path, all.data());
        int64_t wrong = 0;
        for (int64_t e = 0; e < num_items; ++e)
            for (int64_t x = 0; x < item_size; ++x)
                wrong += all[e * item_size + x] != encoded(1, static_cast<int>(i), e, x);
        EXPECT_EQ(wrong, 0);
    }
    for (const auto& [name, value] : expected_counters(1)) {
        int64_t read = 0;
        reader.read("/counters/" + name, &read);
        EXPECT_EQ(read, value) << name;
    }
}

TEST_F(CheckpointTest, UnevenPartitionsRoundTrip) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), rank = comm.rank();
    const std::string path = file("skewed.h5");
    TestState saved = make_state(P, rank, skewed_range, true);
    save_checkpoint(comm, path, saved.state);
    TestState even = make_state(P, rank, even_range, false);
    load_checkpoint(comm, path, even.state);
    EXPECT_EQ(count_wrong(even, 1), 0);
    TestState skewed = make_state(P, rank, skewed_range, false);
    load_checkpoint(comm, path, skewed.state);
    EXPECT_EQ(count_wrong(skewed, 1), 0);
}

// Saved by all W ranks, loaded on sub-communicators of every size 1 .. W (W = 4 gives groups {0,1,2},{3}
// at size 3), the experts re-partitioned over each group.
TEST_F(CheckpointTest, LoadsAtEveryOtherRankCount) {
    const int W = world_size(), rank = world_rank();
    const std::string path = file("world.h5");
    {
        MpiComm world(MPI_COMM_WORLD);
        TestState saved = make_state(W, rank, even_range, true);
        save_checkpoint(world, path, saved.state);
    }
    for (int P = 1; P <= W; ++P) {
        MPI_Comm sub;
        MPI_Comm_split(MPI_COMM_WORLD, rank / P, rank, &sub);
        {
            MpiComm comm(sub);
            SCOPED_TRACE("groups of " + std::to_string(P) + ", this one of " + std::to_string(comm.size()));
            for (Partition partition : {even_range, skewed_range}) {
                TestState loaded = make_state(comm.size(), comm.rank(), partition, false);
                load_checkpoint(comm, path, loaded.state);
                EXPECT_EQ(count_wrong(loaded, 1), 0);
            }
        }
        MPI_Comm_free(&sub);
    }
}

// Saved by groups of every size 1 .. W (one file per group), each file loaded by all W ranks.
TEST_F(CheckpointTest, SavesAtEveryOtherRankCount) {
    const int W = world_size(), rank = world_rank();
    MpiComm world(MPI_COMM_WORLD);
    for (int P = 1; P <= W; ++P) {
        SCOPED_TRACE("saved by groups of " + std::to_string(P));
        const int group = rank / P;
        MPI_Comm sub;
        MPI_Comm_split(MPI_COMM_WORLD, group, rank, &sub);
        {
            MpiComm comm(sub);
            TestState saved = make_state(comm.size(), comm.rank(), skewed_range, true, group + 1);
            save_checkpoint(comm, file("group" + std::to_string(group) + ".h5"), saved.state);
        }
        MPI_Comm_free(&sub);
        for (int g = 0; g * P < W; ++g) {
            TestState loaded = make_state(W, rank, even_range, false);
            load_checkpoint(world, file("group" + std::to_string(g) + ".h5"), loaded.state);
            EXPECT_EQ(count_wrong(loaded, g + 1), 0) << "file of group " << g;
        }
    }
}

// Items not in rank order are a caller bug: every rank throws an internal error before any file exists.
TEST_F(CheckpointTest, ItemsOutOfRankOrderAreAnInternalError) {
    MpiComm comm(MPI_COMM_WORLD);
    const std::string path = file("disorder.h5");
    TestState saved = make_state(comm.size(), comm.rank(), even_range, true);
    if (comm.rank() == 0) {  // rank 0 starts at item 1 instead of 0 (its storage has room: one item less)
        saved.state.tensors[1].first_item += 1;
        saved.state.tensors[1].num_items -= 1;
    }
    bool internal = false;
    try {
        save_checkpoint(comm, path, saved.state);
    } catch (const Error& e) {
        internal = !e.all_ranks() &&
                   std::string(e.what()).find("not split over ranks in rank order") != std::string::npos;
    }
    EXPECT_TRUE(internal);
    comm.barrier();
    EXPECT_FALSE(exists(path));
    EXPECT_FALSE(exists(path + ".partial"));
}

// ------------------------------------------------------------------------------------------------
// Atomic replacement

// A save that crashed half-way leaves FILE.partial behind: the previous checkpoint still loads, and the next
// save replaces both.
TEST_F(CheckpointTest, CrashedSaveLeavesPreviousCheckpoint) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), rank = comm.rank();
    const std::string path = file("ckpt.h5");
    TestState first = make_state(P, rank, even_range, true, 1);
    save_checkpoint(comm, path, first.state);
    if (rank == 0) {
        std::ofstream partial(path + ".partial", std::ios::binary);
        partial << "\x89HDF\r\n\x1a\n half of a checkpoint";
    }
    comm.barrier();
    TestState loaded = make_state(P, rank, even_range, false);
    load_checkpoint(comm, path, loaded.state);
    EXPECT_EQ(count_wrong(loaded, 1), 0);

    TestState second = make_state(P, rank, even_range, true, 2);
    save_checkpoint(comm, path, second.state);
    EXPECT_FALSE(exists(path + ".partial"));
    TestState reloaded = make_state(P, rank, even_range, false);
    load_checkpoint(comm, path, reloaded.state);
    EXPECT_EQ(count_wrong(reloaded, 2), 0);
}

// The temporary cannot be created (here: a directory is in its way; permissions do not stop root):
// every rank fails with the same line, and the previous checkpoint is intact.
TEST_F(CheckpointTest, FailedSaveKeepsPreviousCheckpoint) {
    MpiComm comm(MPI_COMM_WORLD);
    const int P = comm.size(), rank = comm.rank();
    const std::string path = file("ckpt.h5");
    TestState first = make_state(P, rank, even_range, true, 1);
    save_checkpoint(comm, path, first.state);
    if (rank == 0) {
        std::filesystem::create_directory(path + ".partial");
        std::ofstream(path + ".partial/inside") << "x";
    }
    comm.barrier();
    TestState second = make_state(P, rank, even_range, true, 2);
    EXPECT_EQ(error_of([&] { save_checkpoint(comm, path, second.state); }),
              "cannot write checkpoint '" + path + "': cannot create '" + path +
                  ".partial' (check that its directory exists and is writable)");
    TestState loaded = make_state(P, rank, even_range, false);
    load_checkpoint(comm, path, loaded.state);
    EXPECT_EQ(count_wrong(loaded, 1), 0);
}

TEST_F(CheckpointTest, SaveIntoMissingDirectoryFailsOnEveryRank) {
    MpiComm comm(MPI_COMM_WORLD);
    const std::string path = file("no/such/dir/ckpt.h5");
    TestState saved = make_state(comm.size(), comm.rank(), even_range, true);
    EXPECT_EQ(error_of([&] { save_checkpoint(comm, path, saved.state); }),
              "cannot write checkpoint '" + path + "': cannot create '" + path +
                  ".partial' (check that its directory exists and is writable)");
}

// The rename fails (a non-empty directory is in the way): every rank fails, the temporary is removed.
TEST_F(CheckpointTest, FailedRenameRemovesTemporary) {
    MpiComm comm(MPI_COMM_WORLD);
    const std::string path = file("ckpt.h5");
    if (comm.rank() == 0) {
        std::filesystem::create_directory(path);
        std::ofstream(path + "/inside") << "x";
    }
    comm.barrier();
    TestState saved = make_state(comm.size(), comm.rank(), even_range, true);
    EXPECT_EQ(error_of([&] { save_checkpoint(comm, path, saved.state); }),
              "cannot write checkpoint '" + path + "': cannot rename '" + path +
                  ".partial' onto it; the previous checkpoint is untouched");
    EXPECT_FALSE(exists(path + ".partial"));
    EXPECT_TRUE(std::filesystem::is_directory(path));
}

// ------------------------------------------------------------------------------------------------
// Bad checkpoints: one line, the same on every rank, and the state left untouched

class BadCheckpointTest : public CheckpointTest {
   protected:
    void SetUp() override {
        CheckpointTest::SetUp();
        path_ = file("good.h5");
        MpiComm comm(MPI_COMM_WORLD);
        TestState saved = make_state(comm.size(), comm.rank(), even_range, true);
        save_checkpoint(comm, path_, saved.state);
    }
    // The error of loading path into a fresh state changed by `change`; checks the state stayed NaN.
    template <class Change>
    std::string load_error(const std::string& path, Change&& change) {
        MpiComm comm(MPI_COMM_WORLD);
        TestState loaded = make_state(comm.size(), comm.rank(), even_range, false);
        change(loaded.state);
        const std::string error = error_of([&] { load_checkpoint(comm, path, loaded.state); });
        for (const auto& data : loaded.storage)
            for (float v : data) EXPECT_TRUE(std::isnan(v));
        return error;
    }
    std::string path_;
};

void no_change(TrainingState&) {}

TEST_F(BadCheckpointTest, MissingFile) {
    const std::string path = file("missing.h5");
    EXPECT_EQ(load_error(path, no_change), "checkpoint '" + path + "' does not exist");
}

TEST_F(BadCheckpointTest, NotAnHdf5File) {
    const std::string path = file("garbage.h5");
    if (world_rank() == 0) std::ofstream(path) << "not HDF5\n";
    MPI_Barrier(MPI_COMM_WORLD);
    EXPECT_EQ(load_error(path, no_change), "checkpoint '" + path + "' is not a readable HDF5 file");
}

TEST_F(BadCheckpointTest, Hdf5FileThatIsNoCheckpoint) {
    const std::string path = file("log.h5");
    if (world_rank() == 0) {
        H5File log(path);
        log.attr("num_ranks", int64_t{2});
    }
    MPI_Barrier(MPI_COMM_WORLD);
    EXPECT_EQ(load_error(path, no_change),
              "'" + path + "' is not an expar checkpoint (it has no checkpoint_format_version attribute)");
}

TEST_F(BadCheckpointTest, AnotherFormatVersion) {
    const std::string path = file("future.h5");
    if (world_rank() == 0) {
        H5File future(path);
        future.attr("checkpoint_format_version", int64_t{2});
    }
    MPI_Barrier(MPI_COMM_WORLD);
    EXPECT_EQ(load_error(path, no_change),
              "checkpoint '" + path + "' has format version 2; this expar reads version 1");
}

TEST_F(BadCheckpointTest, ShapeAttributeDiffers) {
    EXPECT_EQ(load_error(path_, [](TrainingState& s) { s.shape_attributes[0].second = "7"; }),
              "checkpoint '" + path_ + "' is from another model: d_model 7 here, 6 in the file");
    EXPECT_EQ(
        load_error(path_, [](TrainingState& s) { s.shape_attributes[2].second = "42"; }),
        "checkpoint '" + path_ + "' is from another model: vocab_fingerprint 42 here, 123456789 in the file");
}

TEST_F(BadCheckpointTest, ShapeAttributeOnOneSideOnly) {
    EXPECT_EQ(load_error(path_,
                         [](TrainingState& s) {
                             s.shape_attributes.push_back({"moe_every", "2"});
                         }),
              "checkpoint '" + path_ + "' is from another model: moe_every 2 here, none in the file");
    EXPECT_EQ(
        load_error(path_, [](TrainingState& s) { s.shape_attributes.erase(s.shape_attributes.begin()); }),
        "checkpoint '" + path_ + "' is from another model: d_model none here, 6 in the file");
}

TEST_F(BadCheckpointTest, MissingTensor) {
    std::vector<float> extra(2);
    EXPECT_EQ(load_error(path_,
                         [&](TrainingState& s) {
                             StateTensor t;
                             t.path = "/adam_v/moe1.w1";
                             t.item_shape = {2};
                             t.data = extra.data();
                             s.tensors.push_back(t);
                         }),
              "checkpoint '" + path_ + "' has no tensor '/adam_v/moe1.w1'");
}

TEST_F(BadCheckpointTest, TensorOfAnotherShape) {
    std::vector<float> room(16 * 3 * 5);
    EXPECT_EQ(load_error(path_,
                         [](TrainingState& s) {
                             s.tensors[1].item_shape = {3, 4};
                         }),
              "checkpoint '" + path_ +
                  "' is from another model: tensor '/params/moe1.w1' is [8, 3, 4] here, "
                  "[8, 3, 5] in the file");
    EXPECT_EQ(load_error(path_,
                         [&](TrainingState& s) {
                             s.tensors[3].num_items_global = 16;
                             s.tensors[3].data = room.data();
                         }),
              "checkpoint '" + path_ +
                  "' is from another model: tensor '/params/moe1.b1' is [16, 5] here, "
                  "[8, 5] in the file");
    EXPECT_EQ(load_error(path_, [](TrainingState& s) { s.tensors[4].item_shape = {1}; }),
              "checkpoint '" + path_ +
                  "' is from another model: tensor '/router_bias' is [1] here, [] in the file");
}

TEST_F(BadCheckpointTest, MissingCounter) {
    EXPECT_EQ(load_error(path_,
                         [](TrainingState& s) {
                             s.counters.push_back({"ema_step", 0});
                         }),
              "checkpoint '" + path_ + "' has no counter 'ema_step'");
}

// Values are checked after the read: each rank scans its own items, and every rank reports the first bad
// value in file order (here the last expert of moe1.w1, held by the last rank, before /adam_m's first).
TEST_F(BadCheckpointTest, NonFiniteValueFailsOnEveryRank) {
    MpiComm comm(MPI_COMM_WORLD);
    const std::string path = file("inf.h5");
    TestState saved = make_state(comm.size(), comm.rank(), even_range, true);
    for (size_t i : {size_t{1}, size_t{2}}) {
        const StateTensor& t = saved.state.tensors[i];
        const int64_t item = i == 1 ? kNumExperts - 1 : 0;  // global item to damage
        if (item >= t.first_item && item < t.first_item + t.num_items)
            saved.storage[i][(item - t.first_item) * 15 + 4] =
                i == 1 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
    }
    save_checkpoint(comm, path, saved.state);
    TestState loaded = make_state(comm.size(), comm.rank(), even_range, false);
    EXPECT_EQ(error_of([&] { load_checkpoint(comm, path, loaded.state); }),
              "checkpoint '" + path +
                  "': tensor '/params/moe1.w1' holds a non-finite value (NaN or Inf) at [7, 0, 4]; the "
                  "checkpoint is damaged or was saved after training diverged");
}

TEST_F(BadCheckpointTest, NegativeCounter) {
    MpiComm comm(MPI_COMM_WORLD);
    const std::string path = file("negative.h5");
    TestState saved = make_state(comm.size(), comm.rank(), even_range, true);
    saved.state.counters[0].second = -5;  // step
    save_checkpoint(comm, path, saved.state);
    TestState loaded = make_state(comm.size(), comm.rank(), even_range, false);
    loaded.state.non_negative_counters = {"step"};
    EXPECT_EQ(error_of([&] { load_checkpoint(comm, path, loaded.state); }),
              "checkpoint '" + path + "': counter '/counters/step' is -5; it must be >= 0");
    // data_seed is negative as an int64 and not required to be >= 0: it loads.
    TestState good = make_state(comm.size(), comm.rank(), even_range, false);
    good.state.non_negative_counters = {"step", "adam_step"};
    EXPECT_EQ(error_of([&] { load_checkpoint(comm, path_, good.state); }), "");
}

// Ranks that see different files (here: rank 1 is given another path) fail together, naming the first
// failing rank (the path in the message is each rank's own).
TEST_F(BadCheckpointTest, RanksThatDisagreeFailTogether) {
    if (world_size() < 2) GTEST_SKIP() << "needs 2 ranks";
    const std::string path = world_rank() == 1 ? file("missing.h5") : path_;
    EXPECT_EQ(load_error(path, no_change),
              "checkpoint '" + path +
                  "' does not read the same on every rank (rank 1 fails; check that "
                  "every rank sees the same file)");
}

}  // namespace
