#include "data.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "check.h"
#include "fingerprint.h"
#include "rng.h"

namespace expar {

// ------------------------------------------------------------------------------------------------
// Names, fingerprints, positions

uint64_t vocab_fingerprint(const std::vector<std::string>& words) {
    uint64_t h = kFnvOffset;
    for (const std::string& w : words) h = fnv1a64("\n", 1, fnv1a64(w, h));
    return h;
}

void DataPosition::pack(int64_t* out) const {
    out[0] = next_step;
    out[1] = static_cast<int64_t>(seed);
    out[2] = static_cast<int64_t>(vocab_fingerprint);
    out[3] = vocab_size;
}

DataPosition DataPosition::unpack(const int64_t* in) {
    DataPosition p;
    p.next_step = in[0];
    p.seed = static_cast<uint64_t>(in[1]);
    p.vocab_fingerprint = static_cast<uint64_t>(in[2]);
    p.vocab_size = in[3];
    return p;
}

namespace {
std::string hex16(uint64_t v) {
    std::ostringstream oss;
    oss << std::hex;
    oss.width(16);
    oss.fill('0');
    oss << v;
    return oss.str();
}
}  // namespace

void data_position_check_resume(const DataPosition& saved, const DataPosition& current) {
    EXPAR_REQUIRE(
        saved.vocab_fingerprint == current.vocab_fingerprint && saved.vocab_size == current.vocab_size,
        "vocabulary mismatch on resume: the checkpoint was trained on "
            << saved.vocab_size << " tokens (fingerprint " << hex16(saved.vocab_fingerprint)
            << "), the data has " << current.vocab_size << " (fingerprint "
            << hex16(current.vocab_fingerprint)
            << "); resume with the --data, --data-dir, --text-file and --synthetic-* of the checkpoint");
}

// ------------------------------------------------------------------------------------------------
// TokenReader: one split of a token file (uint32 ids, or bytes at an offset) and its tag file.

class TokenReader {
   public:
    TokenReader(const std::string& path,
                int64_t byte_offset,
                int64_t num_tokens,
                int token_bytes,
                int64_t vocab_size,
                const std::string& tag_path,
                int64_t num_tags)
        : path_(path),
          tag_path_(tag_path),
          byte_offset_(byte_offset),
          num_tokens_(num_tokens),
          token_bytes_(token_bytes),
          vocab_size_(vocab_size),
          num_tags_(num_tags) {
        fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
        EXPAR_REQUIRE(fd_ >= 0, "cannot open '" << path << "': " << std::strerror(errno));
        if (!tag_path.empty()) {
            tag_fd_ = open(tag_path.c_str(), O_RDONLY | O_CLOEXEC);
            EXPAR_REQUIRE(tag_fd_ >= 0, "cannot open '" << tag_path << "': " << std::strerror(errno));
        }
    }

    // Reads the whole split once and throws an all-ranks error at its first id or tag out of range. Every
    // rank reads the same files, so all reach the same verdict at the start; read() alone would find a
    // bad value only on the rank whose batch holds it, at whatever step, one message per rank.
    void check_all() {
        constexpr int64_t kChunk = 1 << 18;  // tokens per read
        std::vector<int32_t> tokens(kChunk), tags(tag_fd_ >= 0 ? kChunk : 0);
        for (int64_t pos = 0; pos < num_tokens_; pos += kChunk) {
            const int64_t count = std::min(kChunk, num_tokens_ - pos);
            read(pos, count, tokens.data(), tag_fd_ >= 0 ? tags.data() : nullptr, /*every_rank=*/true);
        }
    }
    ~TokenReader() {
        if (fd_ >= 0) close(fd_);
        if (tag_fd_ >= 0) close(tag_fd_);
    }
    TokenReader(const TokenReader&) = delete;
    TokenReader& operator=(const TokenReader&) = delete;

    int64_t num_tokens() const { return num_tokens_; }

