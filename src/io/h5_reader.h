// Reading HDF5 files through the C API: what exists, dataset shapes, attributes, whole datasets and
// blocks of rows (each rank reads only its own). Opens read-only; several processes may read one file.
// Writing: h5_file.h.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace expar {

class H5Reader {
   public:
    // Throws expar::Error naming path if it is not a readable HDF5 file.
    explicit H5Reader(const std::string& path);
    ~H5Reader();
    H5Reader(const H5Reader&) = delete;
    H5Reader& operator=(const H5Reader&) = delete;

    // True if a dataset or group exists at path (absolute, e.g. "/params/w"); false for missing parents.
    bool has(const std::string& path) const;
    // Shape of the dataset at path; empty for a scalar.
    std::vector<hsize_t> dims(const std::string& path) const;
    // The element type of the dataset at path as numpy names it: "float32", "int8", "uint64", ...;
    // "string", "compound", ... (the HDF5 class) for the others. read() converts between numeric types
    // silently (an int8 dataset reads as floats), so a reader that needs one type checks it with this.
    std::string type_name(const std::string& path) const;

    // Attributes of the object at object_path (the root group by default).
    bool has_attr(const std::string& name, const std::string& object_path = "/") const;
    std::vector<std::string> attr_names(const std::string& object_path = "/") const;
    // A string attribute, fixed-length or variable-length (as h5py writes them).
    std::string string_attr(const std::string& name, const std::string& object_path = "/") const;
    int64_t int64_attr(const std::string& name, const std::string& object_path = "/") const;

    // The whole dataset, converted to the type of out (which holds every element).
    void read(const std::string& path, float* out) const;
    void read(const std::string& path, int64_t* out) const;
    // Rows [first_row, first_row + num_rows) along the first dimension, each dims()[1:] floats.
    void read_rows(const std::string& path, hsize_t first_row, hsize_t num_rows, float* out) const;

   private:
    void read_typed(const std::string& path, hid_t type, void* out) const;
    hid_t file_ = -1;
};

}  // namespace expar
