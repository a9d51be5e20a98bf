#!/usr/bin/env bash
# usage: tests/cli/check_config_file.sh EXPAR LAUNCH
# Checks `expar layer --config FILE`: values from the INI file are used, the command line wins over the
# file, and the effective options are what the printed summary and the --log file's root attributes say.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR LAUNCH     e.g. $0 build/expar launch/local.sh" >&2
    exit 2
fi
expar=$1
launch=$2
[ -x "$expar" ] || { echo "FAIL: '$expar' is not an executable" >&2; exit 1; }
[ -x "$launch" ] || { echo "FAIL: '$launch' is not an executable" >&2; exit 1; }

source "$(dirname "$0")/common.sh"
python=$(find_python)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cat >"$scratch/layer.ini" <<'EOF'
# expar layer options as key = value; the command line wins.
experts = 4
top-k = 1
d-model = 16
d-ff = 32
tokens-per-rank = 32
steps = 2
warmup = 0
capacity-factor = 3.0
activation = relu
EOF

log="$scratch/out.h5"
echo "running: $launch 2 $expar layer --config $scratch/layer.ini --experts 8 --log $log"
set +e
"$launch" 2 "$expar" layer --config "$scratch/layer.ini" --experts 8 --log "$log" >"$scratch/stdout" 2>"$scratch/stderr"
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "FAIL: expar layer --config exited $rc" >&2
    sed 's/^/    stdout: /' "$scratch/stdout" >&2
    sed 's/^/    stderr: /' "$scratch/stderr" >&2
    exit 1
fi
sed 's/^/    | /' "$scratch/stdout"

failures=0
summary=$(head -n 1 "$scratch/stdout")
for pattern in '2 ranks' 'E=8 k=1' 'cf=3 ' 'd_model=16 d_ff=32 relu' '32 tokens/rank' '2 steps \(\+0 warm-up\)'; do
    if grep -Eq -- "$pattern" <<<"$summary"; then
        echo "ok:   summary mentions /$pattern/"
    else
        echo "FAIL: summary line does not mention /$pattern/: $summary" >&2
        failures=$((failures + 1))
    fi
done

# Root attributes of the log: option values as strings, named like the options.
if ! "$python" - "$log" <<'EOF'
import sys
import h5py

path = sys.argv[1]
expected = {
    "experts": 8,              # command line beats the file's 4
    "top-k": 1,                # from the file (default 2)
    "d-model": 16,             # from the file (default 512)
    "d-ff": 32,                # from the file
    "tokens-per-rank": 32,     # from the file
    "steps": 2,                # from the file
    "warmup": 0,               # from the file
    "capacity-factor": 3.0,    # from the file (default 1.25)
    "activation": "relu",      # from the file (default gelu)
    "gate": "topk",            # neither: the default
    "num_ranks": 2,
}
failures = 0
with h5py.File(path, "r") as f:
    attrs = f.attrs
    for key, want in expected.items():
        if key not in attrs:
            print(f"FAIL: root attribute '{key}' missing from {path}", file=sys.stderr)
            failures += 1
            continue
        raw = attrs[key]
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        try:
            got = type(want)(float(text)) if isinstance(want, (int, float)) else text
        except ValueError:
            got = text
        if got == want:
            print(f"ok:   attribute {key} = {text!r}")
        else:
            print(f"FAIL: attribute {key} = {text!r}, expected {want!r}", file=sys.stderr)
            failures += 1
    config = attrs.get("config", b"")
    config = config.decode() if isinstance(config, bytes) else str(config)
    if not config.endswith("layer.ini"):
        print(f"FAIL: attribute config = {config!r}, expected the INI path", file=sys.stderr)
        failures += 1
    else:
        print(f"ok:   attribute config = {config!r}")
    steps = f["/steps/step"][...]
    if list(steps) != [0, 1]:
        print(f"FAIL: /steps/step = {list(steps)}, expected [0, 1] (steps = 2, warmup = 0 from the file)",
              file=sys.stderr)
        failures += 1
    else:
        print("ok:   /steps/step = [0, 1]")
    E = f["/experts/requested"].shape[1]
    if E != 8:
        print(f"FAIL: /experts/requested has {E} experts, expected 8", file=sys.stderr)
        failures += 1
    else:
        print("ok:   /experts/requested has 8 expert columns")
sys.exit(1 if failures else 0)
EOF
then
    failures=$((failures + 1))
fi

# A config file that does not exist is an error, reported once, with a non-zero exit.
set +e
"$launch" 2 "$expar" layer --config "$scratch/missing.ini" >"$scratch/missing.out" 2>&1
rc=$?
set -e
if [ "$rc" -ne 0 ] && grep -q "cannot read config file" "$scratch/missing.out"; then
    echo "ok:   missing config file exits $rc with: $(grep -m1 'cannot read' "$scratch/missing.out")"
else
    echo "FAIL: missing config file: expected a non-zero exit and 'cannot read config file', got rc=$rc:" >&2
    sed 's/^/    /' "$scratch/missing.out" >&2
    failures=$((failures + 1))
fi

# A list option (simulate's --sweep) given on the command line replaces the file's, not adds to it.
topology="$(cd "$(dirname "$0")/../.." && pwd)/topology/trevor.yaml"
printf 'topology = %s\nexperts = 64\nsteps = 1\nsweep = capacity-factor=1,2\n' "$topology" >"$scratch/sim.ini"
"$expar" simulate --config "$scratch/sim.ini" --sweep seed=1,2,3 >"$scratch/sim.out" 2>&1 || true
if grep -q "^# sweep: 3 points" "$scratch/sim.out" && grep -q "^# point seed " "$scratch/sim.out"; then
    echo "ok:   --sweep on the command line replaces the config file's: $(grep -m1 '^# sweep:' "$scratch/sim.out")"
else
    echo "FAIL: expected the command line's 3-point seed sweep alone, got:" >&2
    grep -E '^# (sweep|point)' "$scratch/sim.out" | sed 's/^/    /' >&2
    failures=$((failures + 1))
fi

if [ "$failures" -ne 0 ]; then
    echo "check_config_file: $failures check(s) FAILED" >&2
    exit 1
fi
echo "check_config_file: all checks passed"
