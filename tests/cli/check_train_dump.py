#!/usr/bin/env python3
"""Checks an `expar train --dump` file (docs/hdf5.md, "Training dump") independently with numpy: the
loss recomputed from the dumped logits and targets, the total loss from its parts, the tied LM head
(logits = LayerNorm output x wte^T has rank <= d, so the logits lie in wte's column space), and that
every parameter has a gradient of its shape."""
import sys

import h5py
import numpy as np

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


with h5py.File(sys.argv[1]) as f:
    logits = f["/logits"][:].astype(np.float64)
    targets = f["/targets"][:].reshape(-1)
    tokens = f["/tokens"][:]
    V = logits.shape[1]
    check(tokens.shape == f["/targets"].shape, "tokens and targets shapes")
    check(np.array_equal(tokens[:, 1:], f["/targets"][:][:, :-1]), "targets are the inputs shifted by one")
    m = logits.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(axis=1, keepdims=True)))[:, 0]
    loss = np.mean(lse - logits[np.arange(len(targets)), targets])
    dumped = float(f["/loss"][()])
    print(f"loss from logits {loss:.7f}, dumped {dumped:.7f}")
    check(abs(loss - dumped) < 1e-5 * max(1.0, abs(loss)), "loss recomputed from logits")
    a = f.attrs
    total = dumped + float(a["aux-loss-coef"]) * float(f["/aux_loss"][()]) + float(a["z-loss-coef"]) * float(
        f["/z_loss"][()])
    check(abs(total - float(f["/total_loss"][()])) < 1e-9, "total = loss + aux + z terms")
    wte = f["/params/wte"][:].astype(np.float64)
    check(wte.shape[0] == V, "wte rows = vocabulary")
    # Tied head: each logits row is wte @ x for some x, i.e. in the column space of wte.
    x, *_ = np.linalg.lstsq(wte, logits.T, rcond=None)
    residual = np.abs(wte @ x - logits.T).max()
    check(residual < 1e-4 * max(1.0, np.abs(logits).max()), f"logits in wte's column space (residual {residual})")
    names = []
    f["/params"].visit(lambda n: names.append(n) if isinstance(f["/params/" + n], h5py.Dataset) else None)
    check(len(names) > 20, f"{len(names)} parameter tensors")
    for n in names:
        check(("grads/" + n) in f and f["/grads/" + n].shape == f["/params/" + n].shape, f"gradient of {n}")
        check(np.all(np.isfinite(f["/grads/" + n][:])), f"gradient of {n} finite")
    for n in ["h1.shared_w1", "h1.dense_w1", "h1.router_w", "h1.w1"]:
        check(n in names, f"{n} dumped")
    E = int(a["experts"])
    check(f["/params/h1.w1"].shape[0] == E, "experts gathered in global order")

for failure in failures:
    print("FAIL:", failure)
sys.exit(1 if failures else 0)
