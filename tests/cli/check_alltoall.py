#!/usr/bin/env python3
"""Checks an `expar alltoall --log` file against docs/hdf5.md and closed forms.

usage: check_alltoall.py LOG.h5 NRANKS RANKS_PER_NODE PATTERNS SCHEDULES SIZES

PATTERNS, SCHEDULES: comma-separated names, SIZES: comma-separated bytes per rank; every
(pattern, size, schedule) must have exactly one row with num_wrong == 0. For the uniform pattern with a
row count divisible by NRANKS, the bytes each rank put on intra-/inter-node links must match the closed
forms of the direct route (plain, pairwise, mpi) and of the two-hop hierarchical route.
Exits 1 with one line per failed check.
"""
import sys

import h5py
import numpy as np

from checks import check, failures, text


def main(argv):
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    path, P, M = argv[1], int(argv[2]), int(argv[3])
    patterns, schedules = argv[4].split(","), argv[5].split(",")
    sizes = [int(s) for s in argv[6].split(",")]
    N = P // M
    with h5py.File(path, "r") as f:
        a = f.attrs
        for key, want in (("num_ranks", P), ("num_nodes", N), ("ranks_per_node", M)):
            check(key in a and int(a[key]) == want, f"root attribute {key} == {want}")
        for key in ("git_revision", "schedules", "pattern", "row-bytes", "iters"):
            check(key in a, f"root attribute {key!r} present")
        g = f["/alltoall"]
        columns = ("pattern", "schedule", "size_bytes", "count_rows", "time_us", "algbw_GBps", "busbw_GBps",
                   "num_wrong", "bytes_intra_node", "bytes_inter_node")
        for name in columns:
            if not check(name in g, f"/alltoall/{name} exists"):
                return 1
        R = g["size_bytes"].shape[0]
        for name in columns:
            want = (R, P) if name.startswith("bytes_") else (R,)
            check(g[name].shape == want, f"/alltoall/{name} shape {g[name].shape} == {want}")
        units = {"size_bytes": "bytes", "count_rows": "rows", "time_us": "us", "algbw_GBps": "GB/s",
                 "busbw_GBps": "GB/s", "num_wrong": "floats", "bytes_intra_node": "bytes",
                 "bytes_inter_node": "bytes"}
        for name, unit in units.items():
            check(text(g[name].attrs.get("units", b"")) == unit, f"/alltoall/{name} units = {unit}")
        pattern_names = text(g["pattern"].attrs["names"]).split(",")
        schedule_names = text(g["schedule"].attrs["names"]).split(",")
        pattern = [pattern_names[i] for i in g["pattern"][...]]
        schedule = [schedule_names[i] for i in g["schedule"][...]]
        size = g["size_bytes"][...]
        count = g["count_rows"][...]
        time_us, algbw, busbw = g["time_us"][...], g["algbw_GBps"][...], g["busbw_GBps"][...]
        wrong = g["num_wrong"][...]
        intra, inter = g["bytes_intra_node"][...], g["bytes_inter_node"][...]

        check(R == len(patterns) * len(sizes) * len(schedules),
              f"{R} rows == patterns x sizes x schedules = {len(patterns) * len(sizes) * len(schedules)}")
        seen = sorted(zip(pattern, size.tolist(), schedule))
        want = sorted((p, s, x) for p in patterns for s in sizes for x in schedules)
        check(seen == want, "every (pattern, size, schedule) appears exactly once")
        check(bool(np.all(wrong == 0)), f"num_wrong == 0 everywhere (sum {int(wrong.sum())})")
        check(bool(np.all(time_us > 0)), "time_us > 0")
        row_bytes = int(text(a["row-bytes"]))
        check(bool(np.all(size == count * row_bytes)), "size_bytes == count_rows x row-bytes")
        err = np.max(np.abs(algbw * time_us * 1e3 / size - 1.0))
        check(err < 1e-9, f"algbw == size / time (max rel err {err:.1e})")
        err = np.max(np.abs(busbw - algbw * (P - 1) / P))
        check(err < 1e-9, f"busbw == algbw x (P-1)/P (max abs err {err:.1e})")
        check(bool(np.all(intra >= 0) and np.all(inter >= 0)), "bytes per rank >= 0")

        # Uniform traffic, c rows per (src, dst) pair, M ranks per node, N nodes, per rank:
        # direct: intra = c(M-1), inter = c(P-M) rows; hierarchical: intra = (M-1)Nc, inter = (N-1)Mc rows.
        checked = 0
        for i in range(R):
            if pattern[i] != "uniform" or count[i] % P:
                continue
            c = count[i] // P
            hier = schedule[i] == "hierarchical" and M > 1 and N > 1
            want_intra = ((M - 1) * N * c if hier else c * (M - 1)) * row_bytes
            want_inter = ((N - 1) * M * c if hier else c * (P - M)) * row_bytes
            ok = bool(np.all(intra[i] == want_intra) and np.all(inter[i] == want_inter))
            checked += 1
            if not ok:
                check(False, f"row {i} {schedule[i]} size {size[i]}: intra {intra[i]} inter {inter[i]}, "
                             f"want {want_intra} and {want_inter} per rank")
        if "uniform" in patterns:
            check(checked > 0, f"uniform bytes per rank match the closed forms ({checked} rows)")
    return 1 if failures else 0


if __name__ == "__main__":
    status = main(sys.argv)
    if status == 1:
        print(f"check_alltoall: {len(failures)} check(s) FAILED", file=sys.stderr)
    elif status == 0:
        print("check_alltoall: all checks passed")
    sys.exit(status)
