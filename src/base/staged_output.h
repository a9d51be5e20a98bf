// Output files that only a finished write replaces (docs/hdf5.md, "Output files"): a writer writes
// partial_path(FILE) and renames it onto FILE when its contents are worth keeping, so a run that fails
// half-way never leaves an empty or truncated FILE where the previous result was. Rank 0's business:
// these functions touch the file system and call no collective.
#pragma once

#include <string>

namespace expar {

// Where FILE is written until it is complete: FILE.partial.
std::string partial_path(const std::string& path);

// Before creating partial_path(path): if a run that was killed left one, says so in one line on stderr
// (it is about to be replaced). what: the option that names the file ("--log").
void note_stale_partial(const std::string& path, const std::string& what);

// Makes partial_path(path) the file path: fsync, rename over path (atomic: a reader sees the old file or
// the new one), fsync the directory. Returns "" or why it failed (the partial file is then left as it is).
std::string commit_partial(const std::string& path);

// One line on why writing `path` failed, from errno and the free space of its file system: "no space
// left on the file system holding it (disk or quota full)" and the like; errno_value: errno just after
// the failed call (0 if unknown).
std::string describe_write_failure(const std::string& path, int errno_value);

// A failed run's writer records what it leaves behind; main prints one line per file after the error.
void note_kept_partial(const std::string& path, const std::string& what);
void print_kept_partials();

// The text outputs (calibrate --out): writes text to partial_path(path) and commits it. Throws
// expar::Error (not all ranks: rank 0 writes) naming the file and, where it applies, a full disk.
void write_text_file_staged(const std::string& path, const std::string& what, const std::string& text);

}  // namespace expar
