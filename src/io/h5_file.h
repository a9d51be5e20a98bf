// A thin C++ layer over the HDF5 C API for what expar writes: attributes, whole datasets (dumps), datasets
// written a block of rows at a time (checkpoints) and append-only tables that grow one step at a time
// (logs). Written by one rank; throws on failure. Reading: h5_reader.h.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace expar {

class H5File {
   public:
    // Creates (truncates) path. Throws expar::Error with the path if it cannot be created.
    explicit H5File(const std::string& path);
    ~H5File();
    H5File(const H5File&) = delete;
    H5File& operator=(const H5File&) = delete;
    hid_t id() const { return file_; }
    void flush();
    // Closes the file now, checking that HDF5 could write everything out; the destructor then does nothing.
    void close();

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
    hid_t file_ = -1;
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
    hid_t dataset_ = -1;
    hid_t type_;
    std::vector<hsize_t> row_dims_;
    hsize_t num_rows_ = 0;
};

}  // namespace expar
