#!/usr/bin/env python3
"""Checks an `expar layer --log` file against the schema of docs/hdf5.md and its invariants.

usage: check_log.py LOG.h5 NRANKS NUM_EXPERTS STEPS_TOTAL [--expect-drops]

STEPS_TOTAL = --warmup + --steps (every step is logged, warm-up included). At least one assignment
must have been dropped over the run with --expect-drops, or when the file's options say skew >= 1 and
0 < capacity-factor <= 1 (a skewed, capacity-bound configuration).
Exits 1 with one line per failed check.
"""
import sys

import h5py
import numpy as np

from checks import check, failures, text

PHASES = ("forward/route,forward/count_exchange,forward/layout,forward/dispatch,forward/expert,"
          "forward/combine,backward/combine,backward/expert,backward/dispatch,backward/route").split(",")
# The simulator's 8 phases hold the count exchange in route and the layout in dispatch.
SIMULATED_PHASES = ("forward/route,forward/route,forward/dispatch,forward/dispatch,forward/expert,"
                    "forward/combine,backward/combine,backward/expert,backward/dispatch,backward/route").split(",")






def dataset(f, path, shape, kind, units=None):
    """The dataset at path as an array, after checking shape, dtype kind ('i' or 'f') and units attr."""
    if not check(path in f, f"{path} exists"):
        return None
    d = f[path]
    check(d.shape == shape, f"{path} shape {d.shape} == {shape}")
    check(d.dtype.kind == kind and d.dtype.itemsize == 8,
          f"{path} dtype {d.dtype} is {'int64' if kind == 'i' else 'float64'}")
    if units is not None:
        check(text(d.attrs.get("units", b"")) == units, f"{path} units = {text(d.attrs.get('units', b''))!r}")
    return d[...]