    // tokens[i] (and tags[i] when non-null) for positions pos .. pos + count - 1 of the split.
    // every_rank: all ranks read this range (check_all), so a bad value is an all-ranks error.
    void read(int64_t pos, int64_t count, int32_t* tokens, int32_t* tags, bool every_rank = false) {
        EXPAR_ASSERT(pos >= 0 && count >= 0 && pos + count <= num_tokens_);
        scratch_.resize(std::max<size_t>(scratch_.size(), count * token_bytes_));  // grows once
        read_exact(fd_, path_, scratch_.data(), count * token_bytes_, byte_offset_ + pos * token_bytes_);
        for (int64_t i = 0; i < count; ++i) {
            uint32_t id = 0;
            if (token_bytes_ == 1) {
                id = scratch_[i];
            } else {
                std::memcpy(&id, &scratch_[4 * i], 4);  // little-endian hosts (x86, ARM)
            }
            if (id >= vocab_size_) {
                std::ostringstream oss;
                oss << "corrupt token file '" << path_ << "': id " << id << " at token " << pos + i
                    << " is outside the vocabulary of " << vocab_size_
                    << " tokens; rerun scripts/fetch_brown.sh";
                corrupt(oss.str(), every_rank);
            }
            tokens[i] = static_cast<int32_t>(id);
        }
        if (tags == nullptr) return;
        EXPAR_ASSERT(tag_fd_ >= 0);
        scratch_.resize(std::max<size_t>(scratch_.size(), count * 2));
        read_exact(tag_fd_, tag_path_, scratch_.data(), count * 2, pos * 2);
        for (int64_t i = 0; i < count; ++i) {
            uint16_t tag = 0;
            std::memcpy(&tag, &scratch_[2 * i], 2);
            if (tag >= num_tags_) {
                std::ostringstream oss;
                oss << "corrupt tag file '" << tag_path_ << "': tag " << tag << " at token " << pos + i
                    << " is outside the " << num_tags_ << " tags; rerun scripts/fetch_brown.sh";
                corrupt(oss.str(), every_rank);
            }
            tags[i] = tag;
        }
    }

   private:
    // A bad id or tag: the same for every rank in check_all(); in a later read() (the file changed since)
    // only this rank's batch holds it.
    [[noreturn]] static void corrupt(const std::string& message, bool every_rank) {
        if (every_rank) EXPAR_FAIL(message);
        throw_error(__FILE__, __LINE__, message, false);
    }

    static void read_exact(
        int fd, const std::string& path, unsigned char* out, int64_t bytes, int64_t offset) {
        while (bytes > 0) {
            const ssize_t n = pread(fd, out, bytes, offset);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                std::ostringstream oss;
                oss << "cannot read " << bytes << " bytes at offset " << offset << " of '" << path
                    << "': " << (n < 0 ? std::strerror(errno) : "file shorter than when opened");
                throw_error(__FILE__, __LINE__, oss.str(), false);
            }
            out += n;
            bytes -= n;
            offset += n;
        }
    }

    std::string path_, tag_path_;
    int fd_ = -1, tag_fd_ = -1;
    int64_t byte_offset_, num_tokens_;
    int token_bytes_;
    uint32_t vocab_size_;
    int64_t num_tags_;
    std::vector<unsigned char> scratch_;
};

// ------------------------------------------------------------------------------------------------
// Opening the data

namespace {

int64_t file_bytes_or_minus_one(const std::string& path) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return -1;
    return st.st_size;
}

std::map<std::string, std::string> read_meta(const std::string& dir) {
    const std::string path = dir + "/meta.txt";
    std::ifstream in(path);
    EXPAR_REQUIRE(in,
                  "--data brown: no token files in '"
                      << dir << "' (" << path
                      << " is missing): run scripts/fetch_brown.sh to fetch and convert the Brown corpus, "
                         "or point --data-dir at its output");
    std::map<std::string, std::string> meta;
    std::string line;
    while (std::getline(in, line)) {
        const size_t eq = line.find('=');
        if (eq != std::string::npos) meta[line.substr(0, eq)] = line.substr(eq + 1);
    }
    return meta;
}

const std::string& meta_value(const std::map<std::string, std::string>& meta,
                              const std::string& dir,
                              const std::string& key) {
    auto it = meta.find(key);
    EXPAR_REQUIRE(it != meta.end(), "'" << dir << "/meta.txt' has no '" << key
                                        << "'; rerun scripts/fetch_brown.sh to convert the corpus again");
    return it->second;
}

