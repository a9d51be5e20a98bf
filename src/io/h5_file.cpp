#include "h5_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "check.h"
#include "staged_output.h"

// An HDF5 call that writes to file (an H5File or the H5File of a table): a failure names the file.
#define H5_WRITE_CHECK(file, call)                          \
    ([&]() {                                                \
        errno = 0;                                          \
        auto expar_h5_ = (call);                            \
        if (expar_h5_ < 0) (file).fail_write(#call, errno); \
        return expar_h5_;                                   \
    }())

namespace expar {

namespace {

// Strong close: H5Fclose closes the file's datasets too, so that a file abandoned after a failed write
// (its tables still open) is really closed, not deferred until the tables are.
hid_t create_file(const std::string& path) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our own one-line errors instead of HDF5's stack dump
    hid_t fapl = HDF5_CHECK(H5Pcreate(H5P_FILE_ACCESS));
    HDF5_CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG));
    const hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    return file;
}

// HDF5 1.10 cannot recover from a metadata flush that failed (a full disk): every later flush fails ("slist
// already enabled"), so H5Fclose fails half-way, keeps the identifier of the half-freed file, and HDF5's
// clean-up at exit (in MPI_Finalize) closes it again and crashes. Hence: (1) before a flush, the blocks up
// to the file's end are reserved (reserve_space), so that a full disk shows there, before HDF5 writes;
// (2) a file that failed to write has its POSIX descriptor (sec2, the default driver) pointed at an
// anonymous in-memory file before it is closed: the close's last writes land there (metadata; holes cost
// nothing), the close succeeds and frees everything. The file on disk keeps what was written before.

// The sec2 driver's descriptor of file, or null (another driver).
int* posix_descriptor(hid_t file) {
    const hid_t fapl = H5Fget_access_plist(file);
    if (fapl < 0) return nullptr;
    void* handle = nullptr;
    const bool sec2 = H5Pget_driver(fapl) == H5FD_SEC2 && H5Fget_vfd_handle(file, fapl, &handle) >= 0;
    H5Pclose(fapl);
    return sec2 ? static_cast<int*>(handle) : nullptr;
}

// False (errno set) if the file system cannot hold the file up to its end of allocation (H5Fget_filesize:
// the larger of the file's size and HDF5's end of allocation). Only [reserved, size) is asked for, so a
// flush every step costs one call. Linux fallocate, not posix_fallocate: where the file system cannot
// reserve (EOPNOTSUPP), glibc's emulation would write every block; true then, and the flush finds out.
bool reserve_space(hid_t file, hsize_t& reserved) {
#ifdef __linux__
    hsize_t size = 0;
    if (H5Fget_filesize(file, &size) < 0 || size <= reserved) return true;
    const int* fd = posix_descriptor(file);
    if (fd == nullptr) return true;
    if (::fallocate(*fd, 0, static_cast<off_t>(reserved), static_cast<off_t>(size - reserved)) == 0) {
        reserved = size;
        return true;
    }
    return errno != ENOSPC && errno != EDQUOT;
#else
    (void)file;
    (void)reserved;
    return true;
#endif
}

bool redirect_writes_to_memory(hid_t file) {
    int* handle = posix_descriptor(file);
    if (handle == nullptr) return false;
    const int memory = memfd_create("expar-abandoned-h5", 0);
    if (memory < 0) return false;
    const bool redirected = ::dup2(memory, *handle) >= 0;
    ::close(memory);
    return redirected;
}

hid_t link_creation_with_parents() {
    hid_t lcpl = HDF5_CHECK(H5Pcreate(H5P_LINK_CREATE));
    HDF5_CHECK(H5Pset_create_intermediate_group(lcpl, 1));
    return lcpl;
}
}  // namespace

H5File::H5File(const std::string& path) : path_(path), written_path_(path) {
    file_ = create_file(path);
    if (file_ < 0)
        EXPAR_FAIL("cannot create HDF5 file '" << path
                                               << "' (check that its directory exists and is writable)");
}

H5File::H5File(const std::string& path, Staged staged)
    : path_(path), written_path_(partial_path(path)), what_(std::move(staged.what)), staged_(true) {
    note_stale_partial(path, what_);
    file_ = create_file(written_path_);
    if (file_ < 0)
        EXPAR_FAIL("cannot create HDF5 file '" << written_path_
                                               << "' (check that its directory exists and is writable)");
}

