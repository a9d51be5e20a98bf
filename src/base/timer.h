// Wall-clock timing for expar's measurements: seconds on the monotonic clock (std::chrono::steady_clock),
// for intervals only (the origin is arbitrary). One definition instead of a copy per file.
#pragma once

#include <chrono>

namespace expar {

// Seconds since an arbitrary fixed origin; subtract two readings for an interval.
inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace expar
