// Reads the small text inputs expar takes (INI configs, topology YAML, all-to-all matrices) whole.
// One wording for every way such a path can fail: missing, a directory, unreadable, a failed read.
#pragma once

#include <string>

namespace expar {

// The contents of the file at path. Throws an all-ranks expar::Error
// "cannot read WHAT 'PATH': REASON" (what names the input, e.g. "topology file").
std::string read_text_file(const std::string& path, const std::string& what);

}  // namespace expar
