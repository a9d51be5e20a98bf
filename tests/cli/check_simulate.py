#!/usr/bin/env python3
"""Checks `expar simulate --log` files against docs/hdf5.md ("Simulator log") and against quantities
recomputed here from the logged count matrices and the options.

usage:
  check_simulate.py run LOG.h5 [--expect-drops]
      schema and units; efficiency = bound / step <= 1; step >= bound; phases add up to each rank's time;
      phase maxima and their ranks; requested/dropped from the count matrices; the kept counts from the
      capacity rule (local scope, position policy: min(requested, ceil(cf*T*k/E))); every rank routes
      T*k assignments; link bytes per class from the rows (no shadowing, no efficiency table).
  check_simulate.py same A.h5:/GROUP B.h5:/GROUP
      every dataset of the two groups bitwise equal (the simulation's wall times aside).
  check_simulate.py replay LOG.h5 TRAIN_LOG.h5 LAYER
      each simulated rank's requested counts are within one assignment of T*k times its training rank's
      expert fractions (tiled ranks, experts split evenly) at record step mod records of MoE layer LAYER.
  check_simulate.py precision LOG.h5 PRECISION default|option RATE
      /sim's precision, precision_source and dense_rate_flops_per_s [FLOP/s]; the root's precision option
      ('' when default).
  check_simulate.py slower SLOW.h5 FAST.h5
      the same run at a lower compute rate: its expert phases take longer at every step.
Exits 1 with one line per failed check.
"""
import math
import sys

import h5py
import numpy as np

from checks import check, failures, text

PHASES = ("forward/route,forward/dispatch,forward/expert,forward/combine,"
          "backward/combine,backward/expert,backward/dispatch,backward/route")
UNITS = {"phase_time_us": "us", "step_time_us": "us", "bound_us": "us", "efficiency": "1",
         "bound_terms_us": "us", "requested": "assignments", "dropped": "assignments", "link_bytes": "bytes",
         "busiest_link_utilisation": "1", "model_step_time_us": "us", "rank_phase_time_us": "us",
         "rank_time_us": "us", "requested_counts": "assignments", "allowed_counts": "assignments"}
TIMING = {"sim_wall_s"}


def option(f, name):
    return text(f.attrs[name])