int64_t meta_int(const std::map<std::string, std::string>& meta,
                 const std::string& dir,
                 const std::string& key) {
    const std::string& text = meta_value(meta, dir, key);
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    EXPAR_REQUIRE(!text.empty() && *end == '\0' && v >= 0,
                  "'" << dir << "/meta.txt': " << key << "=" << text << " is not a count");
    return v;
}

// Lines "id<TAB>name<TAB>count" with ids 0, 1, 2, ... in order; returns the names.
std::vector<std::string> read_id_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    EXPAR_REQUIRE(in, "cannot read '" << path << "'; rerun scripts/fetch_brown.sh");
    std::vector<std::string> names;
    std::string line;
    while (std::getline(in, line)) {
        const size_t tab1 = line.find('\t');
        const size_t tab2 = tab1 == std::string::npos ? tab1 : line.find('\t', tab1 + 1);
        EXPAR_REQUIRE(tab2 != std::string::npos && line.substr(0, tab1) == std::to_string(names.size()),
                      "'" << path << "' line " << names.size() + 1
                          << " is not 'id<TAB>name<TAB>count' with id " << names.size()
                          << "; rerun scripts/fetch_brown.sh");
        names.push_back(line.substr(tab1 + 1, tab2 - tab1 - 1));
    }
    return names;
}

std::vector<std::string> byte_words() {
    std::vector<std::string> words(256);
    for (int b = 0; b < 256; ++b) {
        if (b > 0x20 && b < 0x7f) {
            words[b] = std::string(1, static_cast<char>(b));
        } else {
            char text[8];
            std::snprintf(text, sizeof text, "\\x%02x", b);
            words[b] = text;
        }
    }
    return words;
}

}  // namespace

// The names the constructor below opens.
std::vector<std::pair<const char*, std::string>> data_input_files(const DataOptions& options) {
    std::vector<std::pair<const char*, std::string>> files;
    if (options.kind == DataKind::bytes) files.emplace_back("--text-file", options.text_file);
    if (options.kind != DataKind::brown) return files;
    const std::string& dir = options.data_dir;
    for (const char* name : {"meta.txt", "vocab.txt", "tags.txt"})
        files.emplace_back("--data-dir", dir + "/" + name);
    for (Split split : {Split::train, Split::valid, Split::test})
        for (const char* suffix : {".bin", ".tags.bin"})
            files.emplace_back("--data-dir", dir + "/" + to_string(split) + suffix);
    return files;
}

