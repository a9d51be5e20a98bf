#!/usr/bin/env bash
# usage: tests/cli/check_text_inputs.sh EXPAR
# Text inputs that need a prepared file, each refused with one clear line at 1 and 2 ranks:
# a FIFO as --config (it used to block forever), a config over the 16 MiB limit, a NUL byte in a config,
# a control character in a config value and a newline in a command-line value (escaped, the message stays
# one line), a topology nested 100,000 levels deep.
set -uo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 EXPAR" >&2
    exit 2
fi
expar=$1
here=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
small=(--d-model 16 --d-ff 32 --tokens-per-rank 32 --steps 2)

mkfifo "$scratch/fifo.ini"
head -c $((16 * 1024 * 1024 + 1)) /dev/zero | tr '\0' '#' >"$scratch/big.ini"
printf 'experts = 4\ngate = top\0003\n' >"$scratch/nul.ini"
printf 'experts = 4\ngate = top\0013\n' >"$scratch/control.ini"
{
    printf 'name: '
    head -c 100000 /dev/zero | tr '\0' '['
    head -c 100000 /dev/zero | tr '\0' ']'
    printf '\n'
} >"$scratch/deep.yaml"

failures=0
expect() {  # "expected message" ARGS...
    local expected=$1
    shift
    for np in 1 2; do
        echo "=== at $np rank(s): $expected"
        "$here/expect_error.sh" "$np" "$expected" "$expar" "$@" || failures=$((failures + 1))
    done
}
expect "cannot read config file '$scratch/fifo.ini': it is not a regular file (a FIFO, socket or device)" \
    layer "${small[@]}" --config "$scratch/fifo.ini"
expect "cannot read config file '$scratch/big.ini': it holds 16777217 bytes, more than the 16 MiB a text input may have" \
    layer "${small[@]}" --config "$scratch/big.ini"
expect "cannot read config file '$scratch/nul.ini': line 2 holds a NUL byte; a text input has none" \
    layer "${small[@]}" --config "$scratch/nul.ini"
expect "unknown --gate 'top\\x013' (expected topk," layer "${small[@]}" --config "$scratch/control.ini"
expect "unknown --gate 'top\\n3' (expected topk," layer "${small[@]}" --gate $'top\n3'
expect "deep.yaml:1: YAML nested more than 500 levels deep (a topology file nests a few); not a topology file?" \
    topology "$scratch/deep.yaml"
if [ "$failures" -ne 0 ]; then
    echo "FAIL: $failures case(s)"
    exit 1
fi
echo "PASS"
