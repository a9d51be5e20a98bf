#!/usr/bin/env python3
"""An independent float64 oracle for an `expar layer --dump` file (schema: docs/hdf5.md).

usage: check_dump.py DUMP.h5

Re-implements, from docs/layer.md alone and in numpy float64, what the dump claims the layer did in
step 0 and compares:
  * synthetic data and parameters: x, dy, Wr, Wn, W1, W2, W3, the skew bias and the noisy-topk noise
    follow the counter-based generator (SplitMix64 + Box-Muller, src/base/rng.h is the only thing
    borrowed: its constants) keyed by global indices, so the gather order of every tensor is checked;
  * router: logits, softmax, z-loss, top-k selection and gate weights for every gate kind, the aux loss;
  * capacity: which assignments are kept, from the capacity formula, scope and drop policy;
  * forward: y = Σ_kept w·FFN_e(x);
  * backward: every expert gradient (w1, b1, w2, b2, w3), the router gradient(s) and dx, of
    L = Σ dy·y + aux_coef·aux + z_coef·z.
Prints every relative error (‖a−b‖/‖b‖). Exits 1 if any check fails.
"""
import math
import sys

import h5py
import numpy as np

from checks import check, failures, text


# Tolerances: float32 C++ against a float64 oracle.
# Observed errors are ~3e-7 at d = 16. The router bar must stay tight: with the default coefficients the
# aux and z terms are only ~1e-4 of the router gradient, so a looser bar would not notice them missing.
RTOL_FORWARD = 1e-5   # y, expert gradients
RTOL_ROUTER = 1e-5    # router gradients and dx




def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0))


def check_close(name, got, want, rtol):
    if got.shape != want.shape:
        return check(False, f"{name}: shape {got.shape} != expected {want.shape}")
    if not np.all(np.isfinite(got)):
        return check(False, f"{name}: non-finite values")
    err = rel_err(got, want)
    return check(err < rtol, f"{name}: rel err {err:.2e} (< {rtol:g})")


# --- The counter-based generator of docs/layer.md (constants from src/base/rng.h) ---------------------
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(z):
    z = (z + np.uint64(0x9E3779B97F4A7C15)) & M64
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & M64
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & M64
    return z ^ (z >> np.uint64(31))


def rng_bits(seed, stream, index):
    with np.errstate(over="ignore"):
        s = _mix(np.array([seed], dtype=np.uint64))[0]
        s = _mix(np.array([s ^ np.uint64(stream)], dtype=np.uint64))[0]
        return _mix(np.asarray(index, dtype=np.uint64) ^ s)


def rng_uniform(seed, stream, index):
    return ((rng_bits(seed, stream, index) >> np.uint64(40)).astype(np.float64) / 16777216.0).astype(np.float32)


def rng_normal(seed, stream, index):
    index = np.asarray(index, dtype=np.uint64)
    a = rng_bits(seed, stream, 2 * index)
    b = rng_bits(seed, stream, 2 * index + np.uint64(1))
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    u2 = (b >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(6.283185307179586 * u2)).astype(np.float32)


def per_step(stream, step):
    return stream + (step << 8)


STREAM = dict(tokens=1, upstream=2, router_w=3, router_noise_w=4, w1=5, b1=6, w2=7, b2=8, w3=9, gate_noise=10,
              gshard_uniform=11)

# --- Activations -------------------------------------------------------------------------------------
_erf = np.vectorize(math.erf, otypes=[np.float64])


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def act(name, h):
    if name == "gelu":
        return h * 0.5 * (1.0 + _erf(h / math.sqrt(2.0)))
    if name == "relu":
        return np.maximum(h, 0.0)
    if name in ("silu", "swiglu"):
        return h * sigmoid(h)
    raise ValueError(name)


def act_grad(name, h):
    if name == "gelu":
        return 0.5 * (1.0 + _erf(h / math.sqrt(2.0))) + h * np.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
    if name == "relu":
        return (h > 0).astype(np.float64)
    if name in ("silu", "swiglu"):
        s = sigmoid(h)
        return s * (1.0 + h * (1.0 - s))
    raise ValueError(name)


def softplus(v):
    return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))