TokenData::TokenData(const DataOptions& options,
                     int64_t seq_len,
                     int64_t batch_per_rank,
                     int rank,
                     int num_ranks,
                     uint64_t seed)
    : options_(options),
      seq_len_(seq_len),
      batch_per_rank_(batch_per_rank),
      rank_(rank),
      num_ranks_(num_ranks),
      seed_(seed) {
    const int64_t S = seq_len;
    EXPAR_REQUIRE(S >= 1, "--seq-len must be positive, got " << S);
    EXPAR_REQUIRE(batch_per_rank >= 1, "--batch-size must be positive, got " << batch_per_rank);
    EXPAR_ASSERT(num_ranks >= 1 && rank >= 0 && rank < num_ranks);
    window_.resize(S + 1);
    window_tags_.resize(S + 1);

    if (options.kind == DataKind::synthetic) {
        synthetic_ = std::make_unique<SyntheticLanguage>(options.synthetic);
        EXPAR_REQUIRE(
            options.synthetic_eval_sequences >= 1,
            "--synthetic-eval-sequences must be positive, got " << options.synthetic_eval_sequences);
        for (int64_t i = 0; i < synthetic_->vocab_size(); ++i)
            vocab_.words.push_back("t" + std::to_string(i));
        vocab_.fingerprint = synthetic_->fingerprint();
        return;
    }

    if (options.kind == DataKind::bytes) {
        const std::string& path = options.text_file;
        EXPAR_REQUIRE(!path.empty(), "--data bytes needs --text-file FILE (any file; read as bytes)");
        const int64_t size = file_bytes_or_minus_one(path);
        EXPAR_REQUIRE(size >= 0, "cannot read --text-file '" << path << "'");
        const int64_t end_train = size * 8 / 10, end_valid = size * 9 / 10;
        EXPAR_REQUIRE(end_train >= S + 1 && end_valid - end_train >= 2 && size - end_valid >= 2,
                      "--text-file '" << path << "' has " << size
                                      << " bytes: too few for its 80% train split to "
                                      << "hold --seq-len + 1 = " << S + 1
                                      << " bytes and valid/test (10% each) 2 bytes each");
        vocab_.words = byte_words();
        vocab_.fingerprint = vocab_fingerprint(vocab_.words);
        const int64_t begin[3] = {0, end_train, end_valid}, end[3] = {end_train, end_valid, size};
        for (int s = 0; s < 3; ++s)
            readers_[s] = std::make_unique<TokenReader>(path, begin[s], end[s] - begin[s], 1, 256, "", 0);
        return;
    }

    // brown (or any corpus converted to this format)
    const std::string& dir = options.data_dir;
    const auto meta = read_meta(dir);
    EXPAR_REQUIRE(meta_value(meta, dir, "format") == "expar-tokens-1",
                  "'" << dir << "/meta.txt' has format '" << meta_value(meta, dir, "format")
                      << "', expected expar-tokens-1; rerun scripts/fetch_brown.sh");
    EXPAR_REQUIRE(meta_int(meta, dir, "token_bytes") == 4 && meta_int(meta, dir, "tag_bytes") == 2,
                  "'" << dir << "/meta.txt': expected token_bytes=4 and tag_bytes=2");
    vocab_.words = read_id_file(dir + "/vocab.txt");
    vocab_.fingerprint = vocab_fingerprint(vocab_.words);
    const int64_t V = meta_int(meta, dir, "vocab_size");
    EXPAR_REQUIRE(
        vocab_.size() == V && hex16(vocab_.fingerprint) == meta_value(meta, dir, "vocab_fingerprint"),
        "'" << dir << "/vocab.txt' (" << vocab_.size() << " words, fingerprint " << hex16(vocab_.fingerprint)
            << ") does not match meta.txt (" << V << " words, fingerprint "
            << meta_value(meta, dir, "vocab_fingerprint") << "); rerun scripts/fetch_brown.sh");
    auto unk = std::find(vocab_.words.begin(), vocab_.words.end(), "<unk>");
    vocab_.unk_id = unk == vocab_.words.end() ? -1 : static_cast<int32_t>(unk - vocab_.words.begin());
    tag_names_ = read_id_file(dir + "/tags.txt");
    const int64_t num_tags = meta_int(meta, dir, "num_tags");
    EXPAR_REQUIRE(static_cast<int64_t>(tag_names_.size()) == num_tags,
                  "'" << dir << "/tags.txt' has " << tag_names_.size() << " tags, meta.txt says " << num_tags
                      << "; rerun scripts/fetch_brown.sh");
    for (Split split : {Split::train, Split::valid, Split::test}) {
        const std::string name = to_string(split);
        const int64_t n = meta_int(meta, dir, name + "_tokens");
        const std::string path = dir + "/" + name + ".bin", tag_path = dir + "/" + name + ".tags.bin";
        for (auto [file, bytes] : {std::pair<std::string, int64_t>{path, 4 * n}, {tag_path, 2 * n}}) {
            const int64_t have = file_bytes_or_minus_one(file);
            EXPAR_REQUIRE(
                have == bytes,
                "'" << file << "' "
                    << (have < 0 ? std::string("is missing") : "holds " + std::to_string(have) + " bytes")
                    << ", meta.txt says " << n << " tokens (" << bytes
                    << " bytes): truncated or corrupt; rerun scripts/fetch_brown.sh");
        }
        const int64_t need = split == Split::train ? S + 1 : 2;
        EXPAR_REQUIRE(n >= need, "the " << name << " split of '" << dir << "' has " << n
                                        << " tokens, fewer than " << need
                                        << (split == Split::train ? " (--seq-len + 1)" : ""));
        readers_[static_cast<int>(split)] =
            std::make_unique<TokenReader>(path, 0, n, 4, V, tag_path, num_tags);
        readers_[static_cast<int>(split)]->check_all();
    }
}

TokenData::~TokenData() = default;

int64_t TokenData::num_tokens(Split split) const {
    if (synthetic_) return split == Split::train ? -1 : options_.synthetic_eval_sequences * (seq_len_ + 1);
    return readers_[static_cast<int>(split)]->num_tokens();
}

