#include "h5_file.h"

#include "check.h"

namespace expar {

namespace {
hid_t link_creation_with_parents() {
    hid_t lcpl = HDF5_CHECK(H5Pcreate(H5P_LINK_CREATE));
    HDF5_CHECK(H5Pset_create_intermediate_group(lcpl, 1));
    return lcpl;
}
}  // namespace

H5File::H5File(const std::string& path) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our own one-line errors instead of HDF5's stack dump
    file_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file_ < 0)
        EXPAR_FAIL("cannot create HDF5 file '" << path
                                               << "' (check that its directory exists and is writable)");
}

H5File::~H5File() {
    if (file_ >= 0) H5Fclose(file_);
}

void H5File::flush() {
    HDF5_CHECK(H5Fflush(file_, H5F_SCOPE_GLOBAL));
}

void H5File::close() {
    hid_t file = file_;
    file_ = -1;
    HDF5_CHECK(H5Fflush(file, H5F_SCOPE_GLOBAL));  // H5Fclose alone would defer if an object were still open
    HDF5_CHECK(H5Fclose(file));
}

void H5File::create_group(const std::string& path) {
    hid_t lcpl = link_creation_with_parents();
    hid_t group = HDF5_CHECK(H5Gcreate2(file_, path.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT));
    H5Gclose(group);
    H5Pclose(lcpl);
}

void H5File::attr(const std::string& name, const std::string& value, const std::string& object_path) {
    hid_t type = HDF5_CHECK(H5Tcopy(H5T_C_S1));
    HDF5_CHECK(H5Tset_size(type, value.empty() ? 1 : value.size()));
    HDF5_CHECK(H5Tset_strpad(type, H5T_STR_NULLTERM));
    hid_t space = HDF5_CHECK(H5Screate(H5S_SCALAR));
    hid_t attribute = HDF5_CHECK(H5Acreate_by_name(file_, object_path.c_str(), name.c_str(), type, space,
                                                   H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    HDF5_CHECK(H5Awrite(attribute, type, value.c_str()));
    H5Aclose(attribute);
    H5Sclose(space);
    H5Tclose(type);
}

void H5File::attr(const std::string& name, double value, const std::string& object_path) {
    hid_t space = HDF5_CHECK(H5Screate(H5S_SCALAR));
    hid_t attribute =
        HDF5_CHECK(H5Acreate_by_name(file_, object_path.c_str(), name.c_str(), H5T_NATIVE_DOUBLE, space,
                                     H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    HDF5_CHECK(H5Awrite(attribute, H5T_NATIVE_DOUBLE, &value));
    H5Aclose(attribute);
    H5Sclose(space);
}

void H5File::attr(const std::string& name, int64_t value, const std::string& object_path) {
    hid_t space = HDF5_CHECK(H5Screate(H5S_SCALAR));
    hid_t attribute = HDF5_CHECK(H5Acreate_by_name(file_, object_path.c_str(), name.c_str(), H5T_NATIVE_INT64,
                                                   space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    HDF5_CHECK(H5Awrite(attribute, H5T_NATIVE_INT64, &value));
    H5Aclose(attribute);
    H5Sclose(space);
}

void H5File::write_typed(const std::string& path,
                         const std::vector<hsize_t>& dims,
                         hid_t type,
                         const void* data) {
    hid_t space = dims.empty()
                      ? HDF5_CHECK(H5Screate(H5S_SCALAR))
                      : HDF5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    hid_t lcpl = link_creation_with_parents();
    hid_t dataset = HDF5_CHECK(H5Dcreate2(file_, path.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    HDF5_CHECK(H5Dwrite(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
    H5Dclose(dataset);
    H5Pclose(lcpl);
    H5Sclose(space);
}

void H5File::write(const std::string& path, const std::vector<hsize_t>& dims, const float* data) {
    write_typed(path, dims, H5T_NATIVE_FLOAT, data);
}
void H5File::write(const std::string& path, const std::vector<hsize_t>& dims, const double* data) {
    write_typed(path, dims, H5T_NATIVE_DOUBLE, data);
}
void H5File::write(const std::string& path, const std::vector<hsize_t>& dims, const int64_t* data) {
    write_typed(path, dims, H5T_NATIVE_INT64, data);
}
void H5File::write(const std::string& path, const std::vector<hsize_t>& dims, const int32_t* data) {
    write_typed(path, dims, H5T_NATIVE_INT32, data);
}

void H5File::create_f32(const std::string& path, const std::vector<hsize_t>& dims) {
    EXPAR_ASSERT(!dims.empty());
    hid_t space = HDF5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    hid_t lcpl = link_creation_with_parents();
    hid_t dataset =
        HDF5_CHECK(H5Dcreate2(file_, path.c_str(), H5T_NATIVE_FLOAT, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    H5Dclose(dataset);
    H5Pclose(lcpl);
    H5Sclose(space);
}

void H5File::write_rows(const std::string& path, hsize_t first_row, hsize_t num_rows, const float* rows) {
    hid_t dataset = HDF5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    hid_t file_space = HDF5_CHECK(H5Dget_space(dataset));
    std::vector<hsize_t> start(HDF5_CHECK(H5Sget_simple_extent_ndims(file_space)), 0);
    std::vector<hsize_t> count(start.size());
    H5Sget_simple_extent_dims(file_space, count.data(), nullptr);
    start[0] = first_row;
    count[0] = num_rows;
    HDF5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    hid_t mem_space = HDF5_CHECK(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
    HDF5_CHECK(H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, H5P_DEFAULT, rows));
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Dclose(dataset);
}

H5Table::H5Table(H5File& file,
                 const std::string& path,
                 std::vector<hsize_t> row_dims,
                 hid_t type,
                 const std::string& units)
    : type_(type), row_dims_(std::move(row_dims)) {
    std::vector<hsize_t> dims{0}, max_dims{H5S_UNLIMITED}, chunk{64};
    for (hsize_t n : row_dims_) {
        dims.push_back(n);
        max_dims.push_back(n);
        chunk.push_back(n);
    }
    hid_t space = HDF5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), max_dims.data()));
    hid_t dcpl = HDF5_CHECK(H5Pcreate(H5P_DATASET_CREATE));
    HDF5_CHECK(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()));
    hid_t lcpl = link_creation_with_parents();
    dataset_ = HDF5_CHECK(H5Dcreate2(file.id(), path.c_str(), type_, space, lcpl, dcpl, H5P_DEFAULT));
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (!units.empty()) file.attr("units", units, path);
}

H5Table::~H5Table() {
    if (dataset_ >= 0) H5Dclose(dataset_);
}

void H5Table::append(const void* row) {
    std::vector<hsize_t> dims{num_rows_ + 1}, start{num_rows_}, count{1};
    for (hsize_t n : row_dims_) {
        dims.push_back(n);
        start.push_back(0);
        count.push_back(n);
    }
    HDF5_CHECK(H5Dset_extent(dataset_, dims.data()));
    hid_t file_space = HDF5_CHECK(H5Dget_space(dataset_));
    HDF5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    hid_t mem_space = HDF5_CHECK(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
    HDF5_CHECK(H5Dwrite(dataset_, type_, mem_space, file_space, H5P_DEFAULT, row));
    H5Sclose(mem_space);
    H5Sclose(file_space);
    ++num_rows_;
}

}  // namespace expar
