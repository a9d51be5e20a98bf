#include "apportion.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace expar {

void apportion(int64_t* out, const double* weights, int64_t count, int64_t n, int64_t* order) {
    double total = 0, largest = 0;
    for (int64_t j = 0; j < count; ++j) {
        total += weights[j];
        largest = std::max(largest, weights[j]);
    }
    // A sum that overflows: the same proportions from weights / the largest (else unit 1, exact).
    const double unit = std::isfinite(total) ? 1.0 : largest;
    if (unit != 1.0) {
        total = 0;
        for (int64_t j = 0; j < count; ++j) total += weights[j] / unit;
    }
    std::fill(out, out + count, 0);
    if (!(total > 0) || n <= 0) return;
    const double scale = static_cast<double>(n) / total;
    auto exact = [&](int64_t j) { return weights[j] / unit * scale; };
    int64_t given = 0;
    for (int64_t j = 0; j < count; ++j) {
        out[j] = static_cast<int64_t>(std::floor(exact(j)));
        given += out[j];
        order[j] = j;
    }
    const int64_t left = std::min(n - given, count);  // < count unless rounding went astray
    if (left <= 0) return;
    // One more unit to each of the `left` largest remainders, ties to the lower j.
    auto remainder = [&](int64_t j) { return exact(j) - std::floor(exact(j)); };
    std::nth_element(order, order + left - 1, order + count, [&](int64_t a, int64_t b) {
        const double ra = remainder(a), rb = remainder(b);
        return ra != rb ? ra > rb : a < b;
    });
    for (int64_t i = 0; i < left; ++i) ++out[order[i]];
}

void apportion(int64_t* out, const double* weights, int64_t count, int64_t n) {
    std::vector<int64_t> order(count);
    apportion(out, weights, count, n, order.data());
}

}  // namespace expar
