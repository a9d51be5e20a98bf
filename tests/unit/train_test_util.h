// Helpers shared by the language-model unit tests: deterministic random vectors, central finite
// differences, and the normalised max error used to compare float results with double references
// (EXPAR_PRINT_ERRORS=1 prints every comparison's error, to see the margin under each tolerance).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "rng.h"

namespace expar::test {

// scale·N(0,1) + offset, keyed by (seed, i) so every test sees the same numbers.
inline std::vector<double> randn(int64_t n, uint64_t seed, double scale = 1.0, double offset = 0.0) {
    std::vector<double> x(n);
    for (int64_t i = 0; i < n; ++i) x[i] = offset + scale * rng_normal(seed, 99, static_cast<uint64_t>(i));
    return x;
}

inline std::vector<int32_t> random_ids(int64_t n, int64_t V, uint64_t seed) {
    std::vector<int32_t> ids(n);
    for (int64_t i = 0; i < n; ++i)
        ids[i] = static_cast<int32_t>(rng_bits(seed, 98, static_cast<uint64_t>(i)) % V);
    return ids;
}

inline std::vector<float> to_float(const std::vector<double>& x) {
    return std::vector<float>(x.begin(), x.end());
}

inline std::vector<double> to_double(const float* x, int64_t n) {
    return std::vector<double>(x, x + n);
}

inline double max_abs(const std::vector<double>& x) {
    double m = 0.0;
    for (double v : x) m = std::max(m, std::fabs(v));
    return m;
}

// max_i |got_i − want_i| / max(max_i |want_i|, floor): errors relative to the tensor's scale, so a few
// near-zero entries do not dominate. The floor keeps an all-zero reference from dividing by zero.
inline double normalised_error(const float* got, const std::vector<double>& want, double floor = 1e-12) {
    double err = 0.0;
    for (size_t i = 0; i < want.size(); ++i)
        err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
    return err / std::max(max_abs(want), floor);
}

inline void expect_close(const float* got,
                         const std::vector<double>& want,
                         double tolerance,
                         const std::string& what) {
    const double err = normalised_error(got, want);
    if (std::getenv("EXPAR_PRINT_ERRORS") != nullptr) printf("%-24s %.3g\n", what.c_str(), err);
    EXPECT_LE(err, tolerance) << what << ": normalised max error " << err << " (scale " << max_abs(want)
                              << ")";
}

// Central differences of loss() with respect to every x[i] (x is perturbed in place and restored),
// against the analytic gradient. In double with h = 1e-5 the truncation error is O(h²·L''') ~ 1e-10 and
// the rounding error O(eps·|L|/h) ~ 1e-11, so 1e-7 relative to the gradient's scale leaves a wide margin
// while any wrong term (errors of order the gradient itself) fails it.
inline void expect_gradient_matches_fd(std::vector<double>& x,
                                       const std::vector<double>& analytic,
                                       const std::function<double()>& loss,
                                       const std::string& what,
                                       double tolerance = 1e-7) {
    ASSERT_EQ(x.size(), analytic.size()) << what;
    const double h = 1e-5;
    double err = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        x[i] = saved + h;
        const double up = loss();
        x[i] = saved - h;
        const double down = loss();
        x[i] = saved;
        const double fd = (up - down) / (2 * h);
        if (std::fabs(fd - analytic[i]) > err) err = std::fabs(fd - analytic[i]), worst = i;
    }
    const double scale = std::max(max_abs(analytic), 1e-3);
    EXPECT_LE(err / scale, tolerance) << what << ": worst element " << worst << " (analytic "
                                      << analytic[worst] << ", scale " << scale << ")";
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
    double s = 0.0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

}  // namespace expar::test
