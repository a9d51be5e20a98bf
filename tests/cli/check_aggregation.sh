#!/usr/bin/env bash
# usage: tests/cli/check_aggregation.sh EXPAR TOPOLOGY_DIR
# Node-pair bundles against the exact graph (one flow per message) on routing drawn token by token, the
# traffic users simulate (uniform routing, 64 ranks = 8 DGX-H100 nodes, one forward + backward step):
# plain and hierarchical within 1%, pairwise never faster than exact and at most 5% slower (its stages
# wait for whole bundles: the bias the trust line states). Exit 1 on a violation.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR TOPOLOGY_DIR" >&2
    exit 2
fi
expar=$1
topology=$2/dgx-h100.yaml
case_args=(--topology "$topology" --precision bf16 --ranks 64 --experts 64 --top-k 2 --d-model 4096 --d-ff 14336
           --tokens-per-rank 4096 --steps 1)
step_us() {  # step_us SCHEDULE AGGREGATION: the mean layer step [us]
    "$expar" simulate "${case_args[@]}" --schedule "$1" --aggregation "$2" |
        sed -n 's/^# mean over .* layer step \([0-9.]*\) us.*/\1/p'
}
failures=0
for schedule in plain hierarchical pairwise; do
    exact=$(step_us "$schedule" none)
    bundled=$(step_us "$schedule" node-pair)
    [ -n "$exact" ] && [ -n "$bundled" ] || { echo "FAIL: $schedule: no step time in the output"; exit 1; }
    bias=$(awk -v a="$bundled" -v b="$exact" 'BEGIN { printf "%.4f", a / b - 1 }')
    case $schedule in
        pairwise) ok=$(awk -v x="$bias" 'BEGIN { print (x >= -1e-9 && x <= 0.05) }') ;;
        *) ok=$(awk -v x="$bias" 'BEGIN { print (x >= -0.01 && x <= 0.01) }') ;;
    esac
    if [ "$ok" = 1 ]; then
        echo "ok:   $schedule: bundled $bundled us, exact $exact us, bias $bias"
    else
        echo "FAIL: $schedule: bundled $bundled us, exact $exact us, bias $bias out of bounds"
        failures=$((failures + 1))
    fi
done
[ "$failures" -eq 0 ]
