#!/usr/bin/env bash
# usage: tests/cli/check_train.sh EXPAR LAUNCH CLI_DIR SOURCE_DIR
# expar train end to end:
#  1. 2 ranks on a small synthetic language: the final validation loss must fall below the language's
#     Bayes-optimal loss bound (SyntheticLanguage::entropy().optimal_upper(S), logged as an attribute) plus
#     a margin; the log's schema and invariants are checked by CLI_DIR/check_train_log.py.
#  2. a tiny model with every branch (shared expert, dense branch) and --dump: CLI_DIR/check_train_dump.py
#     recomputes the loss from the dumped logits and targets with numpy.
#  3. the Brown fixture (tests/data/brown_fixture, converted here): POS-tag routing counts in the log.
set -euo pipefail
if [ $# -ne 4 ]; then
    echo "usage: $0 EXPAR LAUNCH CLI_DIR SOURCE_DIR" >&2
    exit 2
fi
expar=$1
launch=$2
cli_dir=$3
src=$4
source "$(dirname "$0")/common.sh"
python=$(find_python)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

echo "=== 1. convergence on the synthetic language (2 ranks)"
"$launch" 2 "$expar" train --synthetic-vocab 64 --synthetic-sources 2 --synthetic-branching 4 --synthetic-leak 0.05 \
    --d-model 64 --num-heads 4 --num-layers 2 --d-ff-dense 256 --d-ff 128 --experts 4 --seq-len 32 --batch-size 8 \
    --steps 600 --lr 0.003 --warmup-steps 10 --eval-every 300 --log-routing-every 50 --print-every 100 \
    --log "$scratch/converge.h5"
# Margin 0.1 nats: the validation set (256 sequences of 32 targets) estimates the loss with a standard error
# of ~0.02; the untrained model starts at ln(64) ≈ 4.2 nats.
"$python" "$cli_dir/check_train_log.py" "$scratch/converge.h5" --nranks 2 --max-valid-excess 0.1

echo "=== 2. dump of a tiny model with shared expert and dense branch (2 ranks)"
"$launch" 2 "$expar" train --synthetic-vocab 32 --synthetic-eval-sequences 4 --d-model 16 --num-heads 2 \
    --num-layers 2 --d-ff-dense 32 --d-ff 16 --seq-len 8 --batch-size 2 --experts 4 --shared-experts 1 \
    --dense-branch-ff 8 --steps 2 --dump "$scratch/dump.h5" --log "$scratch/tiny.h5"
"$python" "$cli_dir/check_train_dump.py" "$scratch/dump.h5"

echo "=== 3. POS-tag routing counts on the Brown fixture (2 ranks)"
python3 "$src/scripts/brown_to_tokens.py" --src "$src/tests/data/brown_fixture" --out "$scratch/brown" \
    --train-words 20 --valid-words 7 >/dev/null
"$launch" 2 "$expar" train --data brown --data-dir "$scratch/brown" --d-model 16 --num-heads 2 --num-layers 2 \
    --d-ff-dense 32 --d-ff 16 --seq-len 4 --batch-size 1 --experts 4 --steps 3 --log "$scratch/brown.h5"
"$python" "$cli_dir/check_train_log.py" "$scratch/brown.h5" --nranks 2 --pos
echo "PASS"
