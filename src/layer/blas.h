// The CPU matrix-product seam: row-major sgemm over OpenBLAS, and choosing OpenBLAS's kernels.
// Debian's OpenBLAS 0.3.21 does not know AMD Zen 4/5 and falls back to AVX2 kernels at half the
// AVX-512 rate; blas_select_kernels_or_reexec() fixes that before the library reads its environment.
#pragma once

#include <cstdint>
#include <string>

namespace expar {

// C[m,n] = alpha * op(A) * op(B) + beta * C, all row-major. op = transpose when trans_* is true.
// A is [m,k] (or [k,m] when trans_a), B is [k,n] (or [n,k] when trans_b).
void gemm(bool trans_a,
          bool trans_b,
          int64_t m,
          int64_t n,
          int64_t k,
          float alpha,
          const float* a,
          const float* b,
          float beta,
          float* c);

// If the CPU has AVX-512 (F, DQ, BW, VL) and OPENBLAS_CORETYPE is unset, sets it to SkylakeX and
// re-executes this program (OpenBLAS picks kernels once, when it is loaded). EXPAR_BLAS_KEEP_CORETYPE=1
// turns this off; EXPAR_OPENBLAS_CORETYPE=NAME forces NAME on any CPU. Call first thing in main, before
// MPI_Init; returns normally when nothing is to do.
void blas_select_kernels_or_reexec(char** argv);

// One BLAS thread per MPI rank: ranks already occupy the cores.
void blas_set_num_threads(int num_threads);

// "OpenBLAS <version> <corename>" for logs.
std::string blas_description();

}  // namespace expar