def main(path):
    with h5py.File(path, "r") as f:
        A = {key: text(value) for key, value in f.attrs.items()}
        D = {}
        f.visititems(lambda name, obj: D.__setitem__("/" + name, obj[...]) if isinstance(obj, h5py.Dataset) else None)

    print(f"dump {path}: " + ", ".join(f"{k}={A[k]}" for k in ("num_ranks", "experts", "top-k", "gate", "activation",
                                                               "capacity-factor", "capacity-scope", "drop-policy",
                                                               "renormalize", "skew") if k in A))
    P = int(A["num_ranks"])
    E = int(A["experts"])
    k = int(A["top-k"])
    gate = A["gate"]
    activation = A["activation"]
    renormalize = A.get("renormalize", "false") == "true"
    cf = float(A["capacity-factor"])
    scope = A.get("capacity-scope", "local")
    policy = A.get("drop-policy", "position")
    skew = float(A.get("skew", "0"))
    aux_coef = float(A["aux-loss-coef"])
    z_coef = float(A["z-loss-coef"])
    seed = int(A["seed"])
    step = int(A.get("step", "0"))
    T_local = int(A["tokens-per-rank"])
    noisy = gate == "noisy-topk"
    swiglu = activation == "swiglu"

    x = D["/x"].astype(np.float64)
    dy = D["/dy"].astype(np.float64)
    T, d = x.shape
    Wr = D["/router/w"].astype(np.float64)
    bias = D["/router/bias"].astype(np.float64)
    W1 = D["/experts/w1"].astype(np.float64)
    W2 = D["/experts/w2"].astype(np.float64)
    f_ = W1.shape[2]
    b1 = D["/experts/b1"].astype(np.float64) if "/experts/b1" in D else np.zeros((E, f_))
    b2 = D["/experts/b2"].astype(np.float64) if "/experts/b2" in D else np.zeros((E, d))
    W3 = D["/experts/w3"].astype(np.float64) if swiglu else None
    route_expert = D["/routing/expert"]
    route_weight = D["/routing/weight"]

    # --- Shapes and presence ---------------------------------------------------------------------
    check(T == P * T_local, f"/x has T = {T} = num_ranks·tokens-per-rank rows")
    shapes = {"/dy": (T, d), "/y": (T, d), "/grad/x": (T, d), "/router/w": (d, E), "/router/bias": (E,),
              "/grad/router/w": (d, E), "/routing/expert": (T, k), "/routing/weight": (T, k), "/loss/aux": (),
              "/loss/z": (), "/experts/w1": (E, d, f_), "/experts/w2": (E, f_, d), "/grad/experts/w1": (E, d, f_),
              "/grad/experts/w2": (E, f_, d)}
    if A.get("expert-bias", "true") == "true":
        shapes.update({"/experts/b1": (E, f_), "/experts/b2": (E, d), "/grad/experts/b1": (E, f_),
                       "/grad/experts/b2": (E, d)})
    if swiglu:
        shapes.update({"/experts/w3": (E, d, f_), "/grad/experts/w3": (E, d, f_)})
    if noisy:
        shapes.update({"/router/w_noise": (d, E), "/grad/router/w_noise": (d, E), "/router/noise_eps": (T, E)})
    bad = [f"{name} {D[name].shape if name in D else 'missing'} != {shape}" for name, shape in shapes.items()
           if name not in D or D[name].shape != shape]
    check(not bad, f"{len(shapes)} datasets present with the documented shapes" + (": " + "; ".join(bad) if bad else ""))
    if bad:
        return
    check(route_expert.dtype == np.int32, f"/routing/expert dtype {route_expert.dtype} is int32")

    # --- Synthetic data and parameters (docs/layer.md): also proves global gather order ---------------
    tok = np.arange(T * d, dtype=np.uint64)
    check_close("x == normal(seed, tokens stream, t·d+i)", D["/x"],
                rng_normal(seed, per_step(STREAM["tokens"], step), tok).reshape(T, d), 1e-6)
    check_close("dy == normal(seed, upstream stream, t·d+i)", D["/dy"],
                rng_normal(seed, per_step(STREAM["upstream"], step), tok).reshape(T, d), 1e-6)
    # Parameters are in their initial state only if no SGD step ran before the dump (it is written at step 0).
    check_close("router w == normal(router stream, i·E+e)/√d", D["/router/w"],
                rng_normal(seed, STREAM["router_w"], np.arange(d * E)).reshape(d, E) / np.sqrt(d), 1e-6)
    check_close("w1[e] == normal(w1 stream, (e·d+i)·f+j)/√d (global expert order)", D["/experts/w1"],
                rng_normal(seed, STREAM["w1"], np.arange(E * d * f_)).reshape(E, d, f_) / np.sqrt(d), 1e-6)
    check_close("w2[e] == normal(w2 stream, (e·f+j)·d+i)/√f (global expert order)", D["/experts/w2"],
                rng_normal(seed, STREAM["w2"], np.arange(E * f_ * d)).reshape(E, f_, d) / np.sqrt(f_), 1e-6)
    if swiglu:
        check_close("w3[e] like w1 with the w3 stream", D["/experts/w3"],
                    rng_normal(seed, STREAM["w3"], np.arange(E * d * f_)).reshape(E, d, f_) / np.sqrt(d), 1e-6)
    want_bias = -skew * np.log(np.arange(E) + 1.0)
    err = float(np.max(np.abs(bias - want_bias)))
    check(err < 1e-6, f"router bias == -skew·ln(e+1) (max abs err {err:.1e})")

    # --- Router --------------------------------------------------------------------------------------
    logits = x @ Wr + bias
    m = logits.max(axis=1, keepdims=True)
    ex = np.exp(logits - m)
    probs = ex / ex.sum(axis=1, keepdims=True)
    lse = (m + np.log(ex.sum(axis=1, keepdims=True)))[:, 0]
    z = float(np.mean(lse**2))
    z_dump = float(D["/loss/z"])
    check(abs(z_dump - z) <= 1e-5 * abs(z), f"z == mean(logsumexp(logits)²): {z_dump:.8g} vs {z:.8g} "
          f"(rel err {abs(z_dump - z) / abs(z):.2e})")

    if noisy:
        Wn = D["/router/w_noise"].astype(np.float64)
        eps_dump = D["/router/noise_eps"]
        eps_want = rng_normal(seed, per_step(STREAM["gate_noise"], step), np.arange(T * E)).reshape(T, E)
        check_close("noise_eps == normal(seed, noise stream, t·E+e)", eps_dump, eps_want, 1e-6)
        check_close("router w_noise == 0.1·normal(noise-w stream, i·E+e)/√d", D["/router/w_noise"],
                    0.1 * rng_normal(seed, STREAM["router_noise_w"], np.arange(d * E)).reshape(d, E) / np.sqrt(d),
                    1e-6)
        eps = eps_dump.astype(np.float64)
        noise_logits = x @ Wn
        score = logits + eps * softplus(noise_logits)
    else:
        score = probs

    # Selection: k largest scores, descending, ties to the lower index (a stable sort of -score).
    order = np.argsort(-score, axis=1, kind="stable")
    sel = order[:, :k]
    sorted_scores = np.take_along_axis(score, order[:, :min(k + 1, E)], axis=1)
    gaps = -np.diff(sorted_scores, axis=1)
    ambiguous = np.any(gaps < 1e-5 * np.maximum(1.0, np.abs(sorted_scores[:, :-1])), axis=1)
    if ambiguous.any():
        print(f"note: {int(ambiguous.sum())} token(s) with near-tied scores (float32 may order them differently); "
              "selection-dependent checks skip them")

    # Gate weights for every selected slot.
    p_sel = np.take_along_axis(probs, sel, axis=1)
    if gate in ("topk", "switch"):
        w = p_sel / p_sel.sum(axis=1, keepdims=True) if (renormalize and gate == "topk") else p_sel.copy()
    elif gate == "gshard":
        w = p_sel / p_sel.sum(axis=1, keepdims=True)
    elif noisy:
        h_sel = np.take_along_axis(score, sel, axis=1)
        eh = np.exp(h_sel - h_sel[:, :1])
        w = eh / eh.sum(axis=1, keepdims=True)
    else:
        check(False, f"unknown gate {gate!r}")
        return

    # Routed slots: all, except GShard's second slot when U[t] >= 2·w_1 (float32, as the layer compares).
    routed = np.ones((T, k), dtype=bool)
    if gate == "gshard":
        coin = rng_uniform(seed, per_step(STREAM["gshard_uniform"], step), np.arange(T))
        routed[:, 1] = coin < np.float32(2.0) * route_weight[:, 1].astype(np.float32)
        print(f"note: gshard routes the second slot of {int(routed[:, 1].sum())} of {T} tokens")

    kept = route_expert >= 0
    n_kept, n_slots = int(kept.sum()), T * k
    clear = ~ambiguous
    # (b) Every kept slot names the recomputed expert; every weight (kept or not) is the recomputed one.
    mismatch = kept & clear[:, None] & (route_expert != sel)
    check(not mismatch.any(), f"kept slots route to the recomputed top-{k} experts ({int(mismatch.sum())} mismatches)")
    check(not np.any(kept & ~routed), "no unrouted (gshard) slot is kept")
    werr = float(np.max(np.abs(route_weight.astype(np.float64) - w)[clear])) if clear.any() else 0.0
    what = {"topk": "p[t,e_j]" + (" / Σ_j p" if renormalize else ""), "switch": "p[t,e_0]",
            "gshard": "p_j/(p_0+p_1)", "noisy-topk": "softmax of the kept h"}[gate]
    check(werr < 1e-5, f"routing/weight == {what} for all slots (max abs err {werr:.1e})")

    # Aux loss: E·Σ f_e·P̄_e, f_e = routed assignments (before capacity) / (T·k).
    counts = np.zeros(E)
    np.add.at(counts, sel[routed], 1.0)
    fe = counts / (T * k)
    pbar = probs.mean(axis=0)
    aux = E * float(np.sum(fe * pbar))
    aux_dump = float(D["/loss/aux"])
    check(abs(aux_dump - aux) <= 1e-5 * abs(aux), f"aux == E·Σ f_e·P̄_e: {aux_dump:.8g} vs {aux:.8g} "
          f"(rel err {abs(aux_dump - aux) / abs(aux):.2e})")

    # --- Capacity: which routed assignments are kept ----------------------------------------------------
    N = T_local if scope == "local" else T
    if cf > 0:
        xc = cf * N * k / E
        capacity = int(math.ceil(xc - 1e-9 * max(1.0, xc)))
    else:
        capacity = None
    if ambiguous.any():
        print("note: capacity mask check skipped (near-tied scores)")
    else:
        want_kept = np.zeros((T, k), dtype=bool)
        group = (np.arange(T) // T_local) if scope == "local" else np.zeros(T, dtype=int)
        for g in np.unique(group):
            for e in range(E):
                tt, jj = np.nonzero(routed & (sel == e) & (group[:, None] == g))
                if capacity is None:
                    want_kept[tt, jj] = True
                    continue
                if policy == "position":
                    rank = np.lexsort((jj, tt))
                else:  # probs: descending weight, ties by ascending global token index
                    rank = np.lexsort((tt, -route_weight[tt, jj].astype(np.float64)))
                keep = rank[:capacity]
                want_kept[tt[keep], jj[keep]] = True
        diff = int(np.sum(want_kept != kept))
        check(diff == 0, f"kept slots follow capacity {capacity if capacity is not None else 'dropless'} "
              f"({scope} scope, {policy} policy): {diff} slots differ")

    # (e) Something is kept; a skewed, capacity-bound run drops something.
    check(n_kept > 0, f"{n_kept} of {n_slots} slots kept")
    if 0 < cf <= 1.0 and skew >= 1.0:
        check(n_kept < int(routed.sum()), f"{int(routed.sum()) - n_kept} routed slots dropped (cf {cf:g} <= 1, "
              f"skew {skew:g} >= 1)")

    # --- Forward and backward of the experts, slot by slot (float64) ----------------------------------
    y = np.zeros((T, d))
    dx = np.zeros((T, d))
    dw = np.zeros((T, k))  # dL/dw[t,j] = dy_t · FFN_e(x_t) for kept slots
    gW1, gb1, gW2, gb2 = np.zeros_like(W1), np.zeros_like(b1), np.zeros_like(W2), np.zeros_like(b2)
    gW3 = np.zeros_like(W3) if swiglu else None
    wd = route_weight.astype(np.float64)  # the layer's own (float32) weights, so this isolates the experts
    for e in range(E):
        tt, jj = np.nonzero(route_expert == e)
        if tt.size == 0:
            continue
        xe = x[tt]
        h1 = xe @ W1[e] + b1[e]
        if swiglu:
            h3 = xe @ W3[e]
            a = act("silu", h1) * h3
        else:
            a = act(activation, h1)
        out = a @ W2[e] + b2[e]
        np.add.at(y, tt, wd[tt, jj][:, None] * out)
        dw[tt, jj] = np.sum(dy[tt] * out, axis=1)
        go = wd[tt, jj][:, None] * dy[tt]           # dL/d out
        gW2[e] = a.T @ go
        gb2[e] = go.sum(axis=0)
        ga = go @ W2[e].T                           # dL/d a
        if swiglu:
            gh1 = ga * h3 * act_grad("silu", h1)
            gh3 = ga * act("silu", h1)
            gW3[e] = xe.T @ gh3
            gxe = gh1 @ W1[e].T + gh3 @ W3[e].T
        else:
            gh1 = ga * act_grad(activation, h1)
            gxe = gh1 @ W1[e].T
        gW1[e] = xe.T @ gh1
        gb1[e] = gh1.sum(axis=0)
        np.add.at(dx, tt, gxe)

    print("relative errors (‖dump − oracle‖/‖oracle‖):")
    check_close("y == Σ_kept w·FFN_e(x)", D["/y"], y, RTOL_FORWARD)
    check_close("grad/experts/w2", D["/grad/experts/w2"], gW2, RTOL_FORWARD)
    check_close("grad/experts/w1", D["/grad/experts/w1"], gW1, RTOL_FORWARD)
    if "/grad/experts/b2" in D:
        check_close("grad/experts/b2", D["/grad/experts/b2"], gb2, RTOL_FORWARD)
        check_close("grad/experts/b1", D["/grad/experts/b1"], gb1, RTOL_FORWARD)
    if swiglu:
        check_close("grad/experts/w3", D["/grad/experts/w3"], gW3, RTOL_FORWARD)

    # --- Router backward: dL/dw → dL/dp (or dL/dh) → dL/dlogits, plus aux and z terms ------------------
    if ambiguous.any():
        print("note: router gradient checks skipped (near-tied scores)")
        return
    dp = np.tile(aux_coef * E * fe / T, (T, 1))     # d(aux_coef·aux)/dp[t,e], f_e constant
    dnoise = np.zeros((T, E))
    dh = None
    rows = np.arange(T)[:, None]
    if gate in ("topk", "switch") and not (renormalize and gate == "topk"):
        np.add.at(dp, (np.repeat(np.arange(T), k), sel.ravel()), dw.ravel())
    elif gate in ("topk", "gshard"):  # w_j = p_j / S, S = Σ over all selected slots (routed or not)
        S = p_sel.sum(axis=1, keepdims=True)
        c = np.sum(dw * w, axis=1, keepdims=True)
        np.add.at(dp, (np.repeat(np.arange(T), k), sel.ravel()), ((dw - c) / S).ravel())
    else:  # noisy: w = softmax over the selected h
        c = np.sum(dw * w, axis=1, keepdims=True)
        dh = w * (dw - c)
    dlogits = probs * (dp - np.sum(probs * dp, axis=1, keepdims=True))
    dlogits += z_coef * (2.0 / T) * lse[:, None] * probs
    if dh is not None:
        np.add.at(dlogits, (np.repeat(np.arange(T), k), sel.ravel()), dh.ravel())
        dnoise[rows, sel] = dh * eps[rows, sel] * sigmoid(noise_logits[rows, sel])
    gWr = x.T @ dlogits
    dx += dlogits @ Wr.T
    check_close("grad/router/w == xᵀ·dlogits (summed over ranks)", D["/grad/router/w"], gWr, RTOL_ROUTER)
    if noisy:
        gWn = x.T @ dnoise
        dx += dnoise @ Wn.T
        check_close("grad/router/w_noise", D["/grad/router/w_noise"], gWn, RTOL_ROUTER)
    check_close("grad/x (experts + router)", D["/grad/x"], dx, RTOL_ROUTER)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except (KeyError, OSError) as error:
        failures.append(str(error))
        print(f"FAIL: cannot read what docs/hdf5.md promises from {sys.argv[1]}: {error!r}", file=sys.stderr)
    if failures:
        print(f"check_dump: {len(failures)} check(s) FAILED", file=sys.stderr)
        sys.exit(1)
    print("check_dump: all checks passed")