DataPosition TokenData::position(int64_t next_step) const {
    DataPosition p;
    p.next_step = next_step;
    p.seed = seed_;
    p.vocab_fingerprint = vocab_.fingerprint;
    p.vocab_size = vocab_.size();
    return p;
}

// ------------------------------------------------------------------------------------------------
// Training batches

void TokenData::train_sequence(int64_t step, int64_t g, int32_t* tokens) {
    const int64_t S = seq_len_;
    const uint64_t key = rng_bits(seed_, rng_per_step(kStreamDataTrain, step), static_cast<uint64_t>(g));
    if (synthetic_) {
        synthetic_->sample(tokens, S + 1, key);
        return;
    }
    TokenReader& reader = *readers_[static_cast<int>(Split::train)];
    // Offsets 0 .. N - S - 1: every window of S + 1 tokens inside the split, uniformly.
    const uint64_t num_offsets = static_cast<uint64_t>(reader.num_tokens() - S);
    reader.read(static_cast<int64_t>(key % num_offsets), S + 1, tokens, nullptr);
}

void TokenData::train_batch(int64_t step, int32_t* inputs, int32_t* targets) {
    const int64_t S = seq_len_, B = batch_per_rank_;
    for (int64_t b = 0; b < B; ++b) {
        train_sequence(step, rank_ * B + b, window_.data());
        std::copy(window_.begin(), window_.begin() + S, inputs + b * S);
        std::copy(window_.begin() + 1, window_.end(), targets + b * S);
    }
}

// ------------------------------------------------------------------------------------------------
// Evaluation

EvalPlan TokenData::eval_plan(Split split, int64_t max_windows) const {
    const int64_t S = seq_len_, G = num_ranks_ * batch_per_rank_;
    EvalPlan plan;
    plan.split = split;
    if (synthetic_) {
        plan.num_windows = options_.synthetic_eval_sequences;
        if (max_windows > 0) plan.num_windows = std::min(plan.num_windows, max_windows);
        plan.num_targets = plan.num_windows * S;
    } else {
        const int64_t N = readers_[static_cast<int>(split)]->num_tokens();
        plan.num_windows = (N - 1 + S - 1) / S;
        if (max_windows > 0) plan.num_windows = std::min(plan.num_windows, max_windows);
        plan.num_targets = std::min(N - 1, plan.num_windows * S);
    }
    plan.num_steps = (plan.num_windows + G - 1) / G;
    return plan;
}

int64_t TokenData::eval_window(Split split, int64_t w, int32_t* tokens, int32_t* tags) {
    const int64_t S = seq_len_;
    if (synthetic_) {
        // Keyed by the language's seed, not the run's: the evaluation set is fixed per language.
        const uint64_t stream = kStreamDataEval + static_cast<uint64_t>(split);
        synthetic_->sample(tokens, S + 1,
                           rng_bits(options_.synthetic.seed, stream, static_cast<uint64_t>(w)));
        if (tags) std::fill(tags, tags + S + 1, -1);
        return S + 1;
    }
    TokenReader& reader = *readers_[static_cast<int>(split)];
    const int64_t begin = w * S, length = std::min(S + 1, reader.num_tokens() - begin);
    reader.read(begin, length, tokens, tags);
    return length;
}

int64_t TokenData::eval_batch(
    const EvalPlan& plan, int64_t step, int32_t* inputs, int32_t* targets, int32_t* input_tags) {
    const int64_t S = seq_len_, B = batch_per_rank_, G = num_ranks_ * B;
    EXPAR_ASSERT(input_tags == nullptr || has_tags());
    int64_t num_targets = 0;
    for (int64_t b = 0; b < B; ++b) {
        const int64_t w = step * G + rank_ * B + b;
        const int64_t length = w < plan.num_windows ? eval_window(plan.split, w, window_.data(),
                                                                  input_tags ? window_tags_.data() : nullptr)
                                                    : 0;
        const int64_t n = std::max<int64_t>(length - 1, 0);  // targets in this window
        for (int64_t s = 0; s < S; ++s) {
            inputs[b * S + s] = s < n ? window_[s] : 0;
            targets[b * S + s] = s < n ? window_[s + 1] : -1;
            if (input_tags) input_tags[b * S + s] = s < n ? window_tags_[s] : -1;
        }
        num_targets += n;
    }
    return num_targets;
}

}  // namespace expar
