// Transparent huge pages for the simulator's largest arrays (docs/simulator.md "Scale"): a 4,096-rank step
// first touches about 300 MiB, and at one page fault per 4 KiB the faults took about a tenth of the step.
// Owns nothing: asks the kernel (madvise) to back a vector's reserved storage with 2 MiB pages; where
// THP is off or unsupported it changes nothing, and the contents never depend on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace expar {

// Reserves room for n elements; storage of 4 MiB or more is advised for huge pages before it is touched.
template <typename T>
void reserve_huge(std::vector<T>& v, size_t n) {
    v.reserve(n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t kPage = 4096;
    const size_t bytes = v.capacity() * sizeof(T);
    if (bytes < (size_t{4} << 20)) return;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(v.data()) + kPage - 1) & ~(kPage - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(v.data()) + bytes) & ~(kPage - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only
#endif
}

// v = n copies of value, its storage advised as reserve_huge() does (v's old storage is dropped first).
template <typename T>
void assign_huge(std::vector<T>& v, size_t n, const T& value) {
    if (v.capacity() < n) std::vector<T>().swap(v);
    reserve_huge(v, n);
    v.assign(n, value);
}

}  // namespace expar
