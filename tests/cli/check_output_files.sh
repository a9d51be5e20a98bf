#!/usr/bin/env bash
# usage: tests/cli/check_output_files.sh EXPAR LOCAL_SH CLI_DIR TOPOLOGY_DIR
# Output files are replaced only by complete ones (docs/hdf5.md, "Output files"):
#   1. a good --log survives a run that fails at step 0 and one that fails mid-run (checksum unchanged);
#      the failed run's log is left in FILE.partial (readable, its rows up to the failure) and named after
#      the error; a successful run replaces FILE; a stale FILE.partial is reported and replaced.
#   2. the same for `train --log`, `simulate --log` (successful replace, stale partial) and
#      `calibrate --out` (successful replace).
# Ranks: 2 and 4.
set -uo pipefail
if [ $# -ne 4 ]; then
    echo "usage: $0 EXPAR LOCAL_SH CLI_DIR TOPOLOGY_DIR" >&2
    exit 2
fi
expar=$1 launch=$2 cli_dir=$3 topology_dir=$4
source "$cli_dir/common.sh"
python=$(find_python) || exit 1
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-0}"

fail() {
    echo "FAIL: $*"
    [ -f "$scratch/err" ] && { echo "--- stderr of the last run:"; cat "$scratch/err"; }
    exit 1
}
sum() { md5sum "$1" | cut -d' ' -f1; }
# rows FILE DATASET: the first dimension of DATASET in FILE (fails if unreadable).
rows() { "$python" -c 'import h5py, sys; print(h5py.File(sys.argv[1], "r")[sys.argv[2]].shape[0])' "$1" "$2"; }
# run NRANKS ARGS...: expar under mpirun, stdout/stderr to $scratch/out, $scratch/err; returns its status.
run() {
    local n=$1
    shift
    timeout 120 "$launch" "$n" "$expar" "$@" >"$scratch/out" 2>"$scratch/err"
}
# expect_failed_run STATUS FILE OLD_SUM OPTION: the run failed without a signal, FILE is as it was, and its
# partial output is named on stderr.
expect_failed_run() {
    local status=$1 file=$2 old=$3 option=$4
    [ "$status" -ne 0 ] || fail "the run was expected to fail"
    [ "$status" -lt 124 ] || fail "exit status $status (a hang or a signal)"
    [ "$(sum "$file")" = "$old" ] || fail "$file changed by a failed run"
    [ -f "$file.partial" ] || fail "no $file.partial after the failed run"
    grep -qF "expar: kept $option of the failed run: '$file.partial' ('$file' is unchanged)" "$scratch/err" ||
        fail "the failed run does not say where its partial output is"
    [ "$(grep -c 'expar: error' "$scratch/err")" -eq 1 ] || fail "expected one error line"
}

layer=(layer --d-model 16 --d-ff 32 --tokens-per-rank 32 --warmup 0)
for n in 2 4; do
    echo "=== 1. layer --log at $n ranks"
    log=$scratch/layer$n.h5
    run $n "${layer[@]}" --steps 3 --log "$log" || fail "the first run failed"
    [ ! -e "$log.partial" ] || fail "$log.partial left by a successful run"
    good=$(sum "$log")

    run $n "${layer[@]}" --steps 5 --log "$log" --inject-nan-step 0
    expect_failed_run $? "$log" "$good" --log
    [ "$(rows "$log.partial" /steps/bytes_intra_node)" = 0 ] || fail "the step-0 failure's partial log has rows"
    echo "ok: a failure at step 0 leaves $log as it was"

    # The stale partial of the step-0 failure is reported, then replaced by this run's.
    run $n "${layer[@]}" --steps 5 --log "$log" --inject-nan-step 2
    grep -qF "expar: note: replacing --log file '$log.partial', left by an earlier run that did not finish" \
        "$scratch/err" || fail "a stale $log.partial is not reported"
    expect_failed_run 1 "$log" "$good" --log
    [ "$(rows "$log.partial" /steps/bytes_intra_node)" = 2 ] || fail "the partial log does not hold steps 0 and 1"
    echo "ok: a failure at step 2 leaves $log as it was, steps 0-1 in $log.partial"

    run $n "${layer[@]}" --steps 4 --log "$log" || fail "the successful run failed"
    grep -qF "replacing --log file '$log.partial'" "$scratch/err" || fail "a stale $log.partial is not reported"
    [ ! -e "$log.partial" ] || fail "$log.partial left by a successful run"
    [ "$(rows "$log" /steps/bytes_intra_node)" = 4 ] || fail "$log not replaced by the successful run"
    echo "ok: a successful run replaces $log and the stale partial"
done

echo "=== 2. train --log at 2 ranks (a diverging run fails at step 1)"
train=(train --batch-size 2 --d-model 16 --num-heads 2 --num-layers 2 --experts 4 --d-ff 16
       --d-ff-dense 32 --seq-len 8 --synthetic-vocab 32 --eval-every 0 --print-every 100
       --synthetic-eval-sequences 8)
log=$scratch/train.h5
run 2 "${train[@]}" --steps 3 --log "$log" || fail "the first train run failed"
good=$(sum "$log")
run 2 "${train[@]}" --steps 3 --log "$log" --lr 1e30
expect_failed_run $? "$log" "$good" --log
rows "$log.partial" /train/step >/dev/null || fail "the partial training log is not readable"
run 2 "${train[@]}" --steps 2 --log "$log" || fail "the successful train run failed"
[ ! -e "$log.partial" ] && [ "$(rows "$log" /train/step)" = 2 ] || fail "$log not replaced by the successful run"
echo "ok: train --log"

echo "=== 3. simulate --log and calibrate --out: replaced when complete, stale partials reported"
sim=(simulate --topology "$topology_dir/local-2x2.yaml" --ranks 4 --steps 2 --experts 8 --d-model 64 --d-ff 128
     --tokens-per-rank 256 --routing zipf)
log=$scratch/sim.h5
run 2 "${sim[@]}" --log "$log" || fail "simulate failed"
echo stale >"$log.partial"
run 2 "${sim[@]}" --log "$log" || fail "simulate failed"
grep -qF "replacing --log file '$log.partial'" "$scratch/err" || fail "a stale $log.partial is not reported"
[ ! -e "$log.partial" ] || fail "$log.partial left by a successful simulate run"
"$python" -c 'import h5py, sys; h5py.File(sys.argv[1], "r")' "$log" || fail "$log unreadable"
out=$scratch/cal.yaml
echo "old: calibration" >"$out"
echo stale >"$out.partial"
run 2 calibrate --max-bytes 65536 --a2a-max-bytes 16384 --pingpong-iters 2 --a2a-iters 2 --repetitions 2 \
    --d-model 64 --d-ff 128 --gemm-tokens 64 --out "$out" || fail "calibrate failed"
grep -qF "replacing --out file '$out.partial'" "$scratch/err" || fail "a stale $out.partial is not reported"
[ ! -e "$out.partial" ] && ! grep -q "old: calibration" "$out" || fail "$out not replaced"
echo "ok: simulate --log, calibrate --out"
echo "PASS"
