#!/usr/bin/env bash
# usage: tests/cli/check_help.sh EXPAR
# Checks `expar --help` and `expar layer --help` (run directly, as MPI singletons): exit status 0, the
# `layer` command listed, every option shown with its default and the documented units; and that a bad
# command or option exits non-zero with a message.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 EXPAR" >&2
    exit 2
fi
expar=$1
[ -x "$expar" ] || { echo "FAIL: '$expar' is not an executable" >&2; exit 1; }

# Open MPI refuses to start (even a singleton) as root unless told it may.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
pass() { echo "ok:   $*"; }
label_of() { if [ "$1" = layer ]; then echo "expar layer --help"; else echo "expar --help"; fi; }

run_capture() {  # run_capture NAME CMD... -> $scratch/NAME.out (stdout+stderr), $scratch/NAME.rc
    local name=$1
    shift
    set +e
    "$@" >"$scratch/$name.out" 2>&1
    echo $? >"$scratch/$name.rc"
    set -e
}

run_capture top "$expar" --help
run_capture layer "$expar" layer --help

for name in top layer; do
    rc=$(cat "$scratch/$name.rc")
    label=$(label_of "$name")
    if [ "$rc" = 0 ]; then
        pass "$label exits 0"
    else
        fail "$label exited $rc; output:"
        sed 's/^/    /' "$scratch/$name.out" >&2
    fi
done

# The top-level help names the layer command.
if grep -Eq '^[[:space:]]+layer[[:space:]]' "$scratch/top.out"; then
    pass "expar --help lists the 'layer' command"
else
    fail "expar --help does not list the 'layer' command"
fi

# Every option line must show a default "(=...)", except those whose default is empty (a path).
empty_default_ok=" config log dump topology "
check_option_defaults() {  # check_option_defaults OUTFILE LABEL
    local out=$1 label=$2 n=0 line name
    while IFS= read -r line; do
        name=$(sed -E 's/^[[:space:]]+(-[a-zA-Z] \[ )?--([a-z0-9-]+).*/\2/' <<<"$line")
        [ "$name" = help ] && continue
        n=$((n + 1))
        if [[ "$line" =~ --$name( \])?\ arg\ \(=[^\)]*\) ]]; then
            :
        elif [[ "$empty_default_ok" == *" $name "* ]] && [[ "$line" =~ --$name\ arg ]]; then
            :
        else
            fail "$label: option --$name is listed without its default: '$line'"
        fi
    done < <(grep -E '^[[:space:]]+(-[a-zA-Z] \[ )?--[a-z0-9-]+' "$out")
    if [ "$n" -lt 20 ]; then
        fail "$label: only $n options found in the help (expected the full layer option list)"
    else
        pass "$label: all $n listed options show a default (or are paths with an empty default)"
    fi
}
check_option_defaults "$scratch/layer.out" "expar layer --help"
check_option_defaults "$scratch/top.out" "expar --help"

# Every option of `expar layer` that docs and scripts rely on.
required_options=(config experts top-k gate renormalize capacity-factor capacity-scope drop-policy d-model d-ff
                  activation expert-bias tokens-per-rank skew aux-loss-coef z-loss-coef steps warmup seed lr log
                  log-flush-every dump blas-threads inject-nan-step schedule group-size ranks-per-node topology
                  gate-topology node-limit router-bias shadow shadow-max-experts)
for out in layer top; do
    missing=()
    for option in "${required_options[@]}"; do
        grep -Eq -- "--$option( \])? arg" "$scratch/$out.out" || missing+=("--$option")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        pass "$(label_of "$out") lists all ${#required_options[@]} layer options"
    else
        fail "$(label_of "$out") is missing: ${missing[*]}"
    fi
done

# Specific defaults (docs/layer.md and config.h) and the units in the help text.
for pattern in '--capacity-factor arg \(=1\.25\)' '--experts arg \(=8\)' '--top-k arg \(=2\)' '--gate arg \(=topk\)' \
               '--capacity-scope arg \(=local\)' '--drop-policy arg \(=position\)' '--activation arg \(=gelu\)' \
               '--log-flush-every arg \(=1\)' '--inject-nan-step arg \(=-1\)' \
               '\[elements\]' '\[tokens\]' '\[steps\]' '\[threads\]' 'docs/hdf5\.md'; do
    if grep -Eq -- "$pattern" "$scratch/layer.out"; then
        pass "expar layer --help matches /$pattern/"
    else
        fail "expar layer --help does not match /$pattern/"
    fi
done

# Float defaults as typed: `expar train --help` once showed --lr (=0.00100000005).
run_capture train "$expar" train --help
for pattern in '--lr arg \(=0\.001\)' '--weight-decay arg \(=0\.1\)' '--min-lr-ratio arg \(=0\.1\)' \
               '--init-std arg \(=0\.02\)'; do
    if grep -Eq -- "$pattern" "$scratch/train.out"; then
        pass "expar train --help matches /$pattern/"
    else
        fail "expar train --help does not match /$pattern/: $(grep -E -- "${pattern%% *}" "$scratch/train.out")"
    fi
done

# Errors: unknown command and unknown option exit non-zero with a message on stderr.
run_capture badcmd "$expar" no-such-command
run_capture badopt "$expar" layer --no-such-option 1
for name in badcmd badopt; do
    rc=$(cat "$scratch/$name.rc")
    if [ "$rc" != 0 ] && grep -q 'error' "$scratch/$name.out"; then
        pass "$name exits $rc with: $(grep -m1 error "$scratch/$name.out")"
    else
        fail "$name: expected a non-zero exit and an error message, got rc=$rc:"
        sed 's/^/    /' "$scratch/$name.out" >&2
    fi
done

if [ "$failures" -ne 0 ]; then
    echo "check_help: $failures check(s) FAILED" >&2
    exit 1
fi
echo "check_help: all checks passed"
