#include "text_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "check.h"

namespace expar {

std::string read_text_file(const std::string& path, const std::string& what) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
        EXPAR_FAIL("cannot read " << what << " '" << path << "': " << std::strerror(errno));
    // An ifstream opens a directory without complaint and then reads nothing.
    EXPAR_REQUIRE(!S_ISDIR(st.st_mode), "cannot read " << what << " '" << path << "': it is a directory");
    std::ifstream in(path, std::ios::binary);
    if (!in) EXPAR_FAIL("cannot read " << what << " '" << path << "': " << std::strerror(errno));
    std::ostringstream text;
    text << in.rdbuf();
    EXPAR_REQUIRE(!in.bad(), "cannot read " << what << " '" << path << "': the read failed");
    return text.str();
}

}  // namespace expar
