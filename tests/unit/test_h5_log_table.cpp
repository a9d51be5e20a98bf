// H5LogTable (src/io/h5_log_table.h) on one process: each field's dataset, dtype (from its fill), shape,
// units and attributes, and the rows appended. Per-rank fields are gathered over MPI: the layer log's
// CLI checks (tests/cli/check_log.py at 2 and 4 ranks) cover them.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "h5_log_table.h"
#include "h5_reader.h"

namespace expar {
namespace {

struct Step {
    int64_t step;
    double seconds;
};

std::vector<H5LogField<Step>> fields() {
    return {
        {"/steps/step", {}, "", [](const Step& s, int64_t* v) { *v = s.step; }},
        {"/steps/time_us", {}, "us", [](const Step& s, double* v) { *v = s.seconds * 1e6; }},
        {"/steps/pair",
         {2},
         "tokens",
         [](const Step& s, int64_t* v) { v[0] = s.step, v[1] = 10 * s.step; },
         {{"names", "one,ten"}}},
    };
}

// True if the dataset at path is stored as `type` (a native type).
bool stored_as(const std::string& file_path, const std::string& path, hid_t type) {
    const hid_t file = H5Fopen(file_path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t dataset = H5Dopen2(file, path.c_str(), H5P_DEFAULT);
    const hid_t stored = H5Dget_type(dataset);
    const bool same = H5Tequal(stored, type) > 0;
    H5Tclose(stored);
    H5Dclose(dataset);
    H5Fclose(file);
    return same;
}

TEST(H5LogTable, OneTableCreatesAndAppendsEveryField) {
    const std::string path = testing::TempDir() + "expar_log_table_" + std::to_string(getpid()) + ".h5";
    {
        H5File file(path);
        H5LogTable<Step> table(&file, fields());
        for (int64_t s = 0; s < 3; ++s) table.append(Step{s, 0.5 * static_cast<double>(s)});
        file.close();
    }
    H5Reader in(path);
    EXPECT_EQ(in.dims("/steps/step"), (std::vector<hsize_t>{3}));
    EXPECT_EQ(in.dims("/steps/pair"), (std::vector<hsize_t>{3, 2}));
    EXPECT_TRUE(stored_as(path, "/steps/step", H5T_NATIVE_INT64));
    EXPECT_TRUE(stored_as(path, "/steps/time_us", H5T_NATIVE_DOUBLE));
    EXPECT_FALSE(in.has_attr("units", "/steps/step"));
    EXPECT_EQ(in.string_attr("units", "/steps/time_us"), "us");
    EXPECT_EQ(in.string_attr("units", "/steps/pair"), "tokens");
    EXPECT_EQ(in.string_attr("names", "/steps/pair"), "one,ten");
    std::vector<int64_t> pair(6);
    in.read("/steps/pair", pair.data());
    EXPECT_EQ(pair, (std::vector<int64_t>{0, 0, 1, 10, 2, 20}));
    std::vector<float> time_us(3);
    in.read("/steps/time_us", time_us.data());
    EXPECT_EQ(time_us, (std::vector<float>{0.0f, 5e5f, 1e6f}));
    std::remove(path.c_str());
}

TEST(H5LogTable, WithoutAFileAppendingIsANoOp) {
    H5LogTable<Step> table(nullptr, fields());  // the other ranks' side, with no per-rank fields
    table.append(Step{0, 1.0});
}

}  // namespace
}  // namespace expar
