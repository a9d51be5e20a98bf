#!/usr/bin/env python3
"""The simulator against measured `expar layer` runs (experiments/validation.sh; experiments/validation.md).

  validation.py replay MEASURED.h5 OUT.h5
      OUT.h5:/counts [S, 1, E] = the measured run's /experts/requested (summed over ranks), for
      `expar simulate --routing replay` (one training rank, tiled to every simulated rank).
  validation.py spread MEASURED.h5 [--warmup W]
      prints (max - min) / median of the timed steps' slowest-rank step times (the run's own noise).
  validation.py analyse MANIFEST OUT.h5 [--load-start "a b c"] [--load-end "a b c"] [--warmup W]
      MANIFEST: one tab-separated line per configuration
      (index, P, ranks per node, cf, skew, k, schedule, measured log(s, comma-separated: repeated runs whose
      timed steps are pooled), simulated log, layer command,
      simulate command[, calibrated topology file]); the simulated logs and topology files may be
      comma-separated too (one per round, simulated on that round's calibration: their steps pooled).
      Writes OUT.h5 and prints a markdown table and the three metrics.

Per configuration: measured layer time = median over timed steps (of every repeated run) of the slowest
rank's step time;
predicted = median over the same steps of the simulated step (of every round's simulation). Phases: the layer's 10 phases folded into
the simulator's 8 (forward/route = route + count exchange, forward/dispatch = layout + dispatch: the layer
log's `simulated_phases` attribute, from src/layer/phase.h), per rank,
then max over ranks, median over steps. Error = predicted / measured - 1. The schedule pick: for every
case (same P, ranks per node, cf, skew, k) the schedule with the smallest predicted time against the one
with the smallest measured time.
"""
import argparse
import datetime
import os
import re
import socket
import subprocess
import sys

import h5py
import numpy as np

SIM_PHASES = ["forward/route", "forward/dispatch", "forward/expert", "forward/combine",
              "backward/combine", "backward/expert", "backward/dispatch", "backward/route"]
SCHEDULES = ["plain", "pairwise", "hierarchical"]
TARGET_LAYER, TARGET_PHASE, TARGET_PICK = 0.10, 0.15, 0.90
# A phase counts in the "significant phases" median when it takes at least this share of the measured step.
SIGNIFICANT_SHARE = 0.05


def replay(measured_path, out_path):
    with h5py.File(measured_path, "r") as f:
        requested = f["/experts/requested"][()]  # [S, E]
    with h5py.File(out_path, "w") as f:
        f["counts"] = requested[:, None, :].astype(np.int64)
        f["counts"].attrs["source"] = f"{measured_path}:/experts/requested"


def measured_times(paths, warmup):
    """(step time [us], phase times [8] in us, slowest-rank step times): medians over the timed steps of
    the slowest rank. paths: one log, or several comma-separated (repeated runs: their timed steps pooled)."""
    steps, phases = [], []
    for path in paths.split(","):
        with h5py.File(path, "r") as f:
            steps.append(f["/steps/step_time_us"][warmup:])      # [S, P]
            phases.append(f["/steps/phase_time_us"][warmup:])    # [S, P, 10]
            if "simulated_phases" not in f["/steps/phase_time_us"].attrs:
                sys.exit(f"validation.py: {path} has no simulated_phases attribute (a log from before expar "
                         "wrote it): run the measurements again")
            fold = f["/steps/phase_time_us"].attrs["simulated_phases"]
            fold = (fold.decode() if isinstance(fold, bytes) else str(fold)).split(",")
    step, phase = np.concatenate(steps), np.concatenate(phases)
    folded = np.zeros(phase.shape[:2] + (len(SIM_PHASES),))
    for column, target in enumerate(fold):  # each layer phase into the simulated phase that holds it
        folded[:, :, SIM_PHASES.index(target)] += phase[:, :, column]
    step_max = step.max(axis=1)
    return float(np.median(step_max)), np.median(folded.max(axis=1), axis=0), step_max


