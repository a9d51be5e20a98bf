#!/usr/bin/env bash
# usage: tests/cli/check_corrupt_data.sh EXPAR SRC
# Corrupt token files (docs/data.md) are refused before the first step with one line for the job, at
# 2 and 4 ranks: the Brown fixture is converted, then a copy gets a tag outside tags.txt and another an id
# outside the vocabulary. Every rank reads the whole split at the start, so every rank finds the same first
# bad value (found in a batch instead, each rank would report its own).
set -uo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR SRC" >&2
    exit 2
fi
expar=$1
src=$2
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 "$src/scripts/brown_to_tokens.py" --src "$src/tests/data/brown_fixture" --out "$scratch/brown" \
    --train-words 20 --valid-words 7 >/dev/null || exit 1
cp -r "$scratch/brown" "$scratch/bad_tags"
cp -r "$scratch/brown" "$scratch/bad_tokens"
# Token 3 of the train split: tag 65535 (2 bytes, little-endian), id 2^32 - 1 (4 bytes).
printf '\377\377' | dd of="$scratch/bad_tags/train.tags.bin" bs=1 seek=6 conv=notrunc status=none
printf '\377\377\377\377' | dd of="$scratch/bad_tokens/valid.bin" bs=1 seek=4 conv=notrunc status=none
train=(train --d-model 16 --num-heads 2 --num-layers 2 --d-ff-dense 32 --d-ff 16 --seq-len 4 --batch-size 1
       --experts 4 --steps 2)
failures=0
for np in 2 4; do
    echo "=== corrupt tag file at $np ranks"
    "$here/expect_error.sh" "$np" \
        "corrupt tag file '$scratch/bad_tags/train.tags.bin': tag 65535 at token 3 is outside the" \
        "$expar" "${train[@]}" --data brown --data-dir "$scratch/bad_tags" || failures=$((failures + 1))
    echo "=== corrupt token file at $np ranks"
    "$here/expect_error.sh" "$np" \
        "corrupt token file '$scratch/bad_tokens/valid.bin': id 4294967295 at token 1 is outside the vocabulary" \
        "$expar" "${train[@]}" --data brown --data-dir "$scratch/bad_tokens" || failures=$((failures + 1))
done
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures case(s)"
    exit 1
fi
echo "PASS"
