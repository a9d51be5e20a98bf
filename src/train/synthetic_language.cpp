#include "synthetic_language.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "check.h"
#include "fingerprint.h"
#include "rng.h"

namespace expar {

namespace {

double uniform53(uint64_t bits) {
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

// First index whose running sum exceeds u; the last when rounding leaves u above every sum.
int64_t sample_cdf(const double* cdf, int64_t n, double u) {
    const int64_t i = std::upper_bound(cdf, cdf + n, u) - cdf;
    return std::min(i, n - 1);
}

double xlogx(double p) {
    return p > 0 ? p * std::log(p) : 0.0;
}

// ln(sum exp(a_i)) ignoring -inf terms; -inf when all are.
double log_sum_exp(const std::vector<double>& a) {
    const double m = *std::max_element(a.begin(), a.end());
    if (m == -std::numeric_limits<double>::infinity()) return m;
    double s = 0;
    for (double x : a) s += std::exp(x - m);
    return m + std::log(s);
}

}  // namespace

SyntheticLanguage::SyntheticLanguage(const SyntheticLanguageConfig& c) : config_(c) {
    const int64_t V = c.vocab_size, K = c.num_sources, b = c.branching;
    EXPAR_REQUIRE(V >= 2 && V <= (int64_t(1) << 24), "--synthetic-vocab must be in [2, 2^24], got " << V);
    EXPAR_REQUIRE(K >= 1 && V % K == 0,
                  "--synthetic-sources " << K << " must be positive and divide --synthetic-vocab " << V);
    region_size_ = V / K;
    EXPAR_REQUIRE(b >= 1 && b <= region_size_,
                  "--synthetic-branching must be in [1, V/K = " << region_size_ << "], got " << b);
    EXPAR_REQUIRE(c.leak >= 0 && c.leak <= 1, "--synthetic-leak must be in [0, 1], got " << c.leak);
    EXPAR_REQUIRE(c.sharpness >= 0 && std::isfinite(c.sharpness),
                  "--synthetic-sharpness must be finite and >= 0, got " << c.sharpness);

    // Successor tables: b distinct tokens of region z (partial Fisher-Yates), log-normal weights.
    successor_.resize(K * V * b);
    successor_prob_.resize(K * V * b);
    successor_cdf_.resize(K * V * b);
    std::vector<int32_t> region(region_size_);
    for (int64_t z = 0; z < K; ++z)
        for (int64_t i = 0; i < V; ++i) {
            const int64_t row = z * V + i;
            const uint64_t stream = kStreamSyntheticTables;
            std::iota(region.begin(), region.end(), static_cast<int32_t>(z * region_size_));
            for (int64_t j = 0; j < b; ++j) {
                const uint64_t pick = rng_bits(c.seed, stream, 2 * (row * b + j));
                std::swap(region[j], region[j + pick % (region_size_ - j)]);
            }
            double sum = 0;
            for (int64_t j = 0; j < b; ++j) {
                successor_[row * b + j] = region[j];
                const double w = std::exp(c.sharpness * rng_normal(c.seed, stream, 2 * (row * b + j) + 1));
                successor_prob_[row * b + j] = w;
                sum += w;
            }
            double running = 0;
            for (int64_t j = 0; j < b; ++j) {
                successor_prob_[row * b + j] /= sum;
                running += successor_prob_[row * b + j];
                successor_cdf_[row * b + j] = running;
            }
        }

    // Stationary distributions by power iteration from uniform. With leak > 0 the chain contracts by
    // (1 - leak) per step; otherwise it may be periodic, and the Cesaro mean of the iterates converges.
    stationary_.assign(K * V, 0.0);
    stationary_cdf_.resize(K * V);
    std::vector<double> mu(V), next(V), mean(V);
    for (int64_t z = 0; z < K; ++z) {
        std::fill(mu.begin(), mu.end(), 1.0 / V);
        std::fill(mean.begin(), mean.end(), 0.0);
        const int64_t max_iterations = 5000;
        int64_t iterations = 0;
        bool converged = false;
        while (iterations < max_iterations && !converged) {
            std::fill(next.begin(), next.end(), c.leak / V);
            for (int64_t i = 0; i < V; ++i)
                for (int64_t j = 0; j < b; ++j)
                    next[successor_[(z * V + i) * b + j]] +=
                        (1 - c.leak) * mu[i] * successor_prob_[(z * V + i) * b + j];
            double change = 0, total = 0;
            for (int64_t i = 0; i < V; ++i) total += next[i];
            for (int64_t i = 0; i < V; ++i) {
                next[i] /= total;  // keeps rounding from drifting the mass
                change += std::fabs(next[i] - mu[i]);
                mean[i] += next[i];
            }
            mu.swap(next);
            ++iterations;
            converged = change < 1e-14;
        }
        double running = 0;
        for (int64_t i = 0; i < V; ++i) {
            const double p = converged ? mu[i] : mean[i] / iterations;
            stationary_[z * V + i] = p;
            running += p;
            stationary_cdf_[z * V + i] = running;
        }
    }

    // Exact entropies. Row z,i: the b successors carry leak/V + (1-leak) q, the other V-b tokens leak/V.
    const double floor_p = c.leak / V;
    double conditional = 0;
    for (int64_t z = 0; z < K; ++z) {
        double h_z = 0;
        for (int64_t i = 0; i < V; ++i) {
            double h_row = -static_cast<double>(V - b) * xlogx(floor_p);
            for (int64_t j = 0; j < b; ++j)
                h_row -= xlogx(floor_p + (1 - c.leak) * successor_prob_[(z * V + i) * b + j]);
            h_z += stationary_[z * V + i] * h_row;
        }
        conditional += h_z / K;
    }
    // H(Z | X_0) = H(Z, X_0) - H(X_0) with p(z, x) = mu_z(x) / K.
    double h_joint = 0, h_first = 0;
    for (int64_t x = 0; x < V; ++x) {
        double p_x = 0;
        for (int64_t z = 0; z < K; ++z) {
            const double p = stationary_[z * V + x] / K;
            h_joint -= xlogx(p);
            p_x += p;
        }
        h_first -= xlogx(p_x);
    }
    entropy_.conditional = conditional;
    entropy_.source = std::max(0.0, h_joint - h_first);
}

double SyntheticLanguage::transition(int64_t z, int64_t from, int64_t to) const {
    const int64_t V = config_.vocab_size, b = config_.branching;
    double p = config_.leak / V;
    for (int64_t j = 0; j < b; ++j)
        if (successor_[(z * V + from) * b + j] == to)
            p += (1 - config_.leak) * successor_prob_[(z * V + from) * b + j];
    return p;
}

int64_t SyntheticLanguage::sample(int32_t* out, int64_t length, uint64_t key) const {
    const int64_t V = config_.vocab_size, K = config_.num_sources, b = config_.branching;
    const uint64_t seed = rng_mix(config_.seed) ^ key;
    const uint64_t s = kStreamSyntheticSample;
    const int64_t z = static_cast<int64_t>(rng_bits(seed, s, 0) % static_cast<uint64_t>(K));
    if (length <= 0) return z;
    out[0] = static_cast<int32_t>(sample_cdf(&stationary_cdf_[z * V], V, uniform53(rng_bits(seed, s, 1))));
    for (int64_t t = 1; t < length; ++t) {
        const double u = uniform53(rng_bits(seed, s, 2 * t));
        if (u < config_.leak) {
            out[t] = static_cast<int32_t>(rng_bits(seed, s, 2 * t + 1) % static_cast<uint64_t>(V));
        } else {
            const int64_t row = (z * V + out[t - 1]) * b;
            // Reuses u: given u >= leak, (u - leak) / (1 - leak) is uniform on [0, 1).
            const double v = (u - config_.leak) / (1 - config_.leak);
            out[t] = successor_[row + sample_cdf(&successor_cdf_[row], b, v)];
        }
    }
    return z;
}

double SyntheticLanguage::nll_given_source(const int32_t* tokens, int64_t length, int64_t source) const {
    double nll = 0;
    for (int64_t t = 1; t < length; ++t) nll -= std::log(transition(source, tokens[t - 1], tokens[t]));
    return nll;
}

double SyntheticLanguage::nll_bayes(const int32_t* tokens, int64_t length) const {
    const int64_t K = config_.num_sources;
    if (length <= 1) return 0;
    // ln p(x_1..x_{n-1} | x_0) = lse_z[ln mu_z(x_0) + ln p(x_1.. | x_0, z)] - lse_z[ln mu_z(x_0)]
    // (the uniform prior 1/K cancels).
    std::vector<double> joint(K), first(K);
    for (int64_t z = 0; z < K; ++z) {
        first[z] = std::log(stationary(z, tokens[0]));
        joint[z] = first[z] - nll_given_source(tokens, length, z);
    }
    return log_sum_exp(first) - log_sum_exp(joint);
}

uint64_t SyntheticLanguage::fingerprint() const {
    const SyntheticLanguageConfig& c = config_;
    uint64_t h = fnv1a64(std::string("expar synthetic language 1"));
    for (int64_t v : {c.vocab_size, c.num_sources, c.branching}) h = fnv1a64(&v, sizeof v, h);
    for (double v : {c.leak, c.sharpness}) h = fnv1a64(&v, sizeof v, h);
    return fnv1a64(&c.seed, sizeof c.seed, h);
}

}  // namespace expar
