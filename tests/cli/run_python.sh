#!/usr/bin/env bash
# usage: tests/cli/run_python.sh SCRIPT.py [ARGS...]: runs a Python check with a python3 that has h5py and numpy.
set -euo pipefail
source "$(dirname "$0")/common.sh"
python=$(find_python)
exec "$python" "$@"