def main(argv):
    if len(argv) not in (5, 6) or (len(argv) == 6 and argv[5] != "--expect-drops"):
        print(__doc__, file=sys.stderr)
        return 2
    path, P, E, S = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    expect_drops = len(argv) == 6
    with h5py.File(path, "r") as f:
        a = f.attrs
        for key in ("git_revision", "blas", "num_ranks", "experts", "top-k", "steps", "warmup", "seed"):
            check(key in a, f"root attribute {key!r} present" + (f" = {text(a[key])!r}" if key in a else ""))
        if "num_ranks" in a:
            check(int(a["num_ranks"]) == P, f"num_ranks = {int(a['num_ranks'])} == {P}")
        if "experts" in a:
            check(int(text(a["experts"])) == E, f"experts attribute {text(a['experts'])} == {E}")
        if "steps" in a and "warmup" in a:
            total = int(text(a["steps"])) + int(text(a["warmup"]))
            check(total == S, f"steps + warmup attributes = {total} == {S}")
        k = int(text(a["top-k"])) if "top-k" in a else None

        phase = dataset(f, "/steps/phase_time_us", (S, P, 10), "f", "us")
        if phase is not None:
            names = text(f["/steps/phase_time_us"].attrs.get("phases", b"")).split(",")
            check(names == PHASES, f"phase_time_us attr phases = {','.join(names)}")
            folded = text(f["/steps/phase_time_us"].attrs.get("simulated_phases", b"")).split(",")
            check(folded == SIMULATED_PHASES, f"phase_time_us attr simulated_phases = {','.join(folded)}")
            check(bool(np.all(np.isfinite(phase)) and np.all(phase >= 0)), "phase times finite and >= 0")
        step = dataset(f, "/steps/step", (S,), "i")
        if step is not None:
            check(np.array_equal(step, np.arange(S)), f"/steps/step = 0..{S - 1}")
        step_us = dataset(f, "/steps/step_time_us", (S, P), "f", "us")
        if step_us is not None and phase is not None:
            check(bool(np.all(step_us > 0)), "step_time_us > 0")
            # The phases partition (part of) the step: their sum cannot exceed it by more than timer noise.
            excess = phase.sum(axis=2) - step_us
            check(bool(np.all(excess <= 0.05 * step_us + 50.0)),
                  f"sum of phase times <= step time per rank (max excess {excess.max():.1f} us)")
        a2a_us = dataset(f, "/steps/alltoallv_time_us", (S, P), "f", "us")
        a2a_bytes = dataset(f, "/steps/alltoallv_bytes_sent", (S, P), "f", "bytes")
        if a2a_us is not None:
            check(bool(np.all(a2a_us >= 0)), "alltoallv_time_us >= 0")
        if a2a_bytes is not None:
            check(bool(np.all(a2a_bytes >= 0) and np.all(a2a_bytes == np.round(a2a_bytes))),
                  "alltoallv_bytes_sent are non-negative whole numbers")
            if P == 1:
                check(bool(np.all(a2a_bytes == 0)), "one rank sends no bytes to other ranks")
        tps = dataset(f, "/steps/tokens_per_s", (S,), "f", "tokens/s")
        if tps is not None:
            check(bool(np.all(np.isfinite(tps)) and np.all(tps > 0)), f"tokens_per_s > 0 (median {np.median(tps):.0f})")
            if step_us is not None and "tokens-per-rank" in a:
                want = P * int(text(a["tokens-per-rank"])) / (step_us.max(axis=1) * 1e-6)
                err = float(np.max(np.abs(tps / want - 1.0)))
                check(err < 1e-9, f"tokens_per_s == T / slowest rank's step_time (max rel err {err:.1e})")
        aux = dataset(f, "/steps/aux_loss", (S,), "f", "1")
        if aux is not None:
            # aux = E·Σ f_e·P̄_e with Σ f_e = Σ P̄_e = 1, so 0 < aux <= E.
            check(bool(np.all(aux > 0) and np.all(aux <= E + 1e-6)), f"0 < aux_loss <= E (values {aux})")
        z = dataset(f, "/steps/z_loss", (S,), "f", "1")
        if z is not None:
            check(bool(np.all(np.isfinite(z)) and np.all(z >= 0)), f"z_loss finite and >= 0 (values {z})")
        capacity = dataset(f, "/steps/capacity", (S,), "i", "tokens per expert per scope group")
        if capacity is not None:
            check(bool(np.all(capacity > 0)), f"capacity > 0 (values {capacity})")
        frac = dataset(f, "/steps/dropped_fraction", (S,), "f", "fraction of routed assignments")

        req = dataset(f, "/experts/requested", (S, E), "i", "tokens")
        rec = dataset(f, "/experts/received", (S, E), "i", "tokens")
        drop = dataset(f, "/experts/dropped", (S, E), "i", "tokens")
        if req is None or rec is None or drop is None:
            return 1
        check(bool(np.all(req >= 0) and np.all(rec >= 0) and np.all(drop >= 0)), "expert counts >= 0")
        check(np.array_equal(req, rec + drop), "requested == received + dropped, per step and expert")
        check(np.array_equal(rec.sum(1) + drop.sum(1), req.sum(1)),
              "received.sum(1) + dropped.sum(1) == requested.sum(1)")
        if k is not None:
            tokens = P * int(text(a["tokens-per-rank"])) if "tokens-per-rank" in a else None
            if tokens is not None:
                gate = text(a.get("gate", b"topk"))
                if gate == "gshard":  # unrouted second slots are not requested
                    check(bool(np.all(req.sum(1) <= tokens * k) and np.all(req.sum(1) >= tokens)),
                          f"T <= requested.sum(1) <= T·k = {tokens * k} (gshard)")
                else:
                    check(bool(np.all(req.sum(1) == tokens * k)), f"requested.sum(1) == T·k = {tokens * k}")
        if capacity is not None and "capacity-scope" in a and "capacity-factor" in a:
            groups = P if text(a["capacity-scope"]) == "local" else 1
            if float(text(a["capacity-factor"])) > 0:
                check(bool(np.all(rec <= groups * capacity[:, None])),
                      f"received <= {groups} scope group(s) x capacity per expert")
        if frac is not None:
            want = drop.sum(1) / np.maximum(req.sum(1), 1)
            err = float(np.max(np.abs(frac - want)))
            check(err < 1e-12, f"dropped_fraction == dropped.sum(1)/requested.sum(1) (max abs err {err:.2e})")
        # A skewed, capacity-bound run must drop: expert 0 alone gets more than its share.
        if "skew" in a and "capacity-factor" in a:
            cf, skew = float(text(a["capacity-factor"])), float(text(a["skew"]))
            expect_drops = expect_drops or (skew >= 1.0 and 0 < cf <= 1.0)
        # FasterMoE-era fields: schedule, redirected, shadowed, bytes per link class.
        schedule = dataset(f, "/steps/schedule", (S,), "i", "index into the names attribute")
        if schedule is not None:
            names = text(f["/steps/schedule"].attrs.get("names", b"")).split(",")
            check(names == ["plain", "pairwise", "hierarchical"], f"/steps/schedule names {names}")
            if "schedule" in a:
                want = names.index(text(a["schedule"]))
                check(bool(np.all(schedule == want)), f"/steps/schedule == {want} ({text(a['schedule'])}) every step")
        redirected = dataset(f, "/steps/redirected", (S, P), "i", "assignments moved on-node per rank")
        if redirected is not None:
            check(bool(np.all(redirected >= 0)), "redirected >= 0")
            if text(a.get("gate-topology", b"none")) == "none":
                check(int(redirected.sum()) == 0, "no redirection without --gate-topology")
        shadowed = dataset(f, "/experts/shadowed", (S, E), "i", "1 if replicated this step")
        if shadowed is not None:
            check(bool(np.all((shadowed == 0) | (shadowed == 1))), "shadowed is 0/1")
            if text(a.get("shadow", b"false")) != "true":
                check(int(shadowed.sum()) == 0, "nothing shadowed without --shadow")
            else:
                print(f"note: shadowed experts per step: {shadowed.sum(1).tolist()}")
        intra = dataset(f, "/steps/bytes_intra_node", (S, P), "i", "bytes sent per rank")
        inter = dataset(f, "/steps/bytes_inter_node", (S, P), "i", "bytes sent per rank")
        if intra is not None and inter is not None and a2a_bytes is not None:
            on_wire = intra + inter
            if text(a.get("schedule", b"plain")) == "hierarchical":  # relays add hops
                check(bool(np.all(on_wire >= a2a_bytes)), "intra + inter >= bytes sent end to end (hierarchical)")
            else:
                check(np.array_equal(on_wire, a2a_bytes.astype(np.int64)),
                      "intra + inter == bytes sent end to end (one hop per row)")
            if int(text(a.get("ranks-per-node", b"0"))) == P:
                check(int(inter.sum()) == 0, "one node: no inter-node bytes")
        if expect_drops:
            check(int(drop.sum()) > 0, f"some assignments dropped ({int(drop.sum())} of {int(req.sum())})")
    return 1 if failures else 0


if __name__ == "__main__":
    status = main(sys.argv)
    if status == 1:
        print(f"check_log: {len(failures)} check(s) FAILED", file=sys.stderr)
    elif status == 0:
        print("check_log: all checks passed")
    sys.exit(status)
