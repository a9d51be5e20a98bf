#!/usr/bin/python3
"""usage: compare.py BEFORE_DIR AFTER_DIR

Checks that two folders written by experiments/identity/run.sh hold the same results bit for bit:
every dataset of every HDF5 file (values, dtype, shape, attributes), every text table, and the option
attributes.
Attributes that differ by nature between builds and folders (git_revision, wall_time_s, the output paths dump and log) are skipped; the simulator's
wall-time dataset (sim/sim_wall_s) too. Exit 0 when identical, 1 otherwise, listing each difference.
"""
import pathlib
import sys

import h5py
import numpy as np

VOLATILE_ATTRS = {"git_revision", "wall_time_s", "dump", "log"}  # build, clock, output path
VOLATILE_DATASETS = {"sim/sim_wall_s"}


def datasets(f):
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def compare_h5(a_path, b_path):
    problems = []
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        da, db = datasets(a), datasets(b)
        for name in sorted(set(da) | set(db)):
            if name in VOLATILE_DATASETS:
                continue
            if name not in da or name not in db:
                problems.append(f"{name}: only in {'after' if name in db else 'before'}")
                continue
            x, y = da[name][()], db[name][()]
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                problems.append(f"{name}: differs (dtype {x.dtype}/{y.dtype}, shape {x.shape}/{y.shape})")
            problems += compare_attrs(da[name].attrs, db[name].attrs, f"{name} attribute ")
        problems += compare_attrs(a.attrs, b.attrs, "attribute ")
    return problems


def compare_attrs(attrs_a, attrs_b, label):
    problems = []
    aa = {k: v for k, v in attrs_a.items() if k not in VOLATILE_ATTRS}
    ab = {k: v for k, v in attrs_b.items() if k not in VOLATILE_ATTRS}
    for key in sorted(set(aa) | set(ab)):
        if key not in aa or key not in ab:
            problems.append(f"{label}{key}: only in {'after' if key in ab else 'before'}")
        elif np.asarray(aa[key]).tobytes() != np.asarray(ab[key]).tobytes():
            problems.append(f"{label}{key}: {aa[key]!r} -> {ab[key]!r}")
    return problems


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    before, after = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    names = sorted({p.name for p in before.iterdir()} | {p.name for p in after.iterdir()})
    failures = 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"DIFF {name}: only in {'after' if b.exists() else 'before'}")
            failures += 1
            continue
        if name.endswith(".h5"):
            problems = compare_h5(a, b)
        else:
            problems = [] if a.read_bytes() == b.read_bytes() else ["text differs"]
        print(("same " if not problems else "DIFF ") + name)
        for p in problems:
            print("     " + p)
        failures += bool(problems)
    print(f"{len(names) - failures} same, {failures} different")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
