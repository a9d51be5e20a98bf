#!/usr/bin/env bash
# usage: experiments/identity/run.sh EXPAR OUTDIR
# A fixed set of deterministic runs whose outputs must not change under a refactoring: `expar layer`
# dumps (every schedule, shadowing, the topology gate, node-limited routing, probs/global capacity,
# dropless), an `expar train` dump, and `expar simulate` logs and tables (uniform and Zipf traffic, every
# schedule, shadowing, aggregation). Compare two output folders with compare.py.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR OUTDIR     e.g. $0 build/expar /tmp/identity-before" >&2
    exit 2
fi
expar=$(realpath "$1")
mkdir -p "$2"
out=$(realpath "$2")
# Inputs by paths relative to the repository root, so that outputs made in two checkouts compare equal.
cd "$(dirname "$0")/../.."
launch=launch/local.sh
topo=topology

small=(--d-model 16 --d-ff 32 --tokens-per-rank 64 --experts 8 --warmup 0 --skew 1.0)
layer() {  # layer NAME NRANKS STEPS [options...]
    local name=$1 np=$2 steps=$3
    shift 3
    echo "layer $name ($np ranks)"
    "$launch" "$np" "$expar" layer "${small[@]}" --steps "$steps" "$@" --dump "$out/layer_$name.h5" >/dev/null
}
layer plain_2 2 2 --capacity-factor 1.0
layer plain_1 1 2 --capacity-factor 1.0
layer noisy_swiglu_4 4 2 --gate noisy-topk --activation swiglu --aux-loss-coef 0.1 --z-loss-coef 0.01 --capacity-factor 1.0
layer switch_lr_4 4 3 --gate switch --lr 0.1 --capacity-factor 1.0
layer gshard_4 4 2 --gate gshard --capacity-factor 1.0
layer pairwise_shadow_4 4 2 --ranks-per-node 2 --schedule pairwise --group-size 2 --topology "$topo/local-2x2.yaml" --shadow true --capacity-factor 1.0
layer hierarchical_gate_4 4 2 --ranks-per-node 2 --schedule hierarchical --topology "$topo/local-2x2.yaml" --gate-topology fastermoe --capacity-factor 1.0
layer node_limit_bias_4 4 3 --ranks-per-node 2 --node-limit 1 --router-bias 0.01 --capacity-factor 1.0
layer probs_global_4 4 2 --capacity-scope global --drop-policy probs --capacity-factor 1.0
layer probs_local_2 2 2 --drop-policy probs --capacity-factor 0.5
layer dropless_pairwise_4 4 2 --capacity-factor 0 --schedule pairwise --group-size 1

echo "train (2 ranks)"
"$launch" 2 "$expar" train --config experiments/quickstart.ini --steps 3 --eval-every 0 \
    --dump "$out/train_2.h5" >/dev/null

sim() {  # sim NAME [options...]: the log and the table (less the wall time and the trust notes)
    local name=$1
    shift
    echo "simulate $name"
    "$expar" simulate "$@" --log "$out/sim_$name.h5" | sed -e '/^# simulation:/d' -e '/^# trust:/,$d' >"$out/sim_$name.txt"
}
sim h100_plain --topology "$topo/dgx-h100.yaml" --ranks 16 --experts 16 --steps 2
sim h100_pairwise_zipf --topology "$topo/dgx-h100.yaml" --ranks 64 --experts 64 --top-k 2 --routing zipf --skew 1.0 --schedule pairwise --steps 2
sim h100_hier_shadow --topology "$topo/dgx-h100.yaml" --ranks 32 --experts 64 --schedule hierarchical --shadow true --routing zipf --skew 1.2 --steps 2
sim a100_probs_global --topology "$topo/dgx-a100.yaml" --ranks 16 --experts 32 --capacity-scope global --drop-policy probs --routing dirichlet --steps 2
sim a100_gate_topology --topology "$topo/dgx-a100.yaml" --ranks 32 --experts 64 --top-k 4 --gate-topology fastermoe --steps 2
sim a100_node_limit --topology "$topo/dgx-a100.yaml" --ranks 32 --experts 64 --top-k 4 --node-limit 2 --router-bias 0.01 --steps 2
sim h100_aggregate_256 --topology "$topo/dgx-h100.yaml" --ranks 256 --experts 256 --top-k 8 --routing zipf --skew 0.8 --steps 1
sim mixtral_trevor --topology "$topo/trevor.yaml" --model mixtral-8x7b --ranks 8 --schedule pairwise --shadow true --steps 2
echo "outputs in $out"
