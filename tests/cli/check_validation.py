#!/usr/bin/env python3
"""usage: check_validation.py VALIDATION_PY

experiments/validation.py's metrics on synthetic logs with closed-form answers: 2 cases x 3 schedules of
fake `expar layer` logs (3 steps, 1 warm-up, 2 ranks) and fake `expar simulate` logs, whose medians,
errors and schedule picks are known by construction. Also checks `replay` (counts reshaped [S, 1, E]).
"""
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

script = sys.argv[1]
tmp = tempfile.mkdtemp()
S, P, E, warmup = 4, 2, 4, 1  # 1 warm-up + 3 timed steps


def write_measured(path, step_us, phase_us):
    """Timed steps: step times step_us * (0.9, 1.0, 1.3) on rank 0 (median = step_us), rank 1 half of
    rank 0; every phase column of rank 0 = phase_us[column] * the same factors. Warm-up step: 100x."""
    factors = np.array([100.0, 0.9, 1.0, 1.3])
    with h5py.File(path, "w") as f:
        step = np.zeros((S, P))
        step[:, 0] = step_us * factors
        step[:, 1] = 0.5 * step[:, 0]
        phase = np.zeros((S, P, 10))
        phase[:, 0, :] = factors[:, None] * np.asarray(phase_us)[None, :]
        phase[:, 1, :] = 0.5 * phase[:, 0, :]
        f["/steps/step_time_us"] = step
        f["/steps/phase_time_us"] = phase
        # As expar writes it (src/layer/phase.h): count exchange inside route, layout inside dispatch.
        f["/steps/phase_time_us"].attrs["simulated_phases"] = (
            "forward/route,forward/route,forward/dispatch,forward/dispatch,forward/expert,forward/combine,"
            "backward/combine,backward/expert,backward/dispatch,backward/route")
        f["/experts/requested"] = np.arange(S * E, dtype=np.int64).reshape(S, E)


def write_predicted(path, step_us, phase8_us):
    factors = np.array([7.0, 1.0, 1.1, 0.8])  # median of the 3 timed = 1.0
    with h5py.File(path, "w") as f:
        f["/sim/step_time_us"] = step_us * factors
        f["/sim/phase_time_us"] = factors[:, None] * np.asarray(phase8_us)[None, :]


# Layer phases (10 columns): route 1, count 2, layout 3, dispatch 4, expert 10, combine 5, b.combine 6,
# b.expert 20, b.dispatch 7, b.route 8 -> folded (route 3, dispatch 7, 10, 5, 6, 20, 7, 8).
layer_phases = [1, 2, 3, 4, 10, 5, 6, 20, 7, 8]
folded = np.array([3, 7, 10, 5, 6, 20, 7, 8], dtype=float)
# Case A (P 2): measured plain 100, pairwise 120, hierarchical 110; predicted 110, 108 (-10%), 99.
# Simulator picks hierarchical, measured fastest is plain: wrong pick, measured cost 110/100 - 1 = +10%.
# Case B (P 4): measured 200, 150, 300; predicted 180, 165, 330: right pick (pairwise).
configs = [("2", "plain", 100, 110), ("2", "pairwise", 120, 108), ("2", "hierarchical", 110, 99),
           ("4", "plain", 200, 180), ("4", "pairwise", 150, 165), ("4", "hierarchical", 300, 330)]
# Predicted phases = folded * (1 + phase error); phase errors by configuration.
phase_err = [0.0, 0.1, -0.2, 0.3, 0.05, -0.4]
manifest = os.path.join(tmp, "manifest.txt")
with open(manifest, "w") as m:
    for i, (ranks, schedule, meas, pred) in enumerate(configs):
        mp, sp = os.path.join(tmp, f"m{i}.h5"), os.path.join(tmp, f"s{i}.h5")
        write_measured(mp, meas, layer_phases)
        write_predicted(sp, pred, folded * (1 + phase_err[i]))
        # Configuration 0 was measured and simulated twice (the same logs: pooled steps, the same medians),
        # configuration 1 simulated twice, on two calibrations, 1.0x and 1.2x: the pooled timed steps
        # (1, 1.1, 0.8, 1.2, 1.32, 0.96) x base have the median 1.05 x base, so base = 108 / 1.05.
        logs = mp + "," + mp if i == 0 else mp
        sims = sp + "," + sp if i == 0 else sp
        if i == 1:
            sims = ",".join(os.path.join(tmp, f"s1_{j}.h5") for j in (0, 1))
            for j, scale in enumerate((1.0, 1.2)):
                write_predicted(os.path.join(tmp, f"s1_{j}.h5"), scale * pred / 1.05,
                                scale * folded * (1 + phase_err[i]) / 1.05)
        # Case A: one core per rank; case B: 4 ranks on 2 cores.
        topology = os.path.join(tmp, f"topology_{ranks}.yaml")
        with open(topology, "w") as t:
            t.write(f"links: {{}}\nshared_cores: {{ranks_per_host: {ranks}, cores_per_host: 2}}\n")
        topologies = topology + "," + topology if i == 0 else topology
        m.write("\t".join([str(i), ranks, "2", "1.5", "0.5", "2", schedule, logs, sims, "layer cmd", "sim cmd",
                           topologies]) + "\n")
