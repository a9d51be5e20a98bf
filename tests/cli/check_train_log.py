#!/usr/bin/env python3
"""Checks an `expar train --log` file (docs/hdf5.md, "Training log"): schema, units, invariants and,
on synthetic data, that the final validation loss is below the logged entropy bound plus a margin."""
import argparse
import sys

import h5py
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("log")
p.add_argument("--nranks", type=int, required=True)
p.add_argument("--max-valid-excess", type=float, default=None,
               help="synthetic: final valid loss must be below synthetic_entropy_upper_nats + this")
p.add_argument("--pos", action="store_true", help="expect /pos/valid_counts (brown)")
a = p.parse_args()
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


with h5py.File(a.log) as f:
    attrs = f.attrs
    steps = int(attrs["steps"])
    P = int(attrs["num_ranks"])
    E = int(attrs["experts"])
    k = int(attrs["top-k"])
    check(P == a.nranks, f"num_ranks {P} != {a.nranks}")
    check(len(attrs["git_revision"]) > 0, "git_revision attribute")
    M = len(attrs["moe_blocks"].decode().split(","))
    for name in ["loss", "aux_loss", "z_loss", "total_loss", "lr", "grad_norm", "tokens_per_s", "step_time_us"]:
        d = f["/train/" + name]
        check(d.shape == (steps,), f"/train/{name} shape {d.shape}")
        check(np.all(np.isfinite(d[:])), f"/train/{name} finite")
        check("units" in d.attrs, f"/train/{name} has units")
    check(np.array_equal(f["/train/step"][:], np.arange(steps)), "/train/step = 0..steps-1")
    check(f["/train/phase_time_us"].shape == (steps, 4), "phase_time_us shape")
    check(f["/train/moe_phase_time_us"].shape == (steps, 10), "moe_phase_time_us shape")
    # Float options (lr, weight-decay, ...) were once written as empty strings: parse them.
    for key in ["lr", "min-lr-ratio", "weight-decay", "init-std"]:
        check(len(attrs[key]) > 0, f"option attribute {key} is empty")
    if len(attrs["lr"]) > 0:
        peak, lr = float(attrs["lr"]), f["/train/lr"][:]
        check(0 < lr.max() <= peak * (1 + 1e-6), f"the schedule's lr stays within the peak --lr {peak}")
    aux_coef, z_coef = float(attrs["aux-loss-coef"]), float(attrs["z-loss-coef"])
    total = f["/train/loss"][:] + aux_coef * f["/train/aux_loss"][:] + z_coef * f["/train/z_loss"][:]
    check(np.allclose(total, f["/train/total_loss"][:], rtol=1e-9, atol=1e-9), "total = loss + coefs")
    load, dropped = f["/experts/load"][:], f["/experts/dropped"][:]
    check(load.shape == (steps, M, E) and dropped.shape == (steps, M, E), f"/experts shapes {load.shape}")
    rows = P * int(attrs["batch-size"]) * int(attrs["seq-len"])
    check(np.all(load.sum(axis=2) == rows * k), "every token routed to k experts in every MoE block")
    check(np.all((dropped >= 0) & (dropped <= load)), "0 <= dropped <= load")
    counts = f["/routing/counts"][:]
    every = int(attrs["log-routing-every"])
    check(np.array_equal(f["/routing/step"][:], np.arange(0, steps, every)), "/routing/step")
    check(counts.shape[1:] == (M, P, E), f"/routing/counts shape {counts.shape}")
    for i, s in enumerate(f["/routing/step"][:]):
        check(np.array_equal(counts[i].sum(axis=1), load[s]), f"routing counts sum to the load at step {s}")
    splits = f["/eval/split"][:]
    check(list(splits[-2:]) == [1, 2], "the run ends with valid then test")
    ppl, loss = f["/eval/perplexity"][:], f["/eval/loss"][:]
    check(np.allclose(ppl, np.exp(loss)), "perplexity = exp(loss)")
    check(np.all(f["/eval/dropped"][:] <= f["/eval/requested"][:]), "eval dropped <= requested")
    if a.max_valid_excess is not None:
        bound = float(attrs["synthetic_entropy_upper_nats"])
        final_valid = loss[splits == 1][-1]
        print(f"final valid loss {final_valid:.4f}, bound {bound:.4f} + margin {a.max_valid_excess}")
        check(final_valid < bound + a.max_valid_excess,
              f"valid loss {final_valid:.4f} not below {bound:.4f} + {a.max_valid_excess}")
        check(f["/train/loss"][-1] < f["/train/loss"][0] - 1.0, "training loss falls")
    if a.pos:
        c = f["/pos/valid_counts"]
        tags = c.attrs["tags"].decode().split("\n")[:-1]
        check(c.shape == (M, E, len(tags)), f"/pos/valid_counts shape {c.shape}")
        targets = f["/eval/num_targets"][:][splits == 1][-1]
        # Every scored target has one tagged input, routed to k experts in each MoE block.
        check(np.all(c[:].sum(axis=(1, 2)) == targets * k), "POS counts = valid targets x k per block")

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
