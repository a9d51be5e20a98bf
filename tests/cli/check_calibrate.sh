#!/usr/bin/env bash
# usage: tests/cli/check_calibrate.sh EXPAR LOCAL_SH TOPOLOGY_DIR
# `expar calibrate` at 4 ranks as 2 emulated nodes, small sizes: the written topology file loads with
# `expar topology` (the same loader as the simulator), and its calibration block has positive latency and
# bandwidth for both link classes, an all-to-all efficiency table, positive GEMM (all ranks, one alone) and
# router rates, an exchange wait >= 0, and the ranks sharing this host's cores. Then with --base: the
# base file's name and nodes are kept and only the calibration block is new.
set -euo pipefail
if [ $# -ne 3 ]; then
    echo "usage: $0 EXPAR LOCAL_SH TOPOLOGY_DIR" >&2
    exit 2
fi
expar=$1 local_sh=$2 dir=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
small=(--max-bytes 65536 --a2a-max-bytes 16384 --pingpong-iters 5 --a2a-iters 3 --repetitions 3
       --d-model 64 --d-ff 128 --gemm-tokens 64)
fail() {
    echo "FAIL: $*"
    [ -f "$work/describe.txt" ] && cat "$work/describe.txt"
    exit 1
}
# A line "    KEY: A GB/s, B us" of the describe output: both numbers must be > 0.
check_link() {
    local key=$1
    local line
    line=$(grep -E "^    $key: " "$work/describe.txt") || fail "no calibrated $key link"
    echo "$line" | awk -v key="$key" '{ if (!($2 + 0 > 0 && $4 + 0 > 0)) { print "FAIL: " key " not positive: " $0; exit 1 } }'
}

"$local_sh" 4 "$expar" calibrate --ranks-per-node 2 "${small[@]}" --out "$work/cal.yaml" >"$work/run.txt" 2>&1 ||
    { cat "$work/run.txt"; fail "expar calibrate exited non-zero"; }
grep -q "point-to-point across nodes" "$work/run.txt" || fail "no inter-node measurement printed"
"$local_sh" 1 "$expar" topology "$work/cal.yaml" >"$work/describe.txt" 2>&1 || fail "the written file does not load"
grep -q "^calibrated ($work/cal.yaml): measured by expar calibrate" "$work/describe.txt" || fail "name"
grep -q "nodes x devices: 2 x 2 = 4 devices" "$work/describe.txt" || fail "2 nodes x 2 ranks expected"
check_link intra
check_link nic
grep -qE "all-to-all efficiency \(bytes per peer: efficiency\): 1024: [0-9.e+-]+ 4096: [0-9.e+-]+ 16384: " \
    "$work/describe.txt" || fail "all-to-all efficiency table"
rate=$(grep -E "^    GEMM rate: " "$work/describe.txt" | awk '{ print $3 }')
awk -v r="$rate" 'BEGIN { exit !(r + 0 > 0) }' || fail "GEMM rate '$rate' not positive"
alone=$(grep -E "^    GEMM rate alone: " "$work/describe.txt" | awk '{ print $4 }')
awk -v r="$alone" 'BEGIN { exit !(r + 0 > 0) }' || fail "GEMM rate alone '$alone' not positive"
wait_us=$(grep -E "^    exchange after compute: " "$work/describe.txt" | awk '{ print $4 }')
awk -v w="$wait_us" 'BEGIN { exit !(w != "" && w + 0 >= 0) }' || fail "exchange wait '$wait_us' missing or negative"
grep -E "^    router: " "$work/describe.txt" | awk '{ if (!($2 + 0 > 0 && $5 + 0 > 0)) exit 1 }' ||
    fail "router rates not positive"
# Every rank of this run is on this host: 4 ranks on the cores they may use.
cores=$(nproc)
grep -q "^    4 ranks share each host's $cores cores" "$work/describe.txt" || fail "shared cores: 4 ranks, $cores cores"
grep -qE "^  when: [0-9]{4}-[0-9]{2}-[0-9]{2}T" "$work/cal.yaml" || fail "no ISO date in 'when'"
grep -q "how: \"expar calibrate --ranks-per-node 2" "$work/cal.yaml" || fail "no command line in 'how'"

# --base keeps the base file's description and replaces only the calibration block.
"$local_sh" 2 "$expar" calibrate --ranks-per-node 1 --base "$dir/local.yaml" "${small[@]}" \
    --out "$work/base.yaml" >"$work/run.txt" 2>&1 || { cat "$work/run.txt"; fail "calibrate --base exited non-zero"; }
"$local_sh" 1 "$expar" topology "$work/base.yaml" >"$work/describe.txt" 2>&1 || fail "the --base output does not load"
grep -q "^local ($work/base.yaml)" "$work/describe.txt" || fail "base name not kept"
grep -q "calibration: .*, on local, by \`expar calibrate --ranks-per-node 1 --base" "$work/describe.txt" ||
    fail "calibration block of the --base run"
check_link nic
grep -q "GEMM efficiency: " "$work/describe.txt" || fail "no GEMM efficiency against the base's dense rate"
[ "$(grep -c '^calibration:' "$work/base.yaml")" -eq 1 ] || fail "more than one calibration block"
echo "ok: calibrate wrote loadable topology files"
