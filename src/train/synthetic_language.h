// A generated language with known entropy for `--data synthetic`: a mixture of K Markov sources over
// V tokens, each favouring its own region of the vocabulary. Owns the transition tables, their exact
// entropies, the Bayes-optimal predictor's loss, and deterministic sampling of sequences by key.
#pragma once

#include <cstdint>
#include <vector>

namespace expar {

// Each sequence picks source z with probability 1/K and starts from z's stationary distribution, so
// every position is stationary. Source z, from token i, moves with probability 1 - leak to one of
// `branching` successors of i inside region z (tokens [z·V/K, (z+1)·V/K)), weighted by
// exp(sharpness · normal), and with probability `leak` to a uniform token of all V.
struct SyntheticLanguageConfig {
    int64_t vocab_size = 512;  // V
    int64_t num_sources = 4;   // K (V % K == 0)
    int64_t branching = 8;     // successors per token inside the region (<= V/K)
    double leak = 0.1;         // probability of a uniform jump anywhere [0, 1]
    double sharpness = 1.0;    // spread of successor log-weights [nats]; 0 = uniform successors
    uint64_t seed = 1;         // seed of the transition tables (not of the sampled sequences)
};

// Entropies of the generating process [nats/token], all exact (no sampling).
struct SyntheticEntropy {
    double conditional = 0;  // L = sum_z (1/K) sum_i mu_z(i) H(P_z(i, .)): the rate if z were known
    double source = 0;       // H(Z | X_0): what the first token leaves unknown about the source
    // Best expected mean loss of a next-token predictor over targets x_1 .. x_S of a sequence of S + 1
    // tokens lies in [conditional, conditional + source / S] (chain rule; see docs/data.md). The
    // trainer's test bound is the upper end: a model that cannot beat it has not learnt the language.
    double optimal_lower(int64_t S) const { return S > 0 ? conditional : 0; }
    double optimal_upper(int64_t S) const { return conditional + source / static_cast<double>(S); }
};

class SyntheticLanguage {
   public:
    // Throws expar::Error naming the offending --synthetic-* option when the config is invalid.
    explicit SyntheticLanguage(const SyntheticLanguageConfig& config);

    const SyntheticLanguageConfig& config() const { return config_; }
    const SyntheticEntropy& entropy() const { return entropy_; }
    int64_t vocab_size() const { return config_.vocab_size; }

    // out[0 .. length) = one sequence, a pure function of (table seed, key). Returns its source z.
    int64_t sample(int32_t* out, int64_t length, uint64_t key) const;

    // Exact probabilities of the process.
    double stationary(int64_t z, int64_t token) const { return stationary_[z * config_.vocab_size + token]; }
    double transition(int64_t z, int64_t from, int64_t to) const;

    // -sum_{t=1}^{length-1} ln p(x_t | x_<t) under the Bayes mixture over sources (the best predictor
    // that does not know z) and, when `source` >= 0, under the known source instead.
    double nll_bayes(const int32_t* tokens, int64_t length) const;
    double nll_given_source(const int32_t* tokens, int64_t length, int64_t source) const;

    // 64-bit hash of the config: the "vocabulary" fingerprint of this language.
    uint64_t fingerprint() const;

   private:
    SyntheticLanguageConfig config_;
    int64_t region_size_ = 0;
    std::vector<int32_t> successor_;      // (K, V, branching) token ids
    std::vector<double> successor_prob_;  // (K, V, branching) q_z(i, j), rows sum to 1
    std::vector<double> successor_cdf_;   // (K, V, branching) running sums of q
    std::vector<double> stationary_;      // (K, V) mu_z
    std::vector<double> stationary_cdf_;  // (K, V)
    SyntheticEntropy entropy_;
};

}  // namespace expar