H5File::~H5File() {
    const bool was_open = file_ >= 0;
    abandon();
    if (!staged_ || committed_) return;
    if (write_failed_)
        std::remove(written_path_.c_str());
    else if (was_open)
        note_kept_partial(path_, what_);
}

void H5File::abandon() noexcept {
    if (file_ < 0) return;
    const hid_t file = file_;
    file_ = -1;
    if (write_failed_ || !reserve_space(file, reserved_) || H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) {
        write_failed_ = true;
        redirect_writes_to_memory(file);
    }
    H5Fclose(file);
}

void H5File::fail_write(const char* call, int errno_value) {
    write_failed_ = true;
    abandon();
    const std::string name(call, std::string(call).find('('));  // "H5Fflush", without its arguments
    std::string message = "cannot write ";
    message += what_.empty() ? "HDF5 file" : what_ + " file";
    message += " '" + path_ + "': " + describe_write_failure(written_path_, errno_value) + " (" + name;
    if (staged_)
        message += " on '" + written_path_ + "', which is removed); '" + path_ + "' is unchanged";
    else
        message += ")";
    throw_error(__FILE__, __LINE__, message, false);
}

void H5File::flush() {
    if (!reserve_space(file_, reserved_)) fail_write("fallocate()", errno);
    H5_WRITE_CHECK(*this, H5Fflush(file_, H5F_SCOPE_GLOBAL));
}

void H5File::close() {
    if (file_ < 0) return;
    // Everything written out first: a close that fails cannot be undone (see reserve_space).
    flush();
    const hid_t file = file_;
    file_ = -1;
    if (H5Fclose(file) < 0) {
        write_failed_ = true;
        fail_write("H5Fclose()", errno);
    }
}

void H5File::commit() {
    EXPAR_ASSERT(staged_ && !committed_);
    close();
    const std::string failure = commit_partial(path_);
    if (!failure.empty())
        throw_error(__FILE__, __LINE__, "cannot write " + what_ + " file '" + path_ + "': " + failure, false);
    committed_ = true;
}

void H5File::discard() {
    EXPAR_ASSERT(staged_);
    abandon();
    std::remove(written_path_.c_str());
    committed_ = true;  // nothing left to report
}

void H5File::create_group(const std::string& path) {
    hid_t lcpl = link_creation_with_parents();
    hid_t group = H5_WRITE_CHECK(*this, H5Gcreate2(file_, path.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT));
    H5Gclose(group);
    H5Pclose(lcpl);
}

