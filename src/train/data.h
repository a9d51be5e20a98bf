// Token data for `expar train`: the Brown corpus (words, with part-of-speech tags), any file as bytes,
// or the synthetic language. Owns the on-disk token format (docs/data.md), the vocabulary and its
// fingerprint, and which tokens each rank reads for a training step or an evaluation batch.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "enum_names.h"
#include "synthetic_language.h"

namespace expar {

// S = sequence length (targets per sequence), B = sequences per rank, P = ranks, G = P·B global batch.

enum class DataKind { synthetic, brown, bytes };  // --data
inline const auto& enum_names(DataKind) {
    static constexpr EnumName<DataKind> names[] = {
        {DataKind::synthetic, "synthetic"}, {DataKind::brown, "brown"}, {DataKind::bytes, "bytes"}};
    return names;
}

enum class Split { train = 0, valid = 1, test = 2 };
inline const auto& enum_names(Split) {
    static constexpr EnumName<Split> names[] = {
        {Split::train, "train"}, {Split::valid, "valid"}, {Split::test, "test"}};
    return names;
}

// What the trainer's options set. Suggested option names in brackets.
struct DataOptions {
    DataKind kind = DataKind::synthetic;     // [--data synthetic|brown|bytes]
    std::string data_dir = "data/brown";     // [--data-dir] brown: the output of scripts/fetch_brown.sh
    std::string text_file;                   // [--text-file] bytes: any file; 80/10/10 train/valid/test
    SyntheticLanguageConfig synthetic;       // [--synthetic-vocab, -sources, -branching, -leak, ...]
    int64_t synthetic_eval_sequences = 256;  // [--synthetic-eval-sequences] per valid/test split
};

struct Vocabulary {
    std::vector<std::string> words;  // id -> word; bytes: the byte itself if printable, else \xHH
    int32_t unk_id = -1;             // id of <unk>; -1 when there is none
    // brown, bytes: FNV-1a 64 of the words in id order, each followed by '\n' (as meta.txt records it);
    // synthetic: SyntheticLanguage::fingerprint().
    uint64_t fingerprint = 0;
    int64_t size() const { return static_cast<int64_t>(words.size()); }
};
uint64_t vocab_fingerprint(const std::vector<std::string>& words);

// Where training stands in the data, for checkpoints: batches are a pure function of (seed, step), so
// the position is the next step; the vocabulary identifies the data it was trained on.
struct DataPosition {
    int64_t next_step = 0;
    uint64_t seed = 0;
    uint64_t vocab_fingerprint = 0;
    int64_t vocab_size = 0;
    static constexpr int kNumInt64 = 4;
    void pack(int64_t* out) const;                  // out[kNumInt64]
    static DataPosition unpack(const int64_t* in);  // in[kNumInt64]
};
// Throws (all ranks) "vocabulary mismatch on resume: ..." when the checkpoint's vocabulary differs.
void data_position_check_resume(const DataPosition& saved, const DataPosition& current);

// The files TokenData reads for these options, each with the option that names it (bytes: --text-file;
// brown: --data-dir's meta, vocabulary, tag names, token and tag files; synthetic: none), so that a command
// can keep its outputs off them.
std::vector<std::pair<const char*, std::string>> data_input_files(const DataOptions& options);

// An evaluation pass over a split: non-overlapping windows w = 0 .. W-1; window w holds the tokens
// [w·S, w·S + S + 1) clipped to the split (synthetic: eval sequence w), so every token but the
// first is a target exactly once. Every rank runs num_steps batches (the MoE layer is collective);
// window w = step·G + rank·B + b, and windows >= W are padding.
struct EvalPlan {
    Split split = Split::valid;
    int64_t num_windows = 0;  // W
    int64_t num_targets = 0;  // tokens scored over all ranks
    int64_t num_steps = 0;    // ceil(W / G)
};

class TokenReader;  // one split's tokens (and tags): a file read with pread, or generated

// One rank's view of the data. Opening reads and checks meta.txt, vocab.txt and tags.txt and the
// split files' sizes, but no tokens: a batch reads only this rank's B windows (B·(S+1) tokens) with
// pread. Resident: the vocabulary, the tag names, scratch for one window, and for synthetic data the
// language's tables (K·V·branching entries).
class TokenData {
   public:
    TokenData(const DataOptions& options,
              int64_t seq_len,
              int64_t batch_per_rank,
              int rank,
              int num_ranks,
              uint64_t seed);
    ~TokenData();
    TokenData(const TokenData&) = delete;
    TokenData& operator=(const TokenData&) = delete;

    const Vocabulary& vocab() const { return vocab_; }
    const std::vector<std::string>& tag_names() const { return tag_names_; }  // empty: untagged data
    bool has_tags() const { return !tag_names_.empty(); }
    const SyntheticLanguage* synthetic() const { return synthetic_.get(); }  // null unless synthetic
    int64_t num_tokens(Split split) const;  // synthetic train: -1 (unbounded)
    DataPosition position(int64_t next_step) const;

    // inputs, targets (B, S): this rank's sequences g = rank·B + b of step's global batch;
    // targets[b, s] = inputs[b, s + 1] of the same window.
    void train_batch(int64_t step, int32_t* inputs, int32_t* targets);
    // tokens (S + 1): global sequence g of step's batch, the same for every P. Corpora: a window at a
    // uniform offset drawn from (seed, step, g); synthetic: a sequence sampled with that key.
    void train_sequence(int64_t step, int64_t g, int32_t* tokens);

    // max_windows > 0 evaluates only the first max_windows windows.
    EvalPlan eval_plan(Split split, int64_t max_windows = 0) const;
    // inputs, targets, input_tags (B, S) of this rank at eval step `step`. Past a window's end: input
    // 0, target -1 (not scored), tag -1. input_tags[b, s] = POS tag of inputs[b, s] (brown only; pass
    // nullptr otherwise). Returns the number of targets (>= 0) in this rank's batch.
    int64_t eval_batch(
        const EvalPlan& plan, int64_t step, int32_t* inputs, int32_t* targets, int32_t* input_tags);

   private:
    // tokens, tags (S + 1): eval window w of the split; returns its length (<= S + 1).
    int64_t eval_window(Split split, int64_t w, int32_t* tokens, int32_t* tags);

    DataOptions options_;
    int64_t seq_len_, batch_per_rank_;
    int rank_, num_ranks_;
    uint64_t seed_;
    Vocabulary vocab_;
    std::vector<std::string> tag_names_;
    std::unique_ptr<SyntheticLanguage> synthetic_;
    std::unique_ptr<TokenReader> readers_[3];    // by Split; null for synthetic
    std::vector<int32_t> window_, window_tags_;  // (S + 1) scratch
};

}  // namespace expar
