#include "h5_reader.h"

#include "check.h"

namespace expar {

H5Reader::H5Reader(const std::string& path) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our own one-line errors instead of HDF5's stack dump
    if (H5Fis_hdf5(path.c_str()) > 0) file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_ < 0) EXPAR_FAIL("cannot read HDF5 file '" << path << "'");
}

H5Reader::~H5Reader() {
    if (file_ >= 0) H5Fclose(file_);
}

bool H5Reader::has(const std::string& path) const {
    // H5Lexists fails on a missing intermediate group, so walk the path one link at a time.
    for (size_t end = path.find('/', 1);; end = path.find('/', end + 1)) {
        const std::string prefix = path.substr(0, end);
        if (HDF5_CHECK(H5Lexists(file_, prefix.c_str(), H5P_DEFAULT)) <= 0) return false;
        if (end == std::string::npos) return true;
    }
}

std::vector<hsize_t> H5Reader::dims(const std::string& path) const {
    hid_t dataset = HDF5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    hid_t space = HDF5_CHECK(H5Dget_space(dataset));
    std::vector<hsize_t> dims(HDF5_CHECK(H5Sget_simple_extent_ndims(space)));
    HDF5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr));
    H5Sclose(space);
    H5Dclose(dataset);
    return dims;
}

std::string H5Reader::type_name(const std::string& path) const {
    hid_t dataset = HDF5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    hid_t type = HDF5_CHECK(H5Dget_type(dataset));
    const H5T_class_t type_class = H5Tget_class(type);
    const std::string bits = std::to_string(8 * H5Tget_size(type));
    std::string name;
    switch (type_class) {
        case H5T_INTEGER:
            name = (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + bits;
            break;
        case H5T_FLOAT:
            name = "float" + bits;
            break;
        case H5T_STRING:
            name = "string";
            break;
        case H5T_COMPOUND:
            name = "compound";
            break;
        case H5T_ENUM:
            name = "enum";
            break;
        case H5T_ARRAY:
            name = "array";
            break;
        default:
            name = "HDF5 class " + std::to_string(static_cast<int>(type_class));
    }
    H5Tclose(type);
    H5Dclose(dataset);
    return name;
}

bool H5Reader::has_attr(const std::string& name, const std::string& object_path) const {
    return HDF5_CHECK(H5Aexists_by_name(file_, object_path.c_str(), name.c_str(), H5P_DEFAULT)) > 0;
}

namespace {
herr_t append_attr_name(hid_t, const char* name, const H5A_info_t*, void* names) {
    static_cast<std::vector<std::string>*>(names)->push_back(name);
    return 0;
}
}  // namespace

std::vector<std::string> H5Reader::attr_names(const std::string& object_path) const {
    std::vector<std::string> names;
    HDF5_CHECK(H5Aiterate_by_name(file_, object_path.c_str(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
                                  append_attr_name, &names, H5P_DEFAULT));
    return names;
}

std::string H5Reader::string_attr(const std::string& name, const std::string& object_path) const {
    hid_t attribute =
        HDF5_CHECK(H5Aopen_by_name(file_, object_path.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT));
    hid_t type = HDF5_CHECK(H5Aget_type(attribute));
    if (H5Tget_class(type) != H5T_STRING) {
        H5Tclose(type);
        H5Aclose(attribute);
        throw_error(__FILE__, __LINE__, "HDF5 attribute '" + name + "' is not a string", false);
    }
    std::string value;
    if (HDF5_CHECK(H5Tis_variable_str(type)) > 0) {
        hid_t memory_type = HDF5_CHECK(H5Tcopy(H5T_C_S1));
        HDF5_CHECK(H5Tset_size(memory_type, H5T_VARIABLE));
        char* text = nullptr;
        HDF5_CHECK(H5Aread(attribute, memory_type, &text));
        if (text) value = text;
        H5free_memory(text);
        H5Tclose(memory_type);
    } else {
        std::vector<char> text(H5Tget_size(type) + 1, '\0');
        HDF5_CHECK(H5Aread(attribute, type, text.data()));
        value = text.data();  // up to the first NUL, whatever the padding
    }
    H5Tclose(type);
    H5Aclose(attribute);
    return value;
}

int64_t H5Reader::int64_attr(const std::string& name, const std::string& object_path) const {
    hid_t attribute =
        HDF5_CHECK(H5Aopen_by_name(file_, object_path.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT));
    int64_t value = 0;
    HDF5_CHECK(H5Aread(attribute, H5T_NATIVE_INT64, &value));
    H5Aclose(attribute);
    return value;
}

void H5Reader::read_typed(const std::string& path, hid_t type, void* out) const {
    hid_t dataset = HDF5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    HDF5_CHECK(H5Dread(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out));
    H5Dclose(dataset);
}

void H5Reader::read(const std::string& path, float* out) const {
    read_typed(path, H5T_NATIVE_FLOAT, out);
}

void H5Reader::read(const std::string& path, int64_t* out) const {
    read_typed(path, H5T_NATIVE_INT64, out);
}

void H5Reader::read_rows(const std::string& path, hsize_t first_row, hsize_t num_rows, float* out) const {
    hid_t dataset = HDF5_CHECK(H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    hid_t file_space = HDF5_CHECK(H5Dget_space(dataset));
    std::vector<hsize_t> start(HDF5_CHECK(H5Sget_simple_extent_ndims(file_space)), 0);
    EXPAR_ASSERT(!start.empty());
    std::vector<hsize_t> count(start.size());
    HDF5_CHECK(H5Sget_simple_extent_dims(file_space, count.data(), nullptr));
    EXPAR_ASSERT(first_row + num_rows <= count[0]);
    start[0] = first_row;
    count[0] = num_rows;
    HDF5_CHECK(H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    hid_t mem_space = HDF5_CHECK(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
    HDF5_CHECK(H5Dread(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, H5P_DEFAULT, out));
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Dclose(dataset);
}

}  // namespace expar
