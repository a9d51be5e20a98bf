#!/usr/bin/env bash
# usage: experiments/scale.sh [SIM_SCALE_BENCH]      (default build/sim_scale_bench)
# The simulator's scale benchmark (docs/simulator.md, "Scale"; measurement history: experiments/scale.md):
# one process per case, each schedule under uniform (skew 0) and Zipf-skewed (skew 1.2) traffic.
# RANKS (default 4096) and TOKENS (tokens per rank, default 4096) set the size; 16,384 ranks:
# RANKS=16384 TOKENS=16384 experiments/scale.sh (about 2 minutes and up to 3.7 GiB per case).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=${1:-$root/build/sim_scale_bench}
if [ ! -x "$bench" ]; then
    echo "error: $bench not found; build it: cmake --build build --target sim_scale_bench" >&2
    exit 2
fi
bench=$(realpath "$bench")
cd "$root"  # the benchmark's default topology is topology/dgx-h100.yaml
ranks=${RANKS:-4096} tokens=${TOKENS:-4096}
for skew in 0 1.2; do
    for schedule in plain pairwise hierarchical; do
        "$bench" --ranks "$ranks" --tokens "$tokens" --schedule "$schedule" --skew "$skew"
    done
done
