#!/usr/bin/env bash
# The simulator against measured `expar layer` runs on this machine (docs/simulator.md, "Validation on this
# machine"; results and their history: experiments/validation.md).
#   (a) before each round of a case's runs, `expar calibrate` at its rank count and ranks per node (2, 4, 8 ranks on this
#       machine's 2 cores: the GEMM rate, the links, the all-to-all efficiency and the row work all depend
#       on how many ranks share the cores, and on what else runs), GEMM on the case's rows per expert; no
#       --base: every figure measured, dense_rate = the GEMM rate of P ranks computing at once. The files
#       are kept in results/validation.h5 (configs/topology_yaml);
#   (b) CASES x {plain, pairwise, hierarchical} measured `expar layer` runs (--log), P = 2, 4, 8, emulated
#       nodes (--ranks-per-node) from P = 4; a case's three schedules measured in turn, ROUNDS (3) times;
#   (c) `expar simulate` of each round on that round's calibrated topology, same ranks, ranks per node,
#       layer options and steps, routing replayed from the round's measured per-expert counts
#       (/experts/requested), so the comparison is of time, not of routing draws; rounds pooled;
#   (d) experiments/validation.py: errors per layer and per phase, schedule picks -> results/validation.h5
#       and a markdown table on stdout.
# About 11 minutes on 2 idle cores (15 with OLD_EXPAR). Run from anywhere after building build/expar. STEPS (timed steps per
# run, 5), ROUNDS (3), TOKENS (tokens per rank, 4096), ONLY (numbers 0-5 of the cases to run, e.g. "4 5"), OUT (the
# HDF5 file, results/validation.h5) and KEEP=1 (keep the work directory) may be set. OLD_EXPAR=PATH (another
# build's expar) runs an A/B of calibrations on the same measurements: each round is calibrated by both
# binaries back to back (which goes first alternates by round), the same measured runs are predicted from
# both (build/expar simulates), and the other binary's analysis goes to OUT.old.h5 and after the table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OLD_EXPAR:-}" ] && [ ! -x "$OLD_EXPAR" ]; then
    echo "validation.sh: error: OLD_EXPAR=$OLD_EXPAR is not an executable file" >&2
    exit 2
fi
mkdir -p results
source tests/cli/common.sh
python=$(find_python)
work=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] && echo "# work directory $work" >&2 || trap 'rm -rf "$work"' EXIT
steps=${STEPS:-5}
warmup=1
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# load average at start: $load_start" >&2

# The layer: 4,096 tokens per rank (8 ranks on 2 cores take about a second per step), so that a rank's
# expert blocks run longer than the time slice the OS gives each of 4 ranks on a core. At 1,024 tokens
# the per-layer error was 20-23% against 12-18% at 4,096, before the calibration fixes of 2026-12-02
# (docs/simulator.md, Validation).
tokens=${TOKENS:-4096}
shape=(--experts 8 --d-model 256 --d-ff 512 --activation gelu --tokens-per-rank "$tokens")
out=${OUT:-results/validation.h5}

# Other jobs share the cores: before each measurement wait (up to 60 s) for a second in which the cores
# are at least 85% idle (/proc/stat, the whole machine), so the load is mostly ours.
busy_percent() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 1
    read -r -a b < <(head -1 /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    local idle=$((b[4] - a[4] + b[5] - a[5]))
    echo $((100 * (total - idle) / (total > 0 ? total : 1)))
}
wait_quiet() {
    local tries=0 busy
    while busy=$(busy_percent) && [ "$busy" -gt 15 ] && [ $tries -lt 60 ]; do tries=$((tries + 1)); done
    echo "$busy"
}
# (a) calibration at the case's rank count, before each round of its runs: this machine's speed moves by
# up to 2x over tens of seconds (a Firecracker guest on a shared host), so each round is predicted from a
# calibration taken next to it, and the rounds' predicted steps are pooled as their measured steps are.
# The GEMM on the real shapes: the layer computes block by block, one (local expert, source rank) block at a
# time (moe_layer.cpp compute_source), T k / E rows on average.
# The all-to-all sweep up to 4 MiB per peer: the largest exchange, case 1's (P 2, k 2), sends 4,096 · 2 / 2
# rows of 1 KiB to its peer; with --step-factor 4 a 2 MiB limit stopped the sweep at 1 MiB, and the model
# holds the efficiency flat past the last point.
calibrate() {
    local P=$1 rpn=$2 k=$3 c=$4 round=$5
    local args=(calibrate --ranks-per-node "$rpn" --a2a-max-bytes 4194304 --a2a-iters 10 --repetitions 15 --d-model 256
        --d-ff 512 --activation gelu --gemm-tokens $((tokens * k / 8)) --experts 8 --top-k "$k" --gate-tokens "$tokens")
    echo "# calibrate $P ranks (busy $(wait_quiet)%)" >&2
    if [ -n "${OLD_EXPAR:-}" ] && [ $((round % 2)) = 1 ]; then
        launch/local.sh "$P" "$OLD_EXPAR" "${args[@]}" --out "$work/topology_old_$c.yaml" >&2
    fi
    launch/local.sh "$P" build/expar "${args[@]}" --out "$work/topology_$c.yaml" >&2
    if [ -n "${OLD_EXPAR:-}" ] && [ $((round % 2)) = 0 ]; then
        launch/local.sh "$P" "$OLD_EXPAR" "${args[@]}" --out "$work/topology_old_$c.yaml" >&2
    fi
}
# Repeated runs: each case's schedules are measured in turn, ROUNDS times (plain, pairwise, hierarchical,
# plain, ...), and each configuration's timed steps are pooled over its rounds, so that a slow drift of the
# machine (other jobs, clocks) falls on every schedule alike instead of deciding the schedule picks.
rounds=${ROUNDS:-3}

