"""Drift between CPU kernel paths: the default staircase run on several kernel paths, per-level means compared.

Float kernels differ between CPUs (vector width, FMA, MKL's code path), and training amplifies the
rounding. This script stands in for "another CPU" by switching kernel paths on this one:

  native   the path torch picks here (ATEN_CPU_CAPABILITY and MKL_CBWR unset)
  default  ATEN_CPU_CAPABILITY=default (ATen's scalar / non-vectorised kernels)
  avx2     ATEN_CPU_CAPABILITY=avx2
  avx512   ATEN_CPU_CAPABILITY=avx512
  cbwr     MKL_CBWR=COMPATIBLE (MKL's conditional-numerical-reproducibility path: other GEMM kernels)
  NAME:VAR=VAL[,VAR=VAL...]   any other environment

For each estimator and path it runs, one process at a time,

  OMP_NUM_THREADS=1 MIBENCH_RUNS=<out>/<path>/<estimator>_s<seed> \
      python -m mibench estimator=<e> seed=<s> logger=csv trainer.enable_progress_bar=false \
      benchmark.plot=false hydra.run.dir=<that root>/run [dataset.steps_per_level=<n>]

(a run directory that already holds a finished run is reused, so an interrupted sweep continues where it
stopped), reads each run's summary.csv (per level: the mean estimate over the level's steps) and steps.csv
(per step), and prints Markdown: one table per path compared with the first, one row per bound, per level
the first path's mean and |delta| of that path's mean, the max |delta| over levels, and the first step at
which the per-step estimates differ by more than 1e-6 and 1e-3. With --sd-seeds it also runs those seeds on
the first path and prints the seed-to-seed sd of the per-level means and the ratio drift / sd.

  python bench/drift.py --estimators infonce mine --paths native default --out /tmp/drift
  python bench/drift.py --estimators infonce --steps-per-level 500 --paths native default cbwr
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# the trainable bounds of the default staircase (tests/golden/cases.py STAIRCASE_ESTIMATORS)
STAIRCASE_ESTIMATORS = ["dv", "mine", "nwj", "tuba", "infonce", "js", "smile", "smile_js", "alpha", "eta_mine",
                        "remine", "renwj", "reinfonce", "resmile", "retuba", "rejs"]
PATHS = {"native": {}, "default": {"ATEN_CPU_CAPABILITY": "default"}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
         "avx512": {"ATEN_CPU_CAPABILITY": "avx512"}, "cbwr": {"MKL_CBWR": "COMPATIBLE"}}
KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS")
THRESHOLDS = (1e-6, 1e-3)


def parse_path(spec: str) -> tuple[str, dict[str, str]]:
    if spec in PATHS:
        return spec, dict(PATHS[spec])
    name, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise SystemExit(f"drift.py: unknown path {spec!r} (known: {', '.join(PATHS)}; or NAME:VAR=VAL[,VAR=VAL])")
    env = {}
    for kv in rest.split(","):
        k, eq, v = kv.partition("=")
        if not eq:
            raise SystemExit(f"drift.py: bad VAR=VAL {kv!r} in path {spec!r}")
        env[k] = v
    return name, env


def run_dir(out: Path, path: str, est: str, seed: int) -> Path:
    return out / path / f"{est}_s{seed}" / "run"


def finished(d: Path) -> bool:
    try:
        status = json.loads((d / "result.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return False
    return status in ("completed", "diverged") and (d / "summary.csv").exists() and (d / "steps.csv").exists()


def run_one(args, path: str, env_extra: dict[str, str], est: str, seed: int) -> tuple[Path, float | None]:
    d = run_dir(args.out, path, est, seed)
    if finished(d):
        return d, None
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
    env.update(env_extra)
    env["OMP_NUM_THREADS"] = str(args.threads)
    env["MKL_NUM_THREADS"] = str(args.threads)
    env["MIBENCH_RUNS"] = str(d.parent)
    cmd = [args.python, "-m", "mibench", f"estimator={est}", f"seed={seed}", "logger=csv",
           "trainer.enable_progress_bar=false", "benchmark.plot=false", f"hydra.run.dir={d}", "overwrite=true"]
    if args.steps_per_level is not None:
        cmd.append(f"dataset.steps_per_level={args.steps_per_level}")
    cmd += args.override
    d.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(d.parent / "log.txt", "w") as log:
        shown = {**env_extra, "OMP_NUM_THREADS": env["OMP_NUM_THREADS"], "MIBENCH_RUNS": env["MIBENCH_RUNS"]}
        log.write(" ".join(f"{k}={v}" for k, v in sorted(shown.items())) + " " + " ".join(cmd) + "\n")
        log.flush()
        rc = subprocess.call(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if rc != 0 or not finished(d):
        raise SystemExit(f"drift.py: run failed (rc {rc}): {d.parent / 'log.txt'}")
    return d, wall


def first_step(a: np.ndarray, b: np.ndarray, tol: float) -> int | None:
    """First step index where |a - b| > tol (a step finite on one side only counts; NaN on both does not);
    a run that stopped early (divergence) differs from the first missing step on."""
    n = min(len(a), len(b))
    x, y = a[:n], b[:n]
    differ = (np.abs(x - y) > tol) | (np.isfinite(x) != np.isfinite(y))
    idx = np.flatnonzero(differ)
    if idx.size:
        return int(idx[0])
    return n if len(a) != len(b) else None


def load(d: Path) -> tuple[pd.DataFrame, np.ndarray]:
    return pd.read_csv(d / "summary.csv"), pd.read_csv(d / "steps.csv")["estimate"].to_numpy(dtype=float)


def fmt(x: float, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    if abs(x) < 10 ** -nd:
        return f"{x:.0e}"
    if abs(x) >= 1e4:  # a bound that blew up (SMILE's unclipped joint term, JS's NWJ value)
        return f"{x:.2e}"
    return f"{x:.{nd}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--estimators", nargs="+", default=STAIRCASE_ESTIMATORS)
    p.add_argument("--paths", nargs="+", default=["native", "default"],
                   help="kernel paths; the first is the reference (default: native default)")
    p.add_argument("--steps-per-level", type=int, default=None, help="default: the config's (4,000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sd-seeds", type=int, nargs="*", default=[],
                   help="more seeds to run on the first path: seed-to-seed sd of the level means")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "drift", help="runs root of this sweep")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS / MKL_NUM_THREADS of every run")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--override", nargs="*", default=[], help="more key=value for every run")
    args = p.parse_args()
    args.out = args.out.resolve()
    paths = [parse_path(s) for s in args.paths]
    ref = paths[0][0]

    rows, summaries, steps = [], {}, {}
    jobs = [(name, env, est, args.seed) for est in args.estimators for name, env in paths]
    jobs += [(ref, paths[0][1], est, s) for est in args.estimators for s in args.sd_seeds if s != args.seed]
    t_all = time.perf_counter()
    for k, (name, env, est, seed) in enumerate(jobs, 1):
        d, wall = run_one(args, name, env, est, seed)
        summaries[name, est, seed], steps[name, est, seed] = load(d)
        note = "reused" if wall is None else f"{wall:.1f} s"
        print(f"[{k}/{len(jobs)}] {name:8s} {est:10s} seed {seed}: {note}", file=sys.stderr, flush=True)
    print(f"drift.py: {len(jobs)} runs in {time.perf_counter() - t_all:.0f} s", file=sys.stderr)

    levels = summaries[ref, args.estimators[0], args.seed]["true_mi"].tolist()
    out_md = []
    steps_txt = args.steps_per_level if args.steps_per_level is not None else "4,000 (config)"
    for name, env in paths[1:]:
        envs = " ".join(f"{k}={v}" for k, v in env.items()) or "(no kernel variable)"
        out_md.append(f"\n**{ref} vs {name}** ({envs}); seed {args.seed}, {steps_txt} steps/level, "
                      f"{args.threads} thread(s). Cells: {ref} level mean (|Δ| {name}).\n")
        head = ["bound"] + [f"MI {fmt(float(m), 0)}" for m in levels] + ["max \\|Δ\\|", "step >1e-6", "step >1e-3"]
        out_md.append("| " + " | ".join(head) + " |")
        out_md.append("|" + "---|" * len(head))
        for est in args.estimators:
            a, b = summaries[ref, est, args.seed], summaries[name, est, args.seed]
            cells, deltas = [], []
            for i in range(len(levels)):
                ma = float(a["mean"].iloc[i]) if i < len(a) else math.nan
                mb = float(b["mean"].iloc[i]) if i < len(b) else math.nan
                div = any(i < len(s) and bool(s["diverged"].iloc[i]) for s in (a, b))
                dl = abs(ma - mb)
                deltas.append(dl)
                cells.append(f"{fmt(ma)} ({fmt(dl)})" + (" †" if div else ""))
                rows.append({"estimator": est, "path": name, "ref": ref, "seed": args.seed, "level": i,
                             "true_mi": levels[i], "mean_ref": ma, "mean_path": mb, "abs_delta": dl, "diverged": div})
            sa, sb = steps[ref, est, args.seed], steps[name, est, args.seed]
            f6, f3 = (first_step(sa, sb, t) for t in THRESHOLDS)
            finite = [x for x in deltas if not math.isnan(x)]
            mx = max(finite) if finite else math.nan
            for r in rows[-len(levels):]:
                r.update(max_abs_delta=mx, first_step_1e6=f6, first_step_1e3=f3, steps=len(sa))
            out_md.append(f"| {est} | " + " | ".join(cells) + f" | {fmt(mx)} | "
                          f"{'never' if f6 is None else f6} | {'never' if f3 is None else f3} |")
    if args.sd_seeds:
        seeds = sorted({args.seed, *args.sd_seeds})
        out_md.append(f"\n**Seed-to-seed sd** of the level means on {ref} (seeds {', '.join(map(str, seeds))}, "
                      f"ddof 1), and max over levels of |Δ| / sd for each compared path.\n")
        head = (["bound"] + [f"sd MI {fmt(float(m), 0)}" for m in levels]
                + [f"max \\|Δ\\|/sd {n}" for n, _ in paths[1:]])
        out_md.append("| " + " | ".join(head) + " |")
        out_md.append("|" + "---|" * len(head))
        for est in args.estimators:
            means = np.array([summaries[ref, est, s]["mean"].reindex(range(len(levels))).to_numpy(dtype=float)
                              for s in seeds])
            sd = means.std(axis=0, ddof=1)
            ratios = []
            for name, _ in paths[1:]:
                dl = np.array([r["abs_delta"] for r in rows if r["estimator"] == est and r["path"] == name])
                ratios.append(fmt(float(np.nanmax(dl / sd)), 2))
            for i, s in enumerate(sd):
                for r in rows:
                    if r["estimator"] == est and r["level"] == i:
                        r["seed_sd"] = float(s)
            out_md.append(f"| {est} | " + " | ".join(fmt(float(s)) for s in sd) + " | " + " | ".join(ratios) + " |")
    text = "\n".join(out_md).lstrip("\n") + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "drift.md").write_text(text)
    if rows:
        pd.DataFrame(rows).to_csv(args.out / "drift.csv", index=False, float_format="%.9g")


if __name__ == "__main__":
    main()
