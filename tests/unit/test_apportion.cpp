// Largest-remainder apportionment against hand-computed cases and its invariants.
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "apportion.h"

namespace expar {
namespace {

std::vector<int64_t> shares(const std::vector<double>& weights, int64_t n) {
    std::vector<int64_t> out(weights.size());
    apportion(out.data(), weights.data(), static_cast<int64_t>(weights.size()), n);
    return out;
}

TEST(Apportion, LargestRemaindersTiesToTheLowerIndex) {
    EXPECT_EQ(shares({1, 1, 1}, 10), (std::vector<int64_t>{4, 3, 3}));       // 3.33 each: the tie to j = 0
    EXPECT_EQ(shares({1, 2, 3, 4}, 7), (std::vector<int64_t>{1, 1, 2, 3}));  // 0.7 1.4 2.1 2.8
    EXPECT_EQ(shares({0, 5, 0}, 9), (std::vector<int64_t>{0, 9, 0}));
    EXPECT_EQ(shares({0, 0}, 9), (std::vector<int64_t>{0, 0}));  // nothing to share by
    EXPECT_EQ(shares({1, 1}, 0), (std::vector<int64_t>{0, 0}));
}

// Weights whose sum overflows double: the proportions still hold. The token-exchange benchmark's
// --matrix-file once turned 1e308 weights into negative row counts and a heap corruption.
TEST(Apportion, WeightsWhoseSumOverflows) {
    EXPECT_EQ(shares({1e308, 1e308}, 8192), (std::vector<int64_t>{4096, 4096}));
    EXPECT_EQ(shares({1e308, 1e308, 0, 1}, 10), (std::vector<int64_t>{5, 5, 0, 0}));
    EXPECT_EQ(shares({1.5e308, 0.5e308, 1e308}, 6), (std::vector<int64_t>{3, 1, 2}));
}

TEST(Apportion, SumsToNAndStaysWithinOneOfTheExactShare) {
    std::vector<double> w(37);
    for (size_t j = 0; j < w.size(); ++j) w[j] = static_cast<double>((j * 7919) % 101) / 7.0;
    const double total = std::accumulate(w.begin(), w.end(), 0.0);
    for (int64_t n : {1, 36, 37, 1000, 123457}) {
        const std::vector<int64_t> out = shares(w, n);
        EXPECT_EQ(std::accumulate(out.begin(), out.end(), int64_t{0}), n);
        for (size_t j = 0; j < w.size(); ++j) EXPECT_LT(std::abs(out[j] - n * w[j] / total), 1.0);
    }
}

}  // namespace
}  // namespace expar
