#!/usr/bin/env bash
# FasterMoE's published direction on its trevor cluster, simulated (experiments/fastermoe_trevor.md): an MoE-BERT-Wide-like
# layer (experiments/fastermoe_trevor.ini) on topology/trevor.yaml, 64 experts on 64 simulated ranks:
#   (a) smart scheduling (pairwise) against plain, next to its bound;
#   (b) shadowing under Zipf skew, alone and with the smart schedule;
#   (c) the topology gate's cut in cross-node bytes.
# Each is one `expar simulate --sweep` spread over NP MPI ranks (default 2); experiments/fastermoe_trevor.py
# merges the logs into results/fastermoe_trevor.h5 and prints the markdown table (stdout; the sweeps' own
# tables go to stderr). About a minute on 2 cores. Run from anywhere after building build/expar.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results
source tests/cli/common.sh
python=$(find_python)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sim() { launch/local.sh "${NP:-2}" build/expar simulate --config experiments/fastermoe_trevor.ini "$@" >&2; }

sim --sweep schedule=plain,pairwise --log "$work/schedule.h5"
sim --routing zipf --sweep skew=0,0.5,1,1.5,2 --sweep shadow=false,true --sweep schedule=plain,pairwise \
    --log "$work/shadow.h5"
# The topology gate works on tokens, so routing goes through the real gate (gate path).
sim --routing-path gate --sweep gate-topology=none,fastermoe --log "$work/gate.h5"
"$python" experiments/fastermoe_trevor.py "$work/schedule.h5" "$work/shadow.h5" "$work/gate.h5" \
    results/fastermoe_trevor.h5
