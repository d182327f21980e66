"""The shared driver of tests/calibration/calibrate_*.py: each script names its measurements (a function of a
seed returning {quantity: value}) and the limits its tests put on them; this module runs every measurement for
the chosen seeds once per CPU kernel path (a fresh process per path: ATEN_CPU_CAPABILITY is read when torch
starts), then prints, per quantity, the mean and sample sd over all seeds x paths, min / max, the mean per path,
and how many sd the mean sits from the limit, and writes them to tests/calibration/results/<script>.json.

    nice -n 5 .venv/bin/python tests/calibration/calibrate_training.py --seeds 0-4 --paths native,default [--only NAME]

Limits: ("<", L) value < L; (">", L) value > L; ("abs<", L) |value| < L; ("in", lo, hi) lo < value < hi
(quantities are stored as estimate - truth where the test compares with a truth). ``--summary-only`` recomputes
the summary of the stored measurements against the script's current limits, without measuring. Margin in sd: the distance from the mean to the edge
of the passing region, divided by the sd (two-sided: the nearer edge).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the test modules, to reuse their exact setups
PATHS = ("native", "default", "avx2")

Measure = Callable[[int, Path], dict[str, float]]


def seeds_arg(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def margin_sd(limit: tuple, mean: float, sd: float) -> float:
    kind, value = limit[0], limit[1]
    room = {"<": value - mean, ">": mean - value, "abs<": value - abs(mean),
            "in": min(mean - value, limit[-1] - mean)}[kind]
    return room / sd if sd > 0 else (math.inf if room > 0 else -math.inf)


def _worker(measures: dict[str, Measure], names: list[str], seeds: list[int]) -> None:
    import torch

    torch.set_num_threads(1)
    cap = torch.backends.cpu.get_cpu_capability()
    for name in names:
        for s in seeds:
            t0 = time.time()
            with tempfile.TemporaryDirectory() as d:
                torch.manual_seed(s)  # what the tests' autouse fixture does (with 0)
                try:
                    values = measures[name](s, Path(d))
                except Exception as e:  # noqa: BLE001  (reported; the other measurements go on)
                    print(f"  {name} seed={s} failed: {type(e).__name__}: {e}", flush=True)
                    continue
            arrays = values.pop("_arrays", {})  # per-step series, kept in the results file for a later look
            print(json.dumps({"test": name, "seed": s, "capability": cap, "values": values, "arrays": arrays,
                              "seconds": round(time.time() - t0, 1)}), flush=True)


def summarise(rows: list[dict], limits: dict[tuple[str, str], tuple]) -> list[dict]:
    by: dict[tuple[str, str], list[tuple[str, int, float]]] = {}
    for r in rows:
        for q, v in r["values"].items():
            by.setdefault((r["test"], q), []).append((r["path"], r["seed"], float(v)))
    out = []
    for (test, q), vals in by.items():
        xs = [v for _, _, v in vals]
        mean = statistics.fmean(xs)
        sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
        per_path = {p: statistics.fmean(v for pp, _, v in vals if pp == p) for p in dict.fromkeys(p for p, _, _ in vals)}
        lim = limits.get((test, q))
        out.append({"test": test, "quantity": q, "n": len(xs), "seeds": sorted({s for _, s, _ in vals}),
                    "paths": list(per_path), "mean": mean, "sd": sd, "min": min(xs), "max": max(xs),
                    "per_path_mean": per_path, "limit": list(lim) if lim else None,
                    "margin_sd": margin_sd(lim, mean, sd) if lim else None,
                    "all_pass": all(margin_sd(lim, v, 1.0) > 0 for v in xs) if lim else None})
    return out


def main(measures: dict[str, Measure], limits: dict[tuple[str, str], tuple], script: str) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=seeds_arg, default=seeds_arg("0-4"))
    ap.add_argument("--paths", default="native,default")
    ap.add_argument("--only", default="", help="comma-separated measurement names (default: all)")
    ap.add_argument("--summary-only", action="store_true", help="summarise the stored measurements, measure nothing")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    names = [n for n in measures if not a.only or n in a.only.split(",")]
    if a.worker:
        return _worker(measures, names, a.seeds)
    res = HERE / "results" / (Path(script).stem + ".json")
    old = json.loads(res.read_text()) if res.exists() else {"summary": [], "rows": []}
    rows = [r for r in old["rows"] if r["test"] in names] if a.summary_only else []
    for path in ([] if a.summary_only else a.paths.split(",")):
        assert path in PATHS, path
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        env.pop("ATEN_CPU_CAPABILITY", None)
        if path != "native":
            env["ATEN_CPU_CAPABILITY"] = path
        cmd = [sys.executable, script, "--worker", "--seeds", ",".join(map(str, a.seeds)), "--only", ",".join(names)]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
        for line in p.stdout:
            if line.startswith("{"):
                r = json.loads(line)
                assert path == "native" or r["capability"] == path.upper(), r  # the emulated path took effect
                r["path"] = r["capability"]
                rows.append(r)
                print(f"  {r['capability']:7s} {r['test']} seed={r['seed']} ({r['seconds']} s): "
                      + ", ".join(f"{k}={v:.4g}" for k, v in r["values"].items()), flush=True)
        if p.wait():
            sys.exit(f"{path}: worker failed ({p.returncode})")
    summary = summarise(rows, limits)
    for s in summary:
        lim = s["limit"]
        print(f"{s['test']:32s} {s['quantity']:24s} {s['mean']:+.4g} ± {s['sd']:.3g} (n={s['n']}, min {s['min']:+.4g},"
              f" max {s['max']:+.4g}) " + " ".join(f"{p}={m:+.4g}" for p, m in s["per_path_mean"].items())
              + (f"  limit {' '.join(map(str, lim))}: {s['margin_sd']:.1f} sd" if lim else ""))
    res.parent.mkdir(exist_ok=True)
    keep = lambda r: r["test"] not in names  # noqa: E731  (a rerun of some measurements replaces only theirs)
    res.write_text(json.dumps({"summary": [s for s in old["summary"] if keep(s)] + summary,
                               "rows": [r for r in old["rows"] if keep(r)] + rows}, indent=1) + "\n")
    print(f"wrote {res.relative_to(HERE.parents[1])}")
