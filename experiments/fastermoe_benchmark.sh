#!/usr/bin/env bash
# FasterMoE's schedules and shadowing on real ranks: P = 4 as 2 emulated nodes x 2 ranks, the reference
# layer configuration (experiments/layer_benchmark.ini) with routing skew, every schedule with and
# without shadowing; then the all-to-all table (experiments/alltoall.ini). Writes results/fastermoe_*.h5
# and prints each run's summary. Run from the repository root after launch/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results
common=(--config experiments/layer_benchmark.ini --skew "${SKEW:-1.0}" --ranks-per-node 2
        --topology topology/local-2x2.yaml --steps "${STEPS:-6}" --warmup 1)
for schedule in plain pairwise hierarchical; do
    for shadow in false true; do
        name="fastermoe_${schedule}_shadow-${shadow}"
        echo "=== $name"
        launch/local.sh 4 build/expar layer "${common[@]}" --schedule "$schedule" --group-size 2 \
            --shadow "$shadow" --log "results/$name.h5" | grep -E "^(step|throughput|dropped|shadowed|link|token exchange|forward/expert|backward/expert)"
    done
done
echo "=== all-to-all"
launch/local.sh 4 build/expar alltoall --config experiments/alltoall.ini --log results/fastermoe_alltoall.h5
