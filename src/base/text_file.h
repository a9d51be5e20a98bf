// Reads the small text inputs expar takes (INI configs, topology YAML, all-to-all matrices) whole.
// One wording for every way such a path can fail: missing, a directory, not a regular file, too large,
// unreadable, a failed read.
#pragma once

#include <string>

namespace expar {

// The most bytes a text input may hold. expar's configs, topologies and matrices are a few KiB; a larger
// file is the wrong one (a data file, /dev/zero), and reading it whole would only exhaust memory.
constexpr long long kMaxTextFileBytes = 16LL << 20;  // 16 MiB

// The contents of the file at path. Throws an all-ranks expar::Error
// "cannot read WHAT 'PATH': REASON" (what names the input, e.g. "topology file"). Only a regular file
// (or a link to one) of at most kMaxTextFileBytes and without NUL bytes is read: a FIFO would block the
// read forever and a device (/dev/zero) would never end.
std::string read_text_file(const std::string& path, const std::string& what);

}  // namespace expar