out = os.path.join(tmp, "validation.h5")
subprocess.run([sys.executable, script, "analyse", manifest, out, "--load-start", "1 2 3", "--load-end", "4 5 6",
                "--warmup", str(warmup)], check=True, stdout=subprocess.DEVNULL)

meas = np.array([c[2] for c in configs], dtype=float)
pred = np.array([c[3] for c in configs], dtype=float)
with h5py.File(out, "r") as f:
    np.testing.assert_allclose(f["measured/step_time_us"][()], meas)
    np.testing.assert_allclose(f["predicted/step_time_us"][()], pred)
    err = f["error/step"][()]
    np.testing.assert_allclose(err, [0.1, -0.1, -0.1, -0.1, 0.1, 0.1])
    np.testing.assert_allclose(f["measured/phase_time_us"][()], np.tile(folded, (6, 1)))
    np.testing.assert_allclose(f["error/phase"][()], np.array(phase_err)[:, None] * np.ones((6, 8)), atol=1e-12)
    np.testing.assert_allclose(f["measured/step_spread"][()], 0.4)  # (1.3 - 0.9) / 1.0
    np.testing.assert_allclose(f["measured/run_spread"][()], 0.0)  # one run, or two equal ones
    s = f["summary"].attrs
    assert abs(s["median_abs_error_layer"] - 0.1) < 1e-12, s["median_abs_error_layer"]
    # |phase errors| 0, .1, .2, .3, .05, .4, 8 phases each: median of 48 values = (0.1 + 0.2) / 2.
    assert abs(s["median_abs_error_phase"] - 0.15) < 1e-12, s["median_abs_error_phase"]
    # Phases >= 5% of the measured step: 7, 6, 6, 2, 3 and 1 of the 8 in the six configurations (steps
    # 100, 120, 110, 200, 150, 300), errors 0, .1, .2, .3, .05, .4: the 13th of the 25 sorted is 0.1.
    assert abs(s["median_abs_error_phase_significant"] - 0.1) < 1e-12, s["median_abs_error_phase_significant"]
    # Split by regime: case A's phase errors 0, .1, .2 (median .1), case B's .3, .05, .4 (median .3).
    assert f["configs/shares_cores"][()].tolist() == [0, 0, 0, 1, 1, 1]
    assert abs(s["median_abs_error_phase_own_core"] - 0.1) < 1e-12, s["median_abs_error_phase_own_core"]
    assert abs(s["median_abs_error_phase_shared_cores"] - 0.3) < 1e-12, s["median_abs_error_phase_shared_cores"]
    assert abs(s["median_abs_error_layer_own_core"] - 0.1) < 1e-12 and s["num_configs_shared_cores"] == 3
    assert f["picks/measured_fastest"][()].tolist() == [0, 1]
    assert f["picks/predicted_fastest"][()].tolist() == [2, 1]
    np.testing.assert_allclose(f["picks/measured_cost_of_pick"][()], [0.1, 0.0])
    assert s["pick_fraction"] == 0.5
    assert f.attrs["load_average_start"] == "1 2 3" and f.attrs["load_average_end"] == "4 5 6"
    assert f["configs/case"][()].tolist() == [0, 0, 0, 1, 1, 1]
    yaml = [t.decode() if isinstance(t, bytes) else t for t in f["configs/topology_yaml"][()]]
    doc = "links: {}\nshared_cores: {ranks_per_host: 2, cores_per_host: 2}\n"
    assert yaml[0] == doc + "---\n" + doc and yaml[1] == doc, yaml[:2]

replay = os.path.join(tmp, "replay.h5")
subprocess.run([sys.executable, script, "replay", os.path.join(tmp, "m0.h5"), replay], check=True)
with h5py.File(replay, "r") as f:
    counts = f["counts"][()]
    assert counts.shape == (S, 1, E) and counts.dtype == np.int64
    assert (counts[:, 0, :] == np.arange(S * E).reshape(S, E)).all()
print("check_validation: OK")