def predicted_times(paths, warmup):
    """(step time [us], phase times [8] in us): medians over the timed steps. paths: one log, or several
    comma-separated (one per measured round, each on that round's calibration: their steps pooled)."""
    steps, phases = [], []
    for path in paths.split(","):
        with h5py.File(path, "r") as f:
            steps.append(f["/sim/step_time_us"][warmup:])      # [S]
            phases.append(f["/sim/phase_time_us"][warmup:])    # [S, 8]
    return float(np.median(np.concatenate(steps))), np.median(np.concatenate(phases), axis=0)


def shared_cores(topology_path):
    """True when the calibrated topology says its host's ranks outnumber its cores."""
    with open(topology_path) as f:
        match = re.search(r"shared_cores:\s*\{\s*ranks_per_host:\s*(\d+),\s*cores_per_host:\s*(\d+)", f.read())
    return bool(match) and int(match.group(1)) > int(match.group(2))


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def analyse(args):
    rows = []
    with open(args.manifest) as f:
        for line in f:
            if line.strip():
                rows.append(line.rstrip("\n").split("\t"))
    n = len(rows)
    if n == 0:
        sys.exit("validation.py: error: empty manifest " + args.manifest)
    P = np.array([int(r[1]) for r in rows])
    rpn = np.array([int(r[2]) for r in rows])
    cf = np.array([float(r[3]) for r in rows])
    skew = np.array([float(r[4]) for r in rows])
    k = np.array([int(r[5]) for r in rows])
    schedule = [r[6] for r in rows]
    meas_step = np.zeros(n)
    pred_step = np.zeros(n)
    meas_phase = np.zeros((n, len(SIM_PHASES)))
    pred_phase = np.zeros((n, len(SIM_PHASES)))
    meas_spread = np.zeros(n)  # (max - min) / median of the timed steps: the measurement's own noise
    # Repeatability: the runs of one configuration, each alone (median of its slowest-rank steps); their
    # (max - min) / pooled median says how far this machine reproduces its own time.
    meas_repeat = np.zeros(n)
    for i, r in enumerate(rows):
        meas_step[i], meas_phase[i], steps = measured_times(r[7], args.warmup)
        pred_step[i], pred_phase[i] = predicted_times(r[8], args.warmup)
        meas_spread[i] = (steps.max() - steps.min()) / meas_step[i]
        runs = [measured_times(path, args.warmup)[0] for path in r[7].split(",")]
        meas_repeat[i] = (max(runs) - min(runs)) / meas_step[i]
    # Ranks outnumbering their host's cores (the calibration's shared_cores, of the first round): there
    # the operating system's time slices, not the network, set much of the exchanges' time.
    shares_cores = np.array([shared_cores(r[11].split(",")[0]) if len(r) > 11 else False for r in rows])
    err_step = pred_step / meas_step - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        err_phase = np.where(meas_phase > 0, pred_phase / meas_phase - 1, np.nan)
    significant = meas_phase >= SIGNIFICANT_SHARE * meas_step[:, None]
    mae_layer = float(np.median(np.abs(err_step)))
    mae_phase = float(np.nanmedian(np.abs(err_phase)))
    mae_phase_sig = float(np.nanmedian(np.abs(err_phase[significant])))
    repeatability = float(np.median(meas_repeat))
    # The same medians over the configurations whose ranks each have a core, and over the others.
    regimes = {"own_core": ~shares_cores, "shared_cores": shares_cores}
    regime_mae = {name: (float(np.median(np.abs(err_step[sel]))) if sel.any() else float("nan"),
                         float(np.nanmedian(np.abs(err_phase[sel]))) if sel.any() else float("nan"), int(sel.sum()))
                  for name, sel in regimes.items()}

    # Cases: configurations equal but for the schedule.
    keys = sorted({(P[i], rpn[i], cf[i], skew[i], k[i]) for i in range(n)})
    case_of = np.array([keys.index((P[i], rpn[i], cf[i], skew[i], k[i])) for i in range(n)])
    meas_pick, pred_pick, gap, fastest = [], [], [], []
    for c in range(len(keys)):
        members = np.flatnonzero(case_of == c)
        m = members[np.argmin(meas_step[members])]
        p = members[np.argmin(pred_step[members])]
        meas_pick.append(SCHEDULES.index(schedule[m]))
        pred_pick.append(SCHEDULES.index(schedule[p]))
        gap.append(meas_step[p] / meas_step[m] - 1)  # measured cost of the simulator's pick
        fastest.append(m)
    meas_pick, pred_pick, gap = np.array(meas_pick), np.array(pred_pick), np.array(gap)
    pick_fraction = float(np.mean(meas_pick == pred_pick))
    # A wrong pick whose measured cost is within the fastest configuration's own run-to-run spread cannot be
    # told from a right one on this machine.
    within_noise = np.array([gap[c] <= meas_repeat[fastest[c]] for c in range(len(keys))])

    with h5py.File(args.out, "w") as f:
        f.attrs["git_revision"] = git_revision()
        f.attrs["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        f.attrs["host"] = socket.gethostname()
        f.attrs["load_average_start"] = args.load_start
        f.attrs["load_average_end"] = args.load_end
        f.attrs["warmup"] = args.warmup
        f.attrs["layer_commands"] = "\n".join(r[9] for r in rows if len(r) > 9)
        f.attrs["simulate_commands"] = "\n".join(r[10] for r in rows if len(r) > 10)
        f.attrs["phases"] = ",".join(SIM_PHASES)
        g = f.create_group("configs")
        g["ranks"], g["ranks_per_node"], g["capacity_factor"] = P, rpn, cf
        g["skew"], g["top_k"], g["case"] = skew, k, case_of
        g["schedule"] = np.array([SCHEDULES.index(s) for s in schedule])
        g["shares_cores"] = shares_cores.astype(np.int8)
        g["shares_cores"].attrs["units"] = "1: the host's ranks outnumber its cores (calibration shared_cores)"
        if all(len(r) > 11 for r in rows):  # the calibrated topology each configuration was simulated on
            texts = []
            for r in rows:  # one file per round: YAML documents separated by "---"
                documents = []
                for path in r[11].split(","):
                    with open(path) as t:
                        documents.append(t.read())
                texts.append("---\n".join(documents))
            g["topology_yaml"] = np.array(texts, dtype=h5py.string_dtype())
            g["topology_yaml"].attrs["format"] = "one YAML document per measured round, separated by ---"
        g["schedule"].attrs["names"] = ",".join(SCHEDULES)
        for name, data, units in [
            ("measured/step_time_us", meas_step, "us"), ("predicted/step_time_us", pred_step, "us"),
            ("measured/phase_time_us", meas_phase, "us"), ("predicted/phase_time_us", pred_phase, "us"),
            ("measured/step_spread", meas_spread, "(max - min) / median over timed steps"),
            ("measured/run_spread", meas_repeat, "(max - min) of the runs' medians / pooled median"),
            ("error/step", err_step, "predicted / measured - 1"),
            ("error/phase", err_phase, "predicted / measured - 1"),
            ("picks/measured_fastest", meas_pick, "index into configs/schedule names"),
            ("picks/predicted_fastest", pred_pick, "index into configs/schedule names"),
            ("picks/measured_cost_of_pick", gap, "measured time of the predicted pick / fastest - 1"),
            ("picks/within_run_spread", within_noise.astype(np.int8), "1: cost of the pick <= the fastest's run_spread"),
        ]:
            f[name] = data
            f[name].attrs["units"] = units
        s = f.create_group("summary")
        for name, value, target in [("median_abs_error_layer", mae_layer, TARGET_LAYER),
                                    ("median_abs_error_phase", mae_phase, TARGET_PHASE),
                                    ("median_abs_error_phase_significant", mae_phase_sig, TARGET_PHASE),
                                    ("pick_fraction", pick_fraction, TARGET_PICK),
                                    ("median_run_spread", repeatability, float("nan"))]:
            s.attrs[name] = value
            s.attrs[name + "_target"] = target
        for regime, (layer, phase, count) in regime_mae.items():
            s.attrs[f"median_abs_error_layer_{regime}"] = layer
            s.attrs[f"median_abs_error_phase_{regime}"] = phase
            s.attrs[f"num_configs_{regime}"] = count

    short = ["f.gate", "f.disp", "f.exp", "f.comb", "b.comb", "b.exp", "b.disp", "b.gate"]
    print("| # | P | rpn | cf | skew | k | schedule | measured [ms] | predicted [ms] | error | "
          + " | ".join(short) + " |")
    print("|" + "---|" * (11 + len(short)))
    for i in range(n):
        cells = [f"{100 * e:+.0f}%" if np.isfinite(e) else "–" for e in err_phase[i]]
        print(f"| {i} | {P[i]} | {rpn[i]} | {cf[i]:g} | {skew[i]:g} | {k[i]} | {schedule[i]} | "
              f"{meas_step[i] / 1e3:.1f} (±{50 * meas_spread[i]:.0f}%) | {pred_step[i] / 1e3:.1f} | "
              f"{100 * err_step[i]:+.1f}% | " + " | ".join(cells) + " |")
    print()
    print("| case | P | rpn | cf | skew | k | measured fastest | predicted fastest | measured cost of the pick |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c, key in enumerate(keys):
        print(f"| {c} | {key[0]} | {key[1]} | {key[2]:g} | {key[3]:g} | {key[4]} | {SCHEDULES[meas_pick[c]]} | "
              f"{SCHEDULES[pred_pick[c]]} | {100 * gap[c]:+.1f}% |")
    print()
    ok = lambda v, t, below=True: "met" if (v <= t if below else v >= t) else "NOT met"
    print(f"median |error| per layer: {100 * mae_layer:.1f}% (target <= {100 * TARGET_LAYER:.0f}%: "
          f"{ok(mae_layer, TARGET_LAYER)})")
    print(f"median |error| per phase: {100 * mae_phase:.1f}% over all {np.isfinite(err_phase).sum()} phases "
          f"(target <= {100 * TARGET_PHASE:.0f}%: {ok(mae_phase, TARGET_PHASE)}); "
          f"{100 * mae_phase_sig:.1f}% over the {significant.sum()} phases >= {100 * SIGNIFICANT_SHARE:.0f}% "
          f"of the step")
    for regime, text in [("own_core", "ranks with a core each"), ("shared_cores", "ranks outnumbering cores")]:
        layer, phase, count = regime_mae[regime]
        if count:
            print(f"  {text} ({count} configurations): {100 * layer:.1f}% per layer, {100 * phase:.1f}% per phase")
    print(f"fastest schedule picked: {int((meas_pick == pred_pick).sum())} of {len(keys)} cases = "
          f"{100 * pick_fraction:.0f}% (target >= {100 * TARGET_PICK:.0f}%: "
          f"{ok(pick_fraction, TARGET_PICK, below=False)}); {int(within_noise.sum())} of {len(keys)} cost no more than "
          f"the fastest configuration's own run-to-run spread")
    print(f"repeatability: the runs of one configuration differ by {100 * repeatability:.1f}% (median over "
          f"configurations of (max - min) of the runs' medians / pooled median; 0 with one run each)")
    print(f"load average: start {args.load_start}, end {args.load_end}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay")
    r.add_argument("measured")
    r.add_argument("out")
    sp = sub.add_parser("spread")
    sp.add_argument("measured")
    sp.add_argument("--warmup", type=int, default=1)
    a = sub.add_parser("analyse")
    a.add_argument("manifest")
    a.add_argument("out")
    a.add_argument("--load-start", default="")
    a.add_argument("--load-end", default="")
    a.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    if args.command == "replay":
        replay(args.measured, args.out)
    elif args.command == "spread":
        median, _, steps = measured_times(args.measured, args.warmup)
        print(f"{(steps.max() - steps.min()) / median:.4f}")
    else:
        analyse(args)


if __name__ == "__main__":
    main()