void H5File::attr(const std::string& name, const std::string& value, const std::string& object_path) {
    hid_t type = H5_WRITE_CHECK(*this, H5Tcopy(H5T_C_S1));
    H5_WRITE_CHECK(*this, H5Tset_size(type, value.empty() ? 1 : value.size()));
    H5_WRITE_CHECK(*this, H5Tset_strpad(type, H5T_STR_NULLTERM));
    hid_t space = H5_WRITE_CHECK(*this, H5Screate(H5S_SCALAR));
    hid_t attribute = H5_WRITE_CHECK(*this, H5Acreate_by_name(file_, object_path.c_str(), name.c_str(), type,
                                                              space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5_WRITE_CHECK(*this, H5Awrite(attribute, type, value.c_str()));
    H5Aclose(attribute);
    H5Sclose(space);
    H5Tclose(type);
}

void H5File::attr(const std::string& name, double value, const std::string& object_path) {
    hid_t space = H5_WRITE_CHECK(*this, H5Screate(H5S_SCALAR));
    hid_t attribute =
        H5_WRITE_CHECK(*this, H5Acreate_by_name(file_, object_path.c_str(), name.c_str(), H5T_NATIVE_DOUBLE,
                                                space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5_WRITE_CHECK(*this, H5Awrite(attribute, H5T_NATIVE_DOUBLE, &value));
    H5Aclose(attribute);
    H5Sclose(space);
}

void H5File::attr(const std::string& name, int64_t value, const std::string& object_path) {
    hid_t space = H5_WRITE_CHECK(*this, H5Screate(H5S_SCALAR));
    hid_t attribute =
        H5_WRITE_CHECK(*this, H5Acreate_by_name(file_, object_path.c_str(), name.c_str(), H5T_NATIVE_INT64,
                                                space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5_WRITE_CHECK(*this, H5Awrite(attribute, H5T_NATIVE_INT64, &value));
    H5Aclose(attribute);
    H5Sclose(space);
}

void H5File::write_typed(const std::string& path,
                         const std::vector<hsize_t>& dims,
                         hid_t type,
                         const void* data) {
    hid_t space =
        dims.empty()
            ? H5_WRITE_CHECK(*this, H5Screate(H5S_SCALAR))
            : H5_WRITE_CHECK(*this, H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    hid_t lcpl = link_creation_with_parents();
    hid_t dataset =
        H5_WRITE_CHECK(*this, H5Dcreate2(file_, path.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    H5_WRITE_CHECK(*this, H5Dwrite(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
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
    hid_t space =
        H5_WRITE_CHECK(*this, H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
    hid_t lcpl = link_creation_with_parents();
    hid_t dataset = H5_WRITE_CHECK(
        *this, H5Dcreate2(file_, path.c_str(), H5T_NATIVE_FLOAT, space, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    H5Dclose(dataset);
    H5Pclose(lcpl);
    H5Sclose(space);
}

void H5File::write_rows(const std::string& path, hsize_t first_row, hsize_t num_rows, const float* rows) {
    hid_t dataset = H5_WRITE_CHECK(*this, H5Dopen2(file_, path.c_str(), H5P_DEFAULT));
    hid_t file_space = H5_WRITE_CHECK(*this, H5Dget_space(dataset));
    std::vector<hsize_t> start(H5_WRITE_CHECK(*this, H5Sget_simple_extent_ndims(file_space)), 0);
    std::vector<hsize_t> count(start.size());
    H5Sget_simple_extent_dims(file_space, count.data(), nullptr);
    start[0] = first_row;
    count[0] = num_rows;
    H5_WRITE_CHECK(
        *this, H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    hid_t mem_space =
        H5_WRITE_CHECK(*this, H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
    H5_WRITE_CHECK(*this, H5Dwrite(dataset, H5T_NATIVE_FLOAT, mem_space, file_space, H5P_DEFAULT, rows));
    H5Sclose(mem_space);
    H5Sclose(file_space);
    H5Dclose(dataset);
}

H5Table::H5Table(H5File& file,
                 const std::string& path,
                 std::vector<hsize_t> row_dims,
                 hid_t type,
                 const std::string& units)
    : file_(file), type_(type), row_dims_(std::move(row_dims)) {
    std::vector<hsize_t> dims{0}, max_dims{H5S_UNLIMITED}, chunk{64};
    for (hsize_t n : row_dims_) {
        dims.push_back(n);
        max_dims.push_back(n);
        chunk.push_back(n);
    }
    hid_t space =
        H5_WRITE_CHECK(file_, H5Screate_simple(static_cast<int>(dims.size()), dims.data(), max_dims.data()));
    hid_t dcpl = H5_WRITE_CHECK(file_, H5Pcreate(H5P_DATASET_CREATE));
    H5_WRITE_CHECK(file_, H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()));
    hid_t lcpl = link_creation_with_parents();
    dataset_ =
        H5_WRITE_CHECK(file_, H5Dcreate2(file.id(), path.c_str(), type_, space, lcpl, dcpl, H5P_DEFAULT));
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(space);
    if (!units.empty()) file.attr("units", units, path);
}

H5Table::~H5Table() {
    // Not after the file was abandoned: its strong close closed the dataset already.
    if (dataset_ >= 0 && H5Iis_valid(dataset_) > 0) H5Dclose(dataset_);
}

void H5Table::append(const void* row) {
    std::vector<hsize_t> dims{num_rows_ + 1}, start{num_rows_}, count{1};
    for (hsize_t n : row_dims_) {
        dims.push_back(n);
        start.push_back(0);
        count.push_back(n);
    }
    H5_WRITE_CHECK(file_, H5Dset_extent(dataset_, dims.data()));
    hid_t file_space = H5_WRITE_CHECK(file_, H5Dget_space(dataset_));
    H5_WRITE_CHECK(
        file_, H5Sselect_hyperslab(file_space, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr));
    hid_t mem_space =
        H5_WRITE_CHECK(file_, H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr));
    H5_WRITE_CHECK(file_, H5Dwrite(dataset_, type_, mem_space, file_space, H5P_DEFAULT, row));
    H5Sclose(mem_space);
    H5Sclose(file_space);
    ++num_rows_;
}

}  // namespace expar
