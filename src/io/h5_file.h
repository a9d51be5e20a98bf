// A thin C++ layer over the HDF5 C API for what expar writes: attributes, whole datasets (dumps), datasets
// written a block of rows at a time (checkpoints) and append-only tables that grow one step at a time
// (logs). Written by one rank; throws on failure. Reading: h5_reader.h.
//
// A staged file (every output of a run: logs, dumps, checkpoints) is written as FILE.partial and renamed
// onto FILE by commit(), so that a run that fails never leaves a truncated FILE where the previous result
// was (docs/hdf5.md, "Output files"; src/base/staged_output.h). A failed write names the file and says
// when the disk is full, and leaves nothing open for HDF5 to close again at exit.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace expar {

// H5File's staged mode; what names the file in messages ("--log", "checkpoint").
struct Staged {
    std::string what;
};

class H5File {
   public:
    // Creates (truncates) path. Throws expar::Error with the path if it cannot be created.
    explicit H5File(const std::string& path);
    // Creates (truncates) partial_path(path), saying so in one line if a killed run left one there; path
    // itself is untouched until commit().
    H5File(const std::string& path, Staged staged);
    // Closes the file if open. A staged file not committed stays under its partial name (noted for main's
    // error report) if it was written without error; after a failed write it is removed (it is unreadable
    // and it holds the space of a full disk).
    ~H5File();
    H5File(const H5File&) = delete;
    H5File& operator=(const H5File&) = delete;
    hid_t id() const { return file_; }
    void flush();
    // Closes the file now, checking that HDF5 could write everything out; the destructor then does nothing.
    // A staged file stays under its partial name until commit().
    void close();
    // Staged: closes (if open) and renames the partial file onto path. Throws on failure (the partial file
    // is then left in place).
    void commit();
    // Staged: closes without checking and removes the partial file (a checkpoint that failed).
    void discard();
    // The file being written: partial_path(path) when staged, else path.
    const std::string& written_path() const { return written_path_; }
    // Throws the one-line error of a failed HDF5 call on this file (its name, a full disk) after closing
    // it; call is the failed call's text. For H5Table, whose datasets live in this file.
    [[noreturn]] void fail_write(const char* call, int errno_value);

    void create_group(const std::string& path);

    // Attributes on the root group (or on the object at `object_path`).
    void attr(const std::string& name, const std::string& value, const std::string& object_path = "/");
    void attr(const std::string& name, double value, const std::string& object_path = "/");
    void attr(const std::string& name, int64_t value, const std::string& object_path = "/");

    // Whole datasets, intermediate groups created. dims empty = scalar.
    void write(const std::string& path, const std::vector<hsize_t>& dims, const float* data);
    void write(const std::string& path, const std::vector<hsize_t>& dims, const double* data);
    void write(const std::string& path, const std::vector<hsize_t>& dims, const int64_t* data);
    void write(const std::string& path, const std::vector<hsize_t>& dims, const int32_t* data);

    // A float32 dataset of shape dims (at least 1-d), filled later by write_rows.
    void create_f32(const std::string& path, const std::vector<hsize_t>& dims);
    // Rows [first_row, first_row + num_rows) along the first dimension, each dims[1:] floats.
    void write_rows(const std::string& path, hsize_t first_row, hsize_t num_rows, const float* rows);

   private:
    void write_typed(const std::string& path, const std::vector<hsize_t>& dims, hid_t type, const void* data);
    // Closes without checking, and such that nothing of this file is left open for HDF5's own clean-up
    // at exit (which would close it a second time and crash).
    void abandon() noexcept;
    hid_t file_ = -1;
    std::string path_, written_path_, what_;
    bool staged_ = false;
    bool committed_ = false;
    bool write_failed_ = false;
    hsize_t reserved_ = 0;  // bytes from the start of the file already reserved on disk (h5_file.cpp)
};

// A dataset of shape [steps, row_dims...] that grows by one row per append. Chunked by rows.
class H5Table {
   public:
    H5Table(H5File& file,
            const std::string& path,
            std::vector<hsize_t> row_dims,
            hid_t type,
            const std::string& units);
    ~H5Table();
    H5Table(const H5Table&) = delete;
    H5Table& operator=(const H5Table&) = delete;
    void append(const void* row);

   private:
    H5File& file_;
    hid_t dataset_ = -1;
    hid_t type_;
    std::vector<hsize_t> row_dims_;
    hsize_t num_rows_ = 0;
};

}  // namespace expar
