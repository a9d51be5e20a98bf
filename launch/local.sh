#!/usr/bin/env bash
# Runs NRANKS processes of a command on this machine with Open MPI.
# usage: launch/local.sh NRANKS COMMAND [ARGS...]     e.g. launch/local.sh 4 build/expar layer --steps 5
# Knows mpirun's quirks so nothing else has to: --allow-run-as-root when run as root, --oversubscribe
# when there are more ranks than cores, and no binding (ranks may outnumber cores).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 NRANKS COMMAND [ARGS...]" >&2
    exit 2
fi
nranks=$1
shift
flags=(-np "$nranks" --bind-to none)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
[ "$nranks" -gt "$(nproc)" ] && flags+=(--oversubscribe)
# Shared-memory transport only within one host; quiet the warning about missing HCAs on laptops/CI.
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"
# mpirun hands its ranks a pseudo-terminal even when its own stdout is a pipe: tell them what it really is
# (expar train rewrites its progress line in place only on a terminal).
if [ -t 1 ]; then export EXPAR_STDOUT_IS_TTY=1; else export EXPAR_STDOUT_IS_TTY=0; fi
exec mpirun "${flags[@]}" "$@"