# (b, c) cases: P ranks-per-node capacity-factor skew k.
cases=(
    "2 2 1.0 0.0 1"
    "2 2 2.0 1.5 2"
    "4 2 1.25 0.5 2"
    "4 2 2.0 1.0 1"
    "8 2 1.5 0.0 2"
    "8 4 1.0 1.5 1"
)
manifest="$work/manifest.txt"
: >"$manifest"
schedules=(plain pairwise hierarchical)
i=0
case_index=0
for c in "${cases[@]}"; do
    read -r P rpn cf skew k <<<"$c"
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $case_index "* ]]; then
        case_index=$((case_index + 1))
        continue
    fi
    for round in $(seq 1 "$rounds"); do
        calibrate "$P" "$rpn" "$k" "${case_index}_$round" "$round"
        for s in 0 1 2; do
            # The simulator replays the measured routing, so --skew is the layer's alone.
            layer_cmd=(build/expar layer "${shape[@]}" --top-k "$k" --capacity-factor "$cf" --schedule "${schedules[$s]}"
                --skew "$skew" --ranks-per-node "$rpn" --steps "$steps" --warmup "$warmup" --seed 1)
            echo "# [$((i + s))] round $round, busy $(wait_quiet)%, load $(cut -d' ' -f1 /proc/loadavg): launch/local.sh $P ${layer_cmd[*]}" >&2
            launch/local.sh "$P" "${layer_cmd[@]}" --log "$work/measured_$((i + s))_$round.h5" >"$work/layer_$((i + s))_$round.txt"
        done
    done
    for s in 0 1 2; do
        schedule=${schedules[$s]}
        opts=("${shape[@]}" --top-k "$k" --capacity-factor "$cf" --schedule "$schedule")
        layer_cmd=(build/expar layer "${opts[@]}" --skew "$skew" --ranks-per-node "$rpn" --steps "$steps" --warmup "$warmup"
            --seed 1)
        measured=$(seq -f "$work/measured_${i}_%g.h5" 1 "$rounds" | paste -sd,)
        simulated=$(seq -f "$work/simulated_${i}_%g.h5" 1 "$rounds" | paste -sd,)
        topologies=$(seq -f "$work/topology_${case_index}_%g.yaml" 1 "$rounds" | paste -sd,)
        # Each round is simulated on its own calibration with its own measured routing.
        for round in $(seq 1 "$rounds"); do
            replay="$work/replay_${i}_$round.h5"
            "$python" experiments/validation.py replay "$work/measured_${i}_$round.h5" "$replay"
            sim_args=(--ranks "$P" --ranks-per-node "$rpn" "${opts[@]}" --dtype-bytes 4 --routing replay
                --replay "$replay:/counts" --steps $((steps + warmup)) --seed 1)
            sim_cmd=(build/expar simulate --topology "$work/topology_${case_index}_$round.yaml" "${sim_args[@]}"
                --log "$work/simulated_${i}_$round.h5")
            "${sim_cmd[@]}" >"$work/simulate_${i}_$round.txt"
            if [ -n "${OLD_EXPAR:-}" ]; then
                build/expar simulate --topology "$work/topology_old_${case_index}_$round.yaml" "${sim_args[@]}" \
                    --log "$work/simulated_old_${i}_$round.h5" >/dev/null
            fi
        done
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$P" "$rpn" "$cf" "$skew" "$k" "$schedule" \
            "$measured" "$simulated" "launch/local.sh $P ${layer_cmd[*]} --log FILE.h5" \
            "$(sed -E "s/_$rounds\.(yaml|h5)/_ROUND.\1/g" <<<"${sim_cmd[*]}")" "$topologies" >>"$manifest"
        if [ -n "${OLD_EXPAR:-}" ]; then
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$P" "$rpn" "$cf" "$skew" "$k" "$schedule" \
                "$measured" "${simulated//simulated_/simulated_old_}" "(as above)" "(as above, on the other calibration)" \
                "${topologies//topology_/topology_old_}" >>"$work/manifest_old.txt"
        fi
        i=$((i + 1))
    done
    case_index=$((case_index + 1))
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# load average at end: $load_end" >&2
"$python" experiments/validation.py analyse "$manifest" "$out" \
    --load-start "$load_start" --load-end "$load_end" --warmup "$warmup"
if [ -n "${OLD_EXPAR:-}" ]; then
    echo
    echo "## The same measured runs, predicted from $OLD_EXPAR's calibrations"
    "$python" experiments/validation.py analyse "$work/manifest_old.txt" "$out.old.h5" \
        --load-start "$load_start" --load-end "$load_end" --warmup "$warmup"
fi