def check_run(path, expect_drops):
    f = h5py.File(path, "r")
    g = f["/sim"]
    for name in ("git_revision", "topology", "steps", "mpi_ranks", "wall_time_s"):
        check(name in f.attrs, f"root attribute {name}")
    for name in ("wall_time_s", "events_per_s", "peak_memory_bytes", "simulated_ranks", "ranks_per_node", "topology",
                 "moe_layers"):
        check(name in g.attrs, f"/sim attribute {name}")
    S, P = int(option(f, "steps")), int(g.attrs["simulated_ranks"])
    E, k, T = int(option(f, "experts")), int(option(f, "top-k")), int(option(f, "tokens-per-rank"))
    cf = float(option(f, "capacity-factor"))
    shapes = {"step": (S,), "phase_time_us": (S, 8), "phase_max_rank": (S, 8), "step_time_us": (S,),
              "bound_us": (S,), "efficiency": (S,), "bound_terms_us": (S, 6), "requested": (S,), "dropped": (S,),
              "link_bytes": (S, 3), "busiest_link_utilisation": (S,), "model_step_time_us": (S,),
              "rank_phase_time_us": (S, P, 8), "rank_time_us": (S, P), "requested_counts": (S, P, E),
              "allowed_counts": (S, P, E)}
    for name, shape in shapes.items():
        if check(name in g, f"/sim/{name} exists"):
            check(g[name].shape == shape, f"/sim/{name} shape {g[name].shape} == {shape}")
    for name, units in UNITS.items():
        check(name in g and text(g[name].attrs.get("units", "")) == units, f"/sim/{name} units '{units}'")
    check(text(g["phase_time_us"].attrs["phases"]) == PHASES, "phase names")
    if failures:
        return
    step, bound, eff = g["step_time_us"][...], g["bound_us"][...], g["efficiency"][...]
    check(np.array_equal(g["step"][...], np.arange(S)), "steps 0..S-1")
    check(np.all(eff > 0) and np.all(eff <= 1 + 1e-12), f"0 < efficiency <= 1: {eff}")
    check(np.all(step >= bound * (1 - 1e-12)), f"step >= bound: {step} vs {bound}")
    check(np.allclose(eff, bound / step, rtol=1e-12), "efficiency = bound / step")
    check(np.allclose(bound, np.maximum(g["bound_terms_us"][:, :4].max(axis=1) + g["bound_terms_us"][:, 5],
                                        g["bound_terms_us"][:, 4]), rtol=1e-12),
          "bound = max(busiest link term + latency, compute)")
    rank_phase, rank_time = g["rank_phase_time_us"][...], g["rank_time_us"][...]
    check(np.all(rank_phase >= 0), "phases >= 0")
    check(np.allclose(rank_phase.sum(axis=2), rank_time, rtol=1e-9), "phases add up to each rank's time")
    check(np.allclose(rank_time.max(axis=1), step, rtol=1e-12), "step = the last rank's time")
    check(np.array_equal(g["phase_time_us"][...], rank_phase.max(axis=1)), "phase time = max over ranks")
    # The lowest rank within rounding (relative 1e-12) of each phase's max.
    near_max = rank_phase >= rank_phase.max(axis=1, keepdims=True) * (1 - 1e-12)
    check(np.array_equal(g["phase_max_rank"][...], near_max.argmax(axis=1)),
          "phase_max_rank is the lowest rank attaining the max")
    moe_layers = int(g.attrs["moe_layers"])
    check(np.allclose(g["model_step_time_us"][...], moe_layers * step, rtol=1e-12), "model step = layers x step")

    # Decisions, recomputed from the count matrices and the capacity rule.
    req, allowed = g["requested_counts"][...], g["allowed_counts"][...]
    check(np.array_equal(g["requested"][...], req.sum(axis=(1, 2))), "requested = sum of requested_counts")
    check(np.array_equal(g["dropped"][...], req.sum(axis=(1, 2)) - allowed.sum(axis=(1, 2))),
          "dropped = requested - allowed")
    check(np.all(req.sum(axis=2) == T * k), "every rank routes T*k assignments")
    if option(f, "capacity-scope") == "local" and option(f, "drop-policy") == "position" and cf > 0:
        capacity = math.ceil(cf * T * k / E)
        check(np.array_equal(allowed, np.minimum(req, capacity)), f"allowed = min(requested, capacity {capacity})")
    if cf == 0:
        check(np.array_equal(allowed, req), "dropless: allowed = requested")
    if expect_drops:
        check(g["dropped"][...].sum() > 0, "some assignments dropped")

    # Link bytes from the rows: 4 exchanges (dispatch, combine, and both again backward) of d*dtype bytes
    # per row; a message crosses two links of its class (egress, ingress). Valid without shadowing and
    # without a message-size efficiency table (the topology of this test has none).
    if option(f, "shadow") == "false" and option(f, "backward") == "true":
        per_node = int(g.attrs["ranks_per_node"])
        row_bytes = int(option(f, "d-model")) * int(option(f, "dtype-bytes"))
        owner = np.arange(E) // (E // P)
        node = np.arange(P) // per_node
        for s in range(S):
            rows = np.zeros((P, P), dtype=np.int64)
            for dst in range(P):
                rows[:, dst] = allowed[s][:, owner == dst].sum(axis=1)
            np.fill_diagonal(rows, 0)
            same_node = node[:, None] == node[None, :]
            intra = 2 * 4 * row_bytes * rows[same_node].sum()
            nic = 2 * 4 * row_bytes * rows[~same_node].sum()
            lb = g["link_bytes"][s]
            check(math.isclose(lb[0], intra, rel_tol=1e-9) and math.isclose(lb[1], nic, rel_tol=1e-9) and lb[2] == 0,
                  f"step {s} link bytes {lb} = intra {intra}, nic {nic} from the rows")
    util = g["busiest_link_utilisation"][...]
    check(np.all(util > 0) and np.all(util <= 1 + 1e-12), f"busiest link utilisation in (0, 1]: {util}")


