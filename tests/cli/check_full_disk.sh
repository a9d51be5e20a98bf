#!/usr/bin/env bash
# usage: tests/cli/check_full_disk.sh EXPAR LOCAL_SH
# Output on a full file system (a small tmpfs), at 2 and 4 ranks: a checkpoint save and a --log each fail
# with exactly one error line that names the file and says the disk is full, exit status 1 (no signal:
# HDF5 used to crash closing the failed file again in MPI_Finalize), and leave no partial file behind.
# Needs to mount a tmpfs (root); elsewhere it skips (exit 77, ctest SKIP_RETURN_CODE).
set -uo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 EXPAR LOCAL_SH" >&2
    exit 2
fi
expar=$1 launch=$2
scratch=$(mktemp -d)
disk=$scratch/disk
mkdir -p "$disk"
cleanup() {
    mountpoint -q "$disk" && umount "$disk"
    rm -rf "$scratch"
}
trap cleanup EXIT
export OMPI_MCA_odls_base_sigkill_timeout="${OMPI_MCA_odls_base_sigkill_timeout:-0}"

fail() {
    echo "FAIL: $*"
    [ -f "$scratch/out" ] && { echo "--- output of the last run:"; cat "$scratch/out"; }
    exit 1
}
# mount_disk SIZE: a fresh, empty tmpfs of SIZE at $disk.
mount_disk() {
    mountpoint -q "$disk" && umount "$disk"
    mount -t tmpfs -o "size=$1" tmpfs "$disk" 2>/dev/null
}
if ! mount_disk 64k; then
    echo "SKIP: cannot mount a tmpfs here (needs root): the full-disk checks did not run"
    exit 77
fi

# expect_disk_full NRANKS FILE WHAT ARGS...: expar fails on a full disk as described above.
expect_disk_full() {
    local n=$1 file=$2 what=$3
    shift 3
    timeout 120 "$launch" "$n" "$expar" "$@" >"$scratch/out" 2>&1
    local status=$?
    [ "$status" -ne 0 ] || fail "exit status 0 on a full disk"
    [ "$status" -lt 124 ] || fail "exit status $status (a hang or a signal)"
    ! grep -qiE "signal|segmentation|HDF5-DIAG" "$scratch/out" || fail "a signal or an HDF5 stack dump"
    [ "$(grep -c 'expar: error' "$scratch/out")" -eq 1 ] || fail "expected exactly one error line"
    grep 'expar: error' "$scratch/out" | grep -qF "cannot write $what '$file'" || fail "the error does not name $file"
    grep 'expar: error' "$scratch/out" | grep -qF "no space left on the file system that holds it (disk full)" ||
        fail "the error does not say the disk is full"
    [ ! -e "$file.partial" ] || fail "$file.partial left on the full disk"
    echo "ok (exit status $status): $(grep 'expar: error' "$scratch/out")"
}

train=(train --steps 2 --d-model 32 --num-layers 2 --experts 4 --d-ff 32 --seq-len 16 --synthetic-vocab 48
       --eval-every 0 --print-every 100 --synthetic-eval-sequences 16)
layer=(layer --d-model 16 --d-ff 32 --tokens-per-rank 64 --warmup 0 --steps 400)
for n in 2 4; do
    echo "=== checkpoint save at $n ranks"
    # 600k: the data fits, the metadata written at close does not (the case that crashed); 64k: nothing fits.
    for size in 600k 64k; do
        mount_disk $size || fail "mount"
        expect_disk_full $n "$disk/ck.h5" checkpoint "${train[@]}" --batch-size $((8 / n)) --checkpoint "$disk/ck.h5"
    done
    echo "=== --log at $n ranks"
    # 40k: found when reserving the file's blocks before a flush (fallocate); 200k: found by HDF5's flush itself.
    for size in 40k 200k; do
        mount_disk $size || fail "mount"
        expect_disk_full $n "$disk/log.h5" "--log file" "${layer[@]}" --log "$disk/log.h5"
    done
done
echo "PASS"
