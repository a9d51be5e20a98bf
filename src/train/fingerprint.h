// 64-bit FNV-1a fingerprints that identify a vocabulary (the words in id order) or a generated
// language's config, so a resumed run can tell it is reading the data it was trained on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace expar {

constexpr uint64_t kFnvOffset = 0xCBF29CE484222325ull;

// Continues hash h over `size` bytes: fnv1a64(b, n2, fnv1a64(a, n1)) hashes a then b.
inline uint64_t fnv1a64(const void* data, size_t size, uint64_t h = kFnvOffset) {
    const unsigned char* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) h = (h ^ bytes[i]) * 0x100000001B3ull;
    return h;
}

inline uint64_t fnv1a64(const std::string& s, uint64_t h = kFnvOffset) {
    return fnv1a64(s.data(), s.size(), h);
}

}  // namespace expar
