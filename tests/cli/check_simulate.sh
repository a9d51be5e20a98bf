#!/usr/bin/env bash
# usage: tests/cli/check_simulate.sh EXPAR LOCAL_SH CLI_DIR TOPOLOGY_DIR
# `expar simulate` end to end, checked by CLI_DIR/check_simulate.py:
#  1. single runs on local-2x2 (4 simulated ranks, 2 steps): schema, bound <= step, phases adding up, the
#     decisions and link bytes recomputed from the logged counts (plain with drops; pairwise dropless);
#     the trust block: the validation's figures for a calibrated shared-memory file only, never for a
#     nominal file or a DGX file (nominal or calibrated); --precision: the topology's training precision by
#     default (bf16 on dgx-h100, fp32 on local-2x2) in the header and the log, an explicit fp32 winning;
#  2. a 4-point sweep under 2 MPI ranks gathered into one file, each point bitwise equal to the same
#     configuration run alone;
#  3. replay of a tiny `expar train` routing log (2 ranks, 2 MoE layers) at 4 simulated ranks.
set -euo pipefail
if [ $# -ne 4 ]; then
    echo "usage: $0 EXPAR LOCAL_SH CLI_DIR TOPOLOGY_DIR" >&2
    exit 2
fi
expar=$1 launch=$2 cli_dir=$3 topology_dir=$4
source "$cli_dir/common.sh"
python=$(find_python)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
small=(--topology "$topology_dir/local-2x2.yaml" --ranks 4 --steps 2 --experts 8 --d-model 64 --d-ff 128
       --tokens-per-rank 256 --routing zipf)

echo "=== 1. single runs"
"$launch" 1 "$expar" simulate "${small[@]}" --skew 1 --capacity-factor 1 --log "$scratch/plain.h5" | tee "$scratch/plain.txt"
grep -q "^# mean over 2 steps: layer step" "$scratch/plain.txt" || { echo "FAIL: no summary line"; exit 1; }
# local-2x2.yaml has no calibration block and 4 ranks build the exact graph: the trust line says both, and
# that the topology has not been validated (no validation figures for a nominal file).
grep -q "^# trust: nominal rates .*; exact graph" "$scratch/plain.txt" || { echo "FAIL: no trust line"; exit 1; }
trust_unvalidated() {  # trust_unvalidated FILE RATES: the unvalidated accuracy line, and no 2-core VM figures
    grep -q "^#        accuracy: this topology has not been validated against measurements ($2)$" "$1" ||
        { echo "FAIL: $1: no 'not validated ($2)' trust line"; exit 1; }
    if grep -q "2-core VM\|median error" "$1"; then echo "FAIL: $1: validation figures printed"; exit 1; fi
}
trust_unvalidated "$scratch/plain.txt" "nominal rates"
# The same file with a calibration block (CPU ranks on shared memory, the validated kind): the validation's
# figures, as measured on the 2-core VM.
cp "$topology_dir/local-2x2.yaml" "$scratch/calibrated.yaml"
printf 'calibration:\n  when: 2026-01-01\n  how: test\n  topology: local-2x2\n' >>"$scratch/calibrated.yaml"
"$launch" 1 "$expar" simulate --topology "$scratch/calibrated.yaml" "${small[@]:2}" --skew 1 >"$scratch/calibrated.txt"
grep -q "^# trust: rates calibrated (2026-01-01, on local-2x2); exact graph" "$scratch/calibrated.txt" ||
    { echo "FAIL: no calibrated trust line"; cat "$scratch/calibrated.txt"; exit 1; }
grep -q "^#        against measured expar layer runs on a 2-core VM: median error 4-13% per layer, 20-22%$" \
    "$scratch/calibrated.txt" || { echo "FAIL: no validation figures for a calibrated shared-memory file"; exit 1; }
grep -q "^#        per phase; run-to-run noise 18-34% (docs/simulator.md, Validation)$" "$scratch/calibrated.txt" ||
    { echo "FAIL: no run-to-run noise line"; exit 1; }
# A DGX file, nominal and with a calibration block: never the 2-core VM's figures.
dgx=(--ranks 16 --steps 1 --experts 16 --d-model 64 --d-ff 128 --tokens-per-rank 64)
"$launch" 1 "$expar" simulate --topology "$topology_dir/dgx-h100.yaml" "${dgx[@]}" --log "$scratch/dgx.h5" \
    >"$scratch/dgx.txt"
trust_unvalidated "$scratch/dgx.txt" "nominal rates"
# --precision: the topology's training precision by default (bf16 on an H100, fp32 on a CPU file that lists
# only fp32), named with its rate in the header and the log; an explicit --precision wins.
expect_header() {  # expect_header FILE TEXT: the model line ends with TEXT
    grep -q "^# model .*, $2\$" "$1" || { echo "FAIL: $1: the model line does not end with '$2'"; cat "$1"; exit 1; }
}
expect_header "$scratch/dgx.txt" "2-byte elements, bf16 compute (989.0 TFLOP/s per device, the topology's training precision)"
"$python" "$cli_dir/check_simulate.py" precision "$scratch/dgx.h5" bf16 default 989e12
"$launch" 1 "$expar" simulate --topology "$topology_dir/dgx-h100.yaml" "${dgx[@]}" --precision fp32 \
    --log "$scratch/dgx-fp32.h5" >"$scratch/dgx-fp32.txt"
expect_header "$scratch/dgx-fp32.txt" "2-byte elements, fp32 compute (67.0 TFLOP/s per device, --precision)"
"$python" "$cli_dir/check_simulate.py" precision "$scratch/dgx-fp32.h5" fp32 option 67e12
"$python" "$cli_dir/check_simulate.py" slower "$scratch/dgx-fp32.h5" "$scratch/dgx.h5"
expect_header "$scratch/plain.txt" "2-byte elements, fp32 compute (39.2 GFLOP/s per device, the topology's training precision)"
"$python" "$cli_dir/check_simulate.py" precision "$scratch/plain.h5" fp32 default 39.2e9
cp "$topology_dir/dgx-h100.yaml" "$scratch/dgx-calibrated.yaml"
printf 'calibration:\n  when: 2026-01-01\n  how: test\n  topology: dgx-h100\n' >>"$scratch/dgx-calibrated.yaml"
"$launch" 1 "$expar" simulate --topology "$scratch/dgx-calibrated.yaml" "${dgx[@]}" >"$scratch/dgx-calibrated.txt"
trust_unvalidated "$scratch/dgx-calibrated.txt" "calibrated rates"
"$python" "$cli_dir/check_simulate.py" run "$scratch/plain.h5" --expect-drops
"$launch" 1 "$expar" simulate "${small[@]}" --skew 0.5 --capacity-factor 0 --schedule pairwise --group-size 2 \
    --log "$scratch/pairwise.h5" >/dev/null
"$python" "$cli_dir/check_simulate.py" run "$scratch/pairwise.h5"

echo "=== 2. a sweep over 2 MPI ranks, each point against the same point alone"
"$launch" 2 "$expar" simulate "${small[@]}" --sweep capacity-factor=1,1.5 --sweep schedule=plain,hierarchical \
    --skew 1.2 --log "$scratch/sweep.h5" | tee "$scratch/sweep.txt"
[ "$(grep -cE '^ +[0-3] ' "$scratch/sweep.txt")" = 4 ] || { echo "FAIL: expected 4 summary lines"; exit 1; }
point=0
for cf in 1 1.5; do
    for schedule in plain hierarchical; do
        "$launch" 1 "$expar" simulate "${small[@]}" --capacity-factor "$cf" --schedule "$schedule" --skew 1.2 \
            --log "$scratch/alone$point.h5" >/dev/null
        "$python" "$cli_dir/check_simulate.py" same "$scratch/sweep.h5:/sweep/$point" "$scratch/alone$point.h5:/sim"
        point=$((point + 1))
    done
done

echo "=== 3. replay of a trainer's routing log at another rank count"
"$launch" 2 "$expar" train --steps 3 --d-model 16 --num-heads 2 --num-layers 4 --moe-every 2 --d-ff-dense 32 \
    --d-ff 16 --seq-len 8 --batch-size 4 --synthetic-vocab 32 --synthetic-eval-sequences 4 --experts 4 \
    --log-routing-every 1 --log "$scratch/train.h5" >/dev/null
for layer in 0 1; do
    "$launch" 1 "$expar" simulate --topology "$topology_dir/local-2x2.yaml" --ranks 4 --steps 4 --experts 8 \
        --top-k 2 --d-model 64 --d-ff 128 --tokens-per-rank 100 --routing replay \
        --replay "$scratch/train.h5:/routing/counts" --replay-layer "$layer" --log "$scratch/replay$layer.h5" >/dev/null
    "$python" "$cli_dir/check_simulate.py" replay "$scratch/replay$layer.h5" "$scratch/train.h5" "$layer"
    "$python" "$cli_dir/check_simulate.py" run "$scratch/replay$layer.h5"
done
echo "ok: expar simulate"
