#!/usr/bin/env bash
# usage: expect_error.sh NRANKS "expected message" EXPAR ARGS...
# Passes when `expar` run on NRANKS ranks exits non-zero within the time limit, with exactly one
# "expar: error:" line that contains the expected message (one clear line, not one per rank).
set -uo pipefail
nranks=$1
expected=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# mpirun waits odls_base_sigkill_timeout (1 s) before it reaps a job whose rank exited non-zero, 2 s on
# one rank: about a minute of the suite's error cases. The exit status and the messages do not change.
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-0}"
timeout 120 "$here/../../launch/local.sh" "$nranks" "$@" >"$out" 2>&1
status=$?
if [ "$status" -eq 124 ]; then
    echo "FAIL: timed out (hang) running: $*"
    exit 1
fi
if [ "$status" -eq 0 ]; then
    echo "FAIL: exit status 0, expected an error, running: $*"
    cat "$out"
    exit 1
fi
lines=$(grep -c "expar: error" "$out" || true)
if [ "$lines" -ne 1 ]; then
    echo "FAIL: expected exactly one 'expar: error' line, got $lines:"
    cat "$out"
    exit 1
fi
if ! grep -qF -- "$expected" "$out"; then
    echo "FAIL: error message does not contain: $expected"
    cat "$out"
    exit 1
fi
echo "ok (exit status $status): $(grep "expar: error" "$out")"
