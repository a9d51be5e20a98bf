#include "staged_output.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "check.h"

namespace expar {

namespace {

bool exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
}

std::string parent_directory(const std::string& path) {
    const size_t slash = path.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}

// fsync, so that after a crash the renamed file has its contents and the directory has the rename.
bool sync_to_disk(const std::string& path, bool directory) {
    const int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
    if (fd < 0) return false;
    const bool synced = ::fsync(fd) == 0;
    ::close(fd);
    return synced;
}

// Files a failed run left under their partial names, in the order noted (rank 0; main prints them).
std::vector<std::string>& kept_partials() {
    static std::vector<std::string> kept;
    return kept;
}

}  // namespace

std::string partial_path(const std::string& path) {
    return path + ".partial";
}

void note_stale_partial(const std::string& path, const std::string& what) {
    const std::string partial = partial_path(path);
    if (exists(partial))
        std::fprintf(stderr,
                     "expar: note: replacing %s file '%s', left by an earlier run that did not finish\n",
                     what.c_str(), partial.c_str());
}

std::string commit_partial(const std::string& path) {
    const std::string partial = partial_path(path);
    if (!sync_to_disk(partial, false)) return "cannot sync '" + partial + "' to disk";
    if (std::rename(partial.c_str(), path.c_str()) != 0)
        return "cannot rename '" + partial + "' onto it (" + std::strerror(errno) + ")";
    sync_to_disk(parent_directory(path), true);  // best effort: not every file system syncs directories
    return "";
}

std::string describe_write_failure(const std::string& path, int errno_value) {
    bool full = errno_value == ENOSPC;
#ifdef EDQUOT
    if (errno_value == EDQUOT) return "the disk quota is exceeded";
#endif
    // HDF5 does not always leave errno as its failed write set it; an exhausted file system says it too.
    struct statvfs fs;
    if (!full && ::statvfs(parent_directory(path).c_str(), &fs) == 0) full = fs.f_bavail == 0;
    if (full) return "no space left on the file system that holds it (disk full)";
    if (errno_value != 0) return std::strerror(errno_value);
    return "a write failed";
}

void note_kept_partial(const std::string& path, const std::string& what) {
    kept_partials().push_back(what + " of the failed run: '" + partial_path(path) + "' ('" + path +
                              "' is unchanged)");
}

void print_kept_partials() {
    for (const std::string& line : kept_partials()) std::fprintf(stderr, "expar: kept %s\n", line.c_str());
    kept_partials().clear();
}

void write_text_file_staged(const std::string& path, const std::string& what, const std::string& text) {
    const std::string partial = partial_path(path);
    note_stale_partial(path, what);
    errno = 0;
    std::ofstream out(partial, std::ios::binary | std::ios::trunc);
    if (!out)
        throw_error(__FILE__, __LINE__,
                    "cannot write " + what + " file '" + path + "': cannot create '" + partial + "'", false);
    out << text;
    out.close();
    if (!out) {
        const int error = errno;
        std::remove(partial.c_str());  // a truncated text file is of no use, and it takes the space
        throw_error(__FILE__, __LINE__,
                    "cannot write " + what + " file '" + path + "': " + describe_write_failure(path, error) +
                        "; '" + path + "' is unchanged",
                    false);
    }
    const std::string failure = commit_partial(path);
    if (!failure.empty())
        throw_error(__FILE__, __LINE__, "cannot write " + what + " file '" + path + "': " + failure, false);
}

}  // namespace expar
