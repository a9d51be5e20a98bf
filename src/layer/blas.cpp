#include "blas.h"

#include <cblas.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "check.h"

namespace expar {

void gemm(bool trans_a,
          bool trans_b,
          int64_t m,
          int64_t n,
          int64_t k,
          float alpha,
          const float* a,
          const float* b,
          float beta,
          float* c) {
    if (m == 0 || n == 0) return;
    const int64_t lda = trans_a ? m : k;
    const int64_t ldb = trans_b ? k : n;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c, static_cast<blasint>(n));
}

void blas_select_kernels_or_reexec(char** argv) {
    if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // set by the user, or by our own re-exec
    const char* keep = std::getenv("EXPAR_BLAS_KEEP_CORETYPE");
    if (keep != nullptr && std::strcmp(keep, "1") == 0) return;
    const char* wanted = std::getenv("EXPAR_OPENBLAS_CORETYPE");  // explicit choice, also used by tests
    if (wanted == nullptr) {
        __builtin_cpu_init();
        const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
        if (!avx512) return;
        wanted = "SkylakeX";
    }
    setenv("OPENBLAS_CORETYPE", wanted, 1);
    // The variable is now set, so the new image returns at the first line. If exec fails we run on.
    execv("/proc/self/exe", argv);
}

void blas_set_num_threads(int num_threads) {
    openblas_set_num_threads(num_threads);
}

std::string blas_description() {
    std::string text = "OpenBLAS ";
    text += openblas_get_config();
    text += " core=";
    text += openblas_get_corename();
    return text;
}

}  // namespace expar
