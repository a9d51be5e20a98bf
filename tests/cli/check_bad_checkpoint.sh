#!/usr/bin/env bash
# usage: tests/cli/check_bad_checkpoint.sh EXPAR LAUNCH
# Damaged checkpoints are refused at load, naming the file and the dataset (src/train/checkpoint.cpp):
# a real checkpoint is saved, copies of it are damaged with h5py (int8 weights, a float or negative step,
# a NaN in a replicated tensor, an Inf in an expert's), and each is resumed at 1 and 2 ranks: one error line.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR LAUNCH" >&2
    exit 2
fi
expar=$1
launch=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/common.sh"
python=$(find_python)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
common=(--synthetic-vocab 32 --synthetic-eval-sequences 4 --d-model 16 --num-heads 2 --num-layers 2
        --d-ff-dense 32 --d-ff 16 --seq-len 8 --experts 4 --steps 4 --eval-every 0
        --log-routing-every 0 --print-every 100)
"$launch" 2 "$expar" train "${common[@]}" --batch-size 2 --stop-at 2 --checkpoint "$scratch/good.h5" >/dev/null

# /params/wte is replicated, [32, 16]; /params/h1.w1 holds the 4 experts of block 1, [4, 16, 16].
"$python" - "$scratch" <<'PY'
import sys, shutil, h5py, numpy as np
d = sys.argv[1]
def damaged(name, change):
    shutil.copy(f"{d}/good.h5", f"{d}/{name}.h5")
    with h5py.File(f"{d}/{name}.h5", "r+") as f:
        change(f)
def retype(f, path, dtype):
    data = f[path][()]
    del f[path]
    f.create_dataset(path, data=np.asarray(data).astype(dtype))
def set_value(f, path, index, value):
    data = np.array(f[path][()])
    data[index] = value
    f[path][...] = data
damaged("int8_weights", lambda f: retype(f, "/params/wte", np.int8))
damaged("float_step", lambda f: retype(f, "/counters/step", np.float64))
damaged("negative_step", lambda f: set_value(f, "/counters/step", (), -5))
damaged("nan_dense", lambda f: set_value(f, "/params/wte", (2, 5), np.nan))
# In the last expert: at 2 ranks only rank 1 holds it, and rank 0 must report the same line.
damaged("inf_expert", lambda f: set_value(f, "/params/h1.w1", (3, 1, 7), np.inf))
PY

failures=0
expect() {  # NAME "expected message"
    for np in 1 2; do
        echo "=== $1 at $np rank(s)"
        if ! "$here/expect_error.sh" "$np" "$2" "$expar" train "${common[@]}" --batch-size $((4 / np)) \
            --resume "$scratch/$1.h5"; then
            failures=$((failures + 1))
        fi
    done
}
expect int8_weights "checkpoint '$scratch/int8_weights.h5': tensor '/params/wte' is int8; checkpoints hold float32"
expect float_step "checkpoint '$scratch/float_step.h5': counter '/counters/step' is float64, not an integer"
expect negative_step "checkpoint '$scratch/negative_step.h5': counter '/counters/step' is -5; it must be >= 0"
expect nan_dense "checkpoint '$scratch/nan_dense.h5': tensor '/params/wte' holds a non-finite value (NaN or Inf) at [2, 5]"
expect inf_expert "checkpoint '$scratch/inf_expert.h5': tensor '/params/h1.w1' holds a non-finite value (NaN or Inf) at [3, 1, 7]"
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures case(s)"
    exit 1
fi
echo "PASS"
