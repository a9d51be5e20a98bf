#include "output_paths.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
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

// One file a run names: an input, an output, or a staged output's temporary file.
struct PathUse {
    std::string label;  // "--resume 'ckpt.h5'", for the message
    std::string path;
    bool output = false;
    int owner = -1;                     // outputs: the index of its OutputPath (its partial file shares it)
    const char* may_replace = nullptr;  // outputs, not temporary: the input option it may name
    const char* option = nullptr;       // inputs: the option
};

// How two names of one file differ, for the message: a user who typed two different names needs to be
// told why they are one file.
enum How { kSamePath, kSymbolicLink, kHardLink, kNumHows };

struct Identity {
    bool exists = false;
    dev_t device = 0;
    ino_t inode = 0;
    std::string canonical;  // existing: the real path; else the real path of the directory + the name
    std::string lexical;    // absolute and normalized, links not followed
};

Identity identify(const std::string& path) {
    Identity id;
    std::error_code error;
    const std::filesystem::path absolute = std::filesystem::absolute(path, error);
    id.lexical = error ? path : absolute.lexically_normal().string();
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {  // follows symbolic links: a link is its target
        id.exists = true;
        id.device = st.st_dev;
        id.inode = st.st_ino;
    }
    // weakly_canonical resolves the part that exists (the directory, through its links) and appends the
    // rest: a file not yet there is named by where it will be created. A dangling symbolic link creates
    // its target, so that is where it points (a bounded walk: links may form a loop).
    std::filesystem::path target = path;
    for (int hops = 0; !id.exists && hops < 40 && std::filesystem::is_symlink(target, error); ++hops) {
        const std::filesystem::path next = std::filesystem::read_symlink(target, error);
        if (error) break;
        target = next.is_absolute() ? next : target.parent_path() / next;
    }
    const std::filesystem::path canonical = std::filesystem::weakly_canonical(target, error);
    id.canonical = error ? id.lexical : canonical.string();
    return id;
}

// Whether a and b are one file, and if so how they are named (kNumHows: distinct files).
How same_file(const Identity& a, const Identity& b) {
    if (a.exists != b.exists) return kNumHows;  // one exists and the other does not: two files
    const bool same = a.exists ? a.device == b.device && a.inode == b.inode : a.canonical == b.canonical;
    if (!same) return kNumHows;
    if (a.lexical == b.lexical) return kSamePath;
    return a.canonical == b.canonical ? kSymbolicLink : kHardLink;
}

std::string clash_message(const PathUse& out, const PathUse& other, How how) {
    static const char* const kHow[] = {"", " (through a symbolic link)", " (a hard link)"};
    std::ostringstream message;
    if (other.output)
        message << out.label << " and " << other.label << " are the same file" << kHow[how]
                << ": one would overwrite the other";
    else
        message << out.label << " is the same file as " << other.label << kHow[how]
                << ": it would be overwritten";
    return message.str();
}

std::vector<PathUse> path_uses(const std::vector<InputPath>& inputs, const std::vector<OutputPath>& outputs) {
    std::vector<PathUse> uses;
    for (size_t i = 0; i < outputs.size(); ++i) {
        const OutputPath& o = outputs[i];
        if (o.path.empty()) continue;
        const int owner = static_cast<int>(i);
        uses.push_back({std::string(o.option) + " '" + o.path + "'", o.path, true, owner, o.may_replace});
        // The temporary file is written over too: another output or an input there would be lost.
        if (o.staged)
            uses.push_back({std::string(o.option) + "'s partial file '" + partial_path(o.path) + "'",
                            partial_path(o.path), true, owner});
    }
    for (const InputPath& in : inputs)
        if (!in.path.empty())
            uses.push_back(
                {std::string(in.option) + " '" + in.path + "'", in.path, false, -1, nullptr, in.option});
    return uses;
}

// Whether the pair (a, b) must name two files: a is an output; b is a later output or any input.
bool must_differ(const PathUse& a, const PathUse& b) {
    if (!a.output) return false;
    if (b.output) return a.owner != b.owner;  // a path and its own partial file differ by name anyway
    // A staged output over the input it may replace: read first, then replaced by a rename (its
    // temporary file has no may_replace: nothing may be there).
    return a.may_replace == nullptr || std::string(a.may_replace) != b.option;
}

}  // namespace

void require_distinct_paths(Comm& comm,
                            const std::vector<InputPath>& inputs,
                            const std::vector<OutputPath>& outputs) {
    const std::vector<PathUse> uses = path_uses(inputs, outputs);
    const int64_t n = static_cast<int64_t>(uses.size());
    // Rank 0 decides (it writes the outputs; ranks probing one file at once would race); every rank
    // learns its answer as one number and throws the same message.
    int64_t clash = 0;  // 1 + (a * n + b) * kNumHows + how of the first clash
    if (comm.rank() == 0) {
        std::vector<Identity> ids;
        for (const PathUse& use : uses) ids.push_back(identify(use.path));
        for (int64_t a = 0; a < n && clash == 0; ++a)
            for (int64_t b = 0; b < n && clash == 0; ++b) {
                if (b == a || (uses[b].output && b < a) || !must_differ(uses[a], uses[b])) continue;
                const How how = same_file(ids[a], ids[b]);
                if (how != kNumHows) clash = 1 + (a * n + b) * kNumHows + how;
            }
    }
    comm.allreduce_max_i64(&clash, 1);
    if (clash > 0) {
        const int64_t pair = (clash - 1) / kNumHows;
        EXPAR_FAIL(clash_message(uses[pair / n], uses[pair % n], static_cast<How>((clash - 1) % kNumHows)));
    }

    int64_t failed = 0;  // 1 + index of the first output rank 0 cannot write
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
