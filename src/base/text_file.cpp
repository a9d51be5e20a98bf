#include "text_file.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "check.h"

namespace expar {

std::string read_text_file(const std::string& path, const std::string& what) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
        EXPAR_FAIL("cannot read " << what << " '" << path << "': " << std::strerror(errno));
    // An ifstream opens a directory without complaint and then reads nothing.
    EXPAR_REQUIRE(!S_ISDIR(st.st_mode), "cannot read " << what << " '" << path << "': it is a directory");
    // Checked before opening: opening a FIFO blocks until a writer comes.
    EXPAR_REQUIRE(S_ISREG(st.st_mode), "cannot read " << what << " '" << path
                                                      << "': it is not a regular file (a FIFO, socket or "
                                                         "device); give a file");
    EXPAR_REQUIRE(st.st_size <= kMaxTextFileBytes,
                  "cannot read " << what << " '" << path << "': it holds " << st.st_size
                                 << " bytes, more than the " << (kMaxTextFileBytes >> 20)
                                 << " MiB a text input may have (is it the right file?)");
    std::ifstream in(path, std::ios::binary);
    if (!in) EXPAR_FAIL("cannot read " << what << " '" << path << "': " << std::strerror(errno));
    // Read in chunks up to one byte past the limit, in case the file grew since stat().
    std::string text;
    char chunk[1 << 16];
    while (in && static_cast<long long>(text.size()) <= kMaxTextFileBytes) {
        in.read(chunk, sizeof chunk);
        text.append(chunk, static_cast<size_t>(in.gcount()));
    }
    EXPAR_REQUIRE(!in.bad(), "cannot read " << what << " '" << path << "': the read failed");
    EXPAR_REQUIRE(static_cast<long long>(text.size()) <= kMaxTextFileBytes,
                  "cannot read " << what << " '" << path << "': it grew past the "
                                 << (kMaxTextFileBytes >> 20) << " MiB a text input may have");
    // A NUL would end the value it is in wherever a message passes through a C string (what()), and no
    // text input has one: refused here, with its line, rather than cut later.
    const size_t nul = text.find('\0');
    EXPAR_REQUIRE(nul == std::string::npos,
                  "cannot read " << what << " '" << path << "': line "
                                 << 1 + std::count(text.begin(), text.begin() + nul, '\n')
                                 << " holds a NUL byte; a text input has none (is it the right file?)");
    return text;
}

}  // namespace expar
