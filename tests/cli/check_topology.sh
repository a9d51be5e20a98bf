#!/usr/bin/env bash
# usage: tests/cli/check_topology.sh EXPAR LOCAL_SH TOPOLOGY_DIR
# `expar topology` on every shipped file at 2 ranks: exit status 0, one summary per file printed once (by
# rank 0 only), and the derived per-device bandwidths of two files as computed by hand.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 EXPAR LOCAL_SH TOPOLOGY_DIR" >&2
    exit 2
fi
expar=$1 local_sh=$2 dir=$3
out=$(mktemp)
trap 'rm -f "$out"' EXIT
files=("$dir"/*.yaml)
if ! "$local_sh" 2 "$expar" topology "${files[@]}" >"$out" 2>&1; then
    echo "FAIL: expar topology exited non-zero:"
    cat "$out"
    exit 1
fi
failures=0
for file in "${files[@]}"; do
    name=$(basename "$file" .yaml)
    count=$(grep -c "^$name ($file)" "$out" || true)
    if [ "$count" -ne 1 ]; then
        echo "FAIL: expected one summary of $file, found $count"
        failures=$((failures + 1))
    fi
done
# dgx-h100: 8 NICs × 400 Gb/s (50 GB/s) over 8 GPUs; johnny: one 50 Gb/s NIC (6.25 GB/s) over 8 GPUs.
for expected in "network share 50 GB/s, local 450 GB/s" "network share 0.78125 GB/s, local 16 GB/s"; do
    if ! grep -qF "$expected" "$out"; then
        echo "FAIL: output lacks '$expected'"
        failures=$((failures + 1))
    fi
done
if [ "$failures" -ne 0 ]; then
    cat "$out"
    exit 1
fi
echo "check_topology: ${#files[@]} files described"