def datasets(group):
    out = {}
    group.visititems(lambda name, obj: out.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
    return out


def check_same(a, b):
    (fa, ga), (fb, gb) = a.rsplit(":", 1), b.rsplit(":", 1)
    da, db = datasets(h5py.File(fa, "r")[ga]), datasets(h5py.File(fb, "r")[gb])
    check(sorted(da) == sorted(db), f"{a} and {b} hold the same datasets")
    for name in sorted(set(da) & set(db) - TIMING):
        x, y = da[name], db[name]
        check(x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(),
              f"{name} bitwise equal in {a} and {b}")


def check_replay(path, train_path, layer):
    f, t = h5py.File(path, "r"), h5py.File(train_path, "r")
    g = f["/sim"]
    counts = t["/routing/counts"][...][:, layer]  # [records, P_train, E_train]
    records, P_train, E_train = counts.shape
    req = g["requested_counts"][...]
    S, P, E = req.shape
    T, k = int(option(f, "tokens-per-rank")), int(option(f, "top-k"))
    check(P != P_train, f"simulated at another rank count ({P} vs {P_train})")
    check(E % E_train == 0, f"E {E} a multiple of the trained {E_train}")
    worst = 0.0
    for s in range(S):
        for r in range(P):
            c = counts[s % records, r % P_train].astype(float)
            expected = np.repeat(c / c.sum() / (E // E_train), E // E_train) * T * k
            worst = max(worst, np.abs(req[s, r] - expected).max())
    check(worst < 1.0, f"requested within one assignment of the replayed fractions (worst {worst:.3f})")


def check_precision(path, precision, source, rate):
    """The precision the run computed at, where it came from (default | option) and its dense rate."""
    f = h5py.File(path, "r")
    g = f["/sim"]
    check(text(g.attrs["precision"]) == precision, f"{path}: /sim precision is {precision}")
    check(text(g.attrs["precision_source"]) == source, f"{path}: /sim precision_source is {source}")
    got = float(g.attrs["dense_rate_flops_per_s"])
    check(abs(got - rate) <= 1e-9 * rate, f"{path}: /sim dense_rate_flops_per_s {got} = {rate}")
    given = "" if source == "default" else precision
    check(option(f, "precision") == given, f"{path}: root attribute precision is '{given}' (the option as given)")


def check_slower(slow_path, fast_path):
    """The same run at a lower rate: every step's expert phases (forward, backward) take longer."""
    slow = h5py.File(slow_path, "r")["/sim/phase_time_us"][...]
    fast = h5py.File(fast_path, "r")["/sim/phase_time_us"][...]
    for p in (2, 5):
        check(bool((slow[:, p] > fast[:, p]).all()), f"expert phase {p} of {slow_path} slower than {fast_path}")


def main(argv):
    if len(argv) >= 3 and argv[1] == "run":
        check_run(argv[2], "--expect-drops" in argv[3:])
    elif len(argv) == 4 and argv[1] == "same":
        check_same(argv[2], argv[3])
    elif len(argv) == 6 and argv[1] == "precision":
        check_precision(argv[2], argv[3], argv[4], float(argv[5]))
    elif len(argv) == 4 and argv[1] == "slower":
        check_slower(argv[2], argv[3])
    elif len(argv) == 5 and argv[1] == "replay":
        check_replay(argv[2], argv[3], int(argv[4]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
