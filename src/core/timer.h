// Wall-clock time for the phase timers: seconds on a steady clock (never goes backwards), read as a
// difference of two calls.
#pragma once

#include <chrono>

namespace expar {

inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace expar
