// Counting of heap allocations for the "no allocation in the steady-state step" tests. The global
// operator new/delete replacements live in allocation_counter.cpp, linked once into each test binary
// that uses this (tests/CMakeLists.txt: expar_test_allocation_counter); they count and call malloc.
#pragma once

#include <cstdint>

namespace expar::test {

// Every operator new of the process (all threads, every form) since construction. MPI and BLAS
// allocate with malloc, which this does not see.
class AllocationCounter {
   public:
    AllocationCounter();
    int64_t count() const;

   private:
    int64_t start_;
};

}  // namespace expar::test
