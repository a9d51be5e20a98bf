#include "output_paths.h"

#include <filesystem>
#include <fstream>
#include <system_error>

#include "check.h"
#include "staged_output.h"

namespace expar {
namespace {

// Opening fails for a directory too.
bool can_create_or_append(const std::string& path) {
    std::error_code error;
    const bool existed = std::filesystem::exists(path, error);
    if (!std::ofstream(path, std::ios::app)) return false;
    if (!existed) std::filesystem::remove(path, error);
    return true;
}

std::string normal_form(const std::string& path) {
    std::error_code error;
    const std::filesystem::path full = std::filesystem::weakly_canonical(path, error);
    return error ? path : full.string();
}

}  // namespace

void require_output_paths(Comm& comm, const std::vector<OutputPath>& outputs) {
    for (size_t i = 0; i < outputs.size(); ++i)
        for (size_t j = i + 1; j < outputs.size(); ++j)
            EXPAR_REQUIRE(outputs[i].path.empty() || outputs[j].path.empty() ||
                              normal_form(outputs[i].path) != normal_form(outputs[j].path),
                          outputs[i].option << " and " << outputs[j].option << " name the same file '"
                                            << outputs[j].path << "': one would overwrite the other");
    // Rank 0 probes (ranks probing one file at once would race); every rank learns the first failure.
    int64_t failed = 0;  // 1 + index of the first path rank 0 cannot write
    if (comm.rank() == 0)
        for (size_t i = 0; i < outputs.size() && failed == 0; ++i) {
            const OutputPath& o = outputs[i];
            if (o.path.empty()) continue;
            std::error_code error;  // a staged file's own path must not be a directory either
            const bool ok = !std::filesystem::is_directory(o.path, error) &&
                            can_create_or_append(o.staged ? partial_path(o.path) : o.path);
            if (!ok) failed = static_cast<int64_t>(i) + 1;
        }
    comm.allreduce_max_i64(&failed, 1);
    if (failed > 0) {
        const OutputPath& o = outputs[failed - 1];
        EXPAR_FAIL("cannot write " << o.option << " file '" << o.path
                                   << "' (its directory must exist and be writable, and it must not be a "
                                      "directory)");
    }
}

}  // namespace expar
