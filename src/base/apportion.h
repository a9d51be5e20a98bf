// Largest-remainder apportionment: integer counts in proportion to weights that sum exactly to n.
// One rule for the simulator's routing (expert counts from weights) and the token-exchange benchmark's
// traffic matrices (rows per destination from a weight file).
#pragma once

#include <cstdint>

namespace expar {

// out[j] = n·w[j] / Σw rounded by largest remainder (ties to the lower j), so Σ out = n. All 0 if Σw = 0
// or n <= 0. Weights must be finite and >= 0; their sum may overflow (weights near 1e308).
// order: [count] scratch. The overload without it allocates.
void apportion(int64_t* out, const double* weights, int64_t count, int64_t n, int64_t* order);
void apportion(int64_t* out, const double* weights, int64_t count, int64_t n);

}  // namespace expar
