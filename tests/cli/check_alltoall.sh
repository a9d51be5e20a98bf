#!/usr/bin/env bash
# usage: tests/cli/check_alltoall.sh EXPAR LAUNCH CLI_DIR
# Runs small `expar alltoall` sweeps at 4 ranks on 2 emulated nodes (uniform + zipf, then a matrix file
# with zeros), each with --log, and checks the files with CLI_DIR/check_alltoall.py: schema, every
# (pattern, size, schedule) present, no wrong float, bandwidth formulas and bytes per link class.
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
source "$(dirname "$0")/common.sh"
python=$(find_python)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0
schedules=plain,pairwise,hierarchical,mpi
sizes=16384,32768,65536
common=(--ranks-per-node 2 --row-bytes 1024 --min-bytes 16384 --max-bytes 65536 --step-factor 2 --iters 3
        --warmup-iters 1 --schedules "$schedules")

check_run() {  # check_run NAME PATTERNS [extra expar options...]
    local name=$1 patterns=$2 rc
    shift 2
    local log="$scratch/$name.h5"
    echo "=== $name: $launch 4 $expar alltoall ${common[*]} --pattern $patterns $* --log L.h5"
    set +e
    "$launch" 4 "$expar" alltoall "${common[@]}" --pattern "$patterns" "$@" --log "$log" \
        >"$scratch/$name.stdout" 2>"$scratch/$name.stderr"
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "FAIL: $name: expar alltoall exited $rc" >&2
        sed 's/^/    stdout: /' "$scratch/$name.stdout" >&2
        grep -v '^-*$' "$scratch/$name.stderr" | sed 's/^/    stderr: /' >&2
        failures=$((failures + 1))
        return 0
    fi
    sed -n '1,12p' "$scratch/$name.stdout" | sed 's/^/    | /'
    "$python" "$cli_dir/check_alltoall.py" "$log" 4 2 "$patterns" "$schedules" "$sizes" || failures=$((failures + 1))
}

# --help, run directly (an MPI singleton): exit 0, every option with its default (paths may be empty).
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
if OMPI_MCA_btl=self,vader "$expar" alltoall --help >"$scratch/help.out" 2>&1; then
    missing=$(grep -E '^[[:space:]]+--[a-z0-9-]+ arg' "$scratch/help.out" | grep -v '(=' |
        grep -Ev -- '--(config|log|matrix-file) arg' || true)
    options=$(grep -cE '^[[:space:]]+--[a-z0-9-]+ arg' "$scratch/help.out")
    if [ -z "$missing" ] && [ "$options" -ge 15 ]; then
        echo "ok:   expar alltoall --help lists $options options, each with its default"
    else
        echo "FAIL: expar alltoall --help: $options options; without a default: $missing" >&2
        failures=$((failures + 1))
    fi
else
    echo "FAIL: expar alltoall --help exited non-zero" >&2
    failures=$((failures + 1))
fi

check_run uniform_zipf uniform,zipf --zipf-s 1.2
printf '# weights: rank 3 sends nothing, nobody sends to rank 0\n0 1 2 3\n0 1 0 0\n0 5 5 1  # skewed\n0 0 0 0\n' \
    >"$scratch/matrix.txt"
check_run file file --matrix-file "$scratch/matrix.txt"

if [ "$failures" -ne 0 ]; then
    echo "check_alltoall: $failures check group(s) FAILED" >&2
    exit 1
fi
echo "check_alltoall: all checks passed"
