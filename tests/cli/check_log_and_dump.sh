#!/usr/bin/env bash
# usage: tests/cli/check_log_and_dump.sh EXPAR LAUNCH CLI_DIR
# Runs small `expar layer` jobs with --log and --dump (2 ranks: top-k gelu; 4 ranks: noisy-topk swiglu,
# larger loss coefficients) on a skewed, capacity-bound configuration so that assignments are dropped, then
# checks both files: h5dump can read them, CLI_DIR/check_log.py (schema, invariants) and
# CLI_DIR/check_dump.py (an independent numpy oracle of the forward and backward pass).
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 EXPAR LAUNCH CLI_DIR     e.g. $0 build/expar launch/local.sh tests/cli" >&2
    exit 2
fi
expar=$1
launch=$2
cli_dir=$3
[ -x "$expar" ] || { echo "FAIL: '$expar' is not an executable" >&2; exit 1; }
[ -x "$launch" ] || { echo "FAIL: '$launch' is not an executable" >&2; exit 1; }
for script in check_log.py check_dump.py; do
    [ -f "$cli_dir/$script" ] || { echo "FAIL: $cli_dir/$script not found" >&2; exit 1; }
done
command -v h5dump >/dev/null || { echo "FAIL: h5dump not found (Debian: apt-get install hdf5-tools)" >&2; exit 1; }

source "$(dirname "$0")/common.sh"
python=$(find_python)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0

experts=8
steps=3
warmup=1
steps_total=$((steps + warmup))
common=(--d-model 16 --d-ff 32 --tokens-per-rank 64 --experts "$experts" --steps "$steps" --warmup "$warmup"
        --skew 1.0 --capacity-factor 1.0)

check_run() {  # check_run NAME NRANKS [extra expar options...]
    local name=$1 nranks=$2
    shift 2
    local log="$scratch/$name.log.h5" dump="$scratch/$name.dump.h5" rc
    echo "=== $name: $launch $nranks $expar layer ${common[*]} $* --log L.h5 --dump D.h5"
    set +e
    "$launch" "$nranks" "$expar" layer "${common[@]}" "$@" --log "$log" --dump "$dump" \
        >"$scratch/$name.stdout" 2>"$scratch/$name.stderr"
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "FAIL: $name: expar layer exited $rc" >&2
        sed 's/^/    stdout: /' "$scratch/$name.stdout" >&2
        grep -v '^-*$' "$scratch/$name.stderr" | sed 's/^/    stderr: /' >&2
        failures=$((failures + 1))
        return 0
    fi
    head -n 1 "$scratch/$name.stdout" | sed 's/^/    | /'
    for file in "$log" "$dump"; do
        if h5dump -H "$file" >"$scratch/$name.h5dump" 2>&1; then
            echo "ok:   h5dump -H $(basename "$file") succeeds ($(grep -c DATASET "$scratch/$name.h5dump") datasets)"
        else
            echo "FAIL: h5dump -H $file failed:" >&2
            sed 's/^/    /' "$scratch/$name.h5dump" >&2
            failures=$((failures + 1))
        fi
    done
    for line in "log                 $log" "dump                $dump"; do
        grep -qF -- "$line" "$scratch/$name.stdout" || {
            echo "FAIL: $name: the summary does not name the file: '$line'" >&2
            failures=$((failures + 1))
        }
    done
    echo "--- $name: check_log.py $nranks ranks, $experts experts, $steps_total steps"
    "$python" "$cli_dir/check_log.py" "$log" "$nranks" "$experts" "$steps_total" --expect-drops || failures=$((failures + 1))
    echo "--- $name: check_dump.py"
    "$python" "$cli_dir/check_dump.py" "$dump" || failures=$((failures + 1))
}

check_run topk_gelu_2 2
check_run noisy_swiglu_4 4 --gate noisy-topk --activation swiglu --aux-loss-coef 0.1 --z-loss-coef 0.01
# Schedules and shadowing change how tokens travel, never the result: the same oracle must hold.
topology="$cli_dir/../../topology/local-2x2.yaml"
check_run pairwise_shadow_4 4 --ranks-per-node 2 --schedule pairwise --group-size 2 --topology "$topology" \
    --shadow true
check_run hierarchical_4 4 --ranks-per-node 2 --schedule hierarchical

if [ "$failures" -ne 0 ]; then
    echo "check_log_and_dump: $failures check group(s) FAILED" >&2
    exit 1
fi
echo "check_log_and_dump: all checks passed"
