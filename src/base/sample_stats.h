// Summaries of repeated measurements (step times, exchange times): the median that the benchmarks and
// the calibration report, so that one slow repetition does not move the figure.
#pragma once

#include <algorithm>
#include <vector>

namespace expar {

// Median of the values (the mean of the middle two for an even count); 0 for none.
inline double median(std::vector<double> values) {
    if (values.empty()) return 0;
    std::sort(values.begin(), values.end());
    const size_t n = values.size();
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace expar
