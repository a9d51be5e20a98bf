#!/usr/bin/env bash
# usage: tests/cli/check_resume.sh EXPAR LAUNCH
# Checkpoint and restart of expar train (src/train/checkpoint.h):
#  1. 8 steps straight at 2 ranks, against 4 steps (--stop-at 4, checkpoint) + a resume to 8: the losses of
#     steps 4..7, the final validation and test losses and the final checkpoint's tensors are bitwise equal.
#  2. the step-4 checkpoint of 2 ranks resumed at 1 and at 4 ranks (experts re-sharded): the losses agree
#     with the straight run within float tolerance (dropless routing, so capacity cannot depend on P).
#  3. bad resumes: another model shape, another vocabulary, another seed.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR LAUNCH" >&2
    exit 2
fi
expar=$1
launch=$2
source "$(dirname "$0")/common.sh"
python=$(find_python)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
base=(--synthetic-eval-sequences 16 --num-heads 2 --num-layers 2
        --d-ff-dense 64 --d-ff 32 --experts 4 --seq-len 16 --capacity-factor 0 --router-bias 0.01
        --steps 8 --warmup-steps 2 --eval-every 0 --log-routing-every 0 --print-every 100)
common=("${base[@]}" --d-model 32 --synthetic-vocab 48)

echo "=== 1. straight vs stop + resume (2 ranks)"
"$launch" 2 "$expar" train "${common[@]}" --batch-size 4 --log "$scratch/straight.h5" --checkpoint "$scratch/straight_final.h5"
"$launch" 2 "$expar" train "${common[@]}" --batch-size 4 --stop-at 4 --checkpoint "$scratch/step4.h5" --log "$scratch/first.h5"
cp "$scratch/step4.h5" "$scratch/step4_keep.h5"
"$launch" 2 "$expar" train "${common[@]}" --batch-size 4 --resume "$scratch/step4.h5" --checkpoint "$scratch/resumed_final.h5" \
    --log "$scratch/resumed.h5"
for n in 1 4; do
    echo "=== 2. resume the 2-rank checkpoint at $n rank(s)"
    # The same global batch of 8 sequences: --batch-size is per rank.
    "$launch" "$n" "$expar" train "${common[@]}" --batch-size $((8 / n)) --resume "$scratch/step4_keep.h5" \
        --log "$scratch/resumed_np$n.h5"
done

"$python" - "$scratch" <<'PY'
import sys, h5py, numpy as np
d = sys.argv[1]
failures = 0
def check(ok, what):
    global failures
    print(("ok:   " if ok else "FAIL: ") + what)
    failures += 0 if ok else 1
def trace(name):
    with h5py.File(f"{d}/{name}.h5", "r") as f:
        steps = f["/train/step"][:]
        loss = f["/train/total_loss"][:]
        ev = {int(s): float(l) for s, l in zip(f["/eval/split"][:], f["/eval/loss"][:])} if "/eval/loss" in f else {}
        return dict(zip(steps.tolist(), loss.tolist())), ev
straight, straight_eval = trace("straight")
first, _ = trace("first")
resumed, resumed_eval = trace("resumed")
check(sorted(first) == [0, 1, 2, 3], f"the stopped run logged steps 0..3 ({sorted(first)})")
check(sorted(resumed) == [4, 5, 6, 7], f"the resumed run logged steps 4..7 ({sorted(resumed)})")
check(all(first[s] == straight[s] for s in first), "steps 0..3 bitwise equal to the straight run")
check(all(resumed[s] == straight[s] for s in resumed),
      "steps 4..7 after resume bitwise equal to the straight run: "
      + ", ".join(f"{resumed[s]:.9g}/{straight[s]:.9g}" for s in sorted(resumed)))
check(resumed_eval == straight_eval and len(straight_eval) == 2, f"final valid/test losses bitwise equal {resumed_eval}")
with h5py.File(f"{d}/straight_final.h5", "r") as a, h5py.File(f"{d}/resumed_final.h5", "r") as b:
    names = []
    a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
    same = [n for n in names if n in b and np.array_equal(a[n][()], b[n][()])]
    check(len(names) > 10 and len(same) == len(names),
          f"final checkpoints: {len(same)}/{len(names)} datasets bitwise equal (params, moments, counters)")
with h5py.File(f"{d}/step4.h5", "r") as f:  # the info attributes docs/hdf5.md lists
    info = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    check(info.get("num_ranks") == "2" and len(info.get("git_revision", "")) > 0
          and info.get("stop-at") == "4" and info.get("batch-size") == "4",
          "the checkpoint records num_ranks 2, git_revision and the options (stop-at 4, batch-size 4): "
          + ", ".join(f"{k}={info.get(k)}" for k in ("num_ranks", "git_revision", "stop-at", "batch-size")))
for n in (1, 4):
    other, _ = trace(f"resumed_np{n}")
    err = max(abs(other[s] - straight[s]) / abs(straight[s]) for s in other)
    check(sorted(other) == [4, 5, 6, 7] and err < 1e-4,
          f"resumed at {n} rank(s): steps 4..7 within 1e-4 relative of the 2-rank run (max {err:.2e})")
sys.exit(1 if failures else 0)
PY

echo "=== 3. bad resumes"
expect_fail() {  # expect_fail MESSAGE ARGS...
    local message=$1
    shift
    set +e
    "$launch" 2 "$expar" train --batch-size 4 "$@" >"$scratch/out" 2>"$scratch/err"
    local rc=$?
    set -e
    if [ "$rc" -ne 0 ] && grep -qF -- "$message" "$scratch/err"; then
        echo "ok:   exits $rc with: $(grep -F -- "$message" "$scratch/err" | head -1)"
    else
        echo "FAIL: expected a non-zero exit with '$message'; got $rc:" >&2
        sed 's/^/    /' "$scratch/err" >&2
        exit 1
    fi
}
expect_fail "is from another model: d_model 48 here, 32 in the file" "${base[@]}" --synthetic-vocab 48 --d-model 48 \
    --resume "$scratch/step4_keep.h5"
expect_fail "is from another model: vocabulary 40 tokens" "${base[@]}" --d-model 32 --synthetic-vocab 40 \
    --resume "$scratch/step4_keep.h5"
expect_fail "resume with --seed 1, the seed of checkpoint" "${common[@]}" --seed 2 --resume "$scratch/step4_keep.h5"
expect_fail "missing.h5' does not exist" "${common[@]}" --resume "$scratch/missing.h5"
echo "PASS"
