"""mibench against the Beyond-Normal package's own estimators, on the same tasks and the very same samples.

    # 1. the reference side, in an environment with benchmark-mi (it also writes the sample files):
    MIBENCH_DATA=/tmp/cmp/data .venv-bmi/bin/python bench/bmi_reference.py --tasks T1 T2 ... --out /tmp/cmp/ref.csv
    # 2. mibench's side on those files, and the comparison table:
    MIBENCH_DATA=/tmp/cmp/data .venv/bin/python bench/bmi_compare.py --tasks T1 T2 ... --ref /tmp/cmp/ref.csv --out /tmp/cmp

mibench runs ``benchmark=samples`` with the Beyond-Normal protocol (experiment=bmi_suite's settings) on
``dataset=bmi`` (the cached files, so the package is not needed here). The runs of one task (estimators x
seeds) train as one vectorised group (``hydra/launcher=vectorized``'s code path, ``--alone``: one at a
time); a (task, estimator)'s time is its share of its group's wall time (the group's wall time / the
number of estimators; with ``--alone`` the sum of its seeds' wall times), the reference's is the sum of its seeds' wall times. Writes ``mibench.csv`` (one row
per run) and ``compare.csv`` / ``compare.md`` (one row per task x estimator).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd


def _row(task: str, cfg, metrics: dict, steps: int, status: str, wall: float, group_size: int) -> dict:
    return {"task": task, "estimator": cfg["estimator"]["name"], "seed": int(cfg["seed"]), "true_mi": metrics["true_mi"],
            "estimate": metrics["best_test_estimate"], "final": metrics["test_estimate"], "steps": steps,
            "status": status, "wall_s": wall, "group_size": group_size}


def _finished(task_dir: Path, n: int) -> list[dict] | None:
    """The rows of a task that an earlier (killed) process finished alone: its records' training wall times."""
    import json

    recs = sorted(task_dir.glob("*/result.json"))
    if len(recs) != n:
        return None
    rows = []
    for rec in map(lambda p: json.loads(p.read_text()), recs):
        if rec.get("status") not in ("completed", "diverged"):
            return None
        rows.append(_row(task_dir.name, {"estimator": {"name": rec["estimator"]}, "seed": rec["seed"]},
                         rec["metrics"], rec["steps_done"], rec["status"], rec["metrics"]["train_wall_s"], 1))
    return rows


def run_mibench(tasks: list[str], estimators: list[str], seeds: list[int], out: Path, alone: bool) -> pd.DataFrame:
    """Each task's runs (alone: one at a time, timed each; else one group). A task another process has claimed
    (``<out>/runs/<task>/.claimed``) is skipped, so two processes can share a task list (one from each end)."""
    from mibench.app import Prepared, prepare, run_group
    from mibench.compose import compose_config

    rows: list[dict] = []
    for task in tasks:
        task_dir = out / "runs" / task
        task_dir.mkdir(parents=True, exist_ok=True)
        try:
            (task_dir / ".claimed").open("x").close()
        except FileExistsError:
            done = _finished(task_dir, len(estimators) * len(seeds)) if alone else None
            if done:
                rows += done
            print(f"{task}: {'finished earlier' if done else 'claimed by another process'}", flush=True)
            continue
        preps = []
        for est in estimators:
            for seed in seeds:
                d = task_dir / f"{est}-{seed}"
                d.mkdir(parents=True, exist_ok=True)
                cfg = compose_config(["experiment=bmi_suite", f"dataset.task={task}", f"estimator={est}", f"seed={seed}",
                                      "trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false",
                                      "runs_root=null"], out_dir=d)
                p = prepare(cfg, d, echo=False)
                assert isinstance(p, Prepared)
                preps.append(p)
        t0 = time.perf_counter()
        results = run_group(preps, max_group_size=1 if alone else None)
        wall = time.perf_counter() - t0
        for p, r in zip(preps, results):
            if isinstance(r, Exception):
                print(f"{task} {p.cfg.estimator.name} seed={p.cfg.seed}: crashed: {r}")
                continue  # alone: a run's time is its training + evaluation wall time; grouped: the group's
            rows.append(_row(task, p.cfg, r.metrics, r.steps_done, r.status,
                             r.metrics["train_wall_s"] if alone else wall, 1 if alone else len(preps)))
        print(f"{task}: {len(preps)} runs in {wall:.1f} s", flush=True)
        pd.DataFrame(rows).to_csv(out / "mibench.partial.csv", index=False)
    return pd.DataFrame(rows)


def compare(mb: pd.DataFrame, ref: pd.DataFrame, n_estimators: int, alone: bool) -> pd.DataFrame:
    out = []
    for (task, est), g in mb.groupby(["task", "estimator"], sort=False):
        r = ref[(ref["task"] == task) & (ref["estimator"] == est) & ref["seed"].isin(g["seed"])]
        mb_time = g["wall_s"].sum() if alone else g["wall_s"].iloc[0] / n_estimators
        true = float(g["true_mi"].iloc[0])
        row = {"task": task, "estimator": est, "true_mi": true, "seeds": len(g),
               "mibench": g["estimate"].mean(), "mibench_sd": g["estimate"].std(),
               "mibench_abs_err": (g["estimate"] - true).abs().mean(), "mibench_steps": g["steps"].mean(),
               "mibench_s": mb_time}
        if len(r):
            row.update({"bmi": r["estimate"].mean(), "bmi_sd": r["estimate"].std(),
                        "bmi_abs_err": (r["estimate"] - true).abs().mean(), "bmi_steps": r["steps"].mean(),
                        "bmi_s": r["wall_s"].sum(), "speedup": r["wall_s"].sum() / mb_time})
        out.append(row)
    return pd.DataFrame(out)


def markdown(t: pd.DataFrame) -> str:
    head = ("| task | estimator | true MI | mibench (mean ± sd) | |err| | s | package (mean ± sd) | |err| | s | speed-up |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for _, r in t.iterrows():
        lines.append(f"| {r['task']} | {r['estimator']} | {r['true_mi']:.3f} | {r['mibench']:.3f} ± {r['mibench_sd']:.3f} | "
                     f"{r['mibench_abs_err']:.3f} | {r['mibench_s']:.1f} | {r.get('bmi', float('nan')):.3f} ± "
                     f"{r.get('bmi_sd', float('nan')):.3f} | {r.get('bmi_abs_err', float('nan')):.3f} | "
                     f"{r.get('bmi_s', float('nan')):.1f} | {r.get('speedup', float('nan')):.2f}x |")
    tot = (f"\nAll (task, estimator) pairs: mean |error| mibench {t['mibench_abs_err'].mean():.3f}, package "
           f"{t['bmi_abs_err'].mean():.3f}; total time mibench {t['mibench_s'].sum():.0f} s, package "
           f"{t['bmi_s'].sum():.0f} s ({t['bmi_s'].sum() / t['mibench_s'].sum():.2f}x); median speed-up "
           f"{t['speedup'].median():.2f}x, slowest pair {t['speedup'].min():.2f}x.\n") if "bmi" in t else ""
    return head + "\n".join(lines) + "\n" + tot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--estimators", nargs="+", default=["infonce", "nwj", "mine"])
    p.add_argument("--ref", type=Path, help="bench/bmi_reference.py's CSV")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--alone", action="store_true", help="train the runs one at a time instead of one group per task")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    os.environ.setdefault("MIBENCH_DATA", str(Path.home() / ".cache/mibench"))
    a.out.mkdir(parents=True, exist_ok=True)
    mb = run_mibench(a.tasks, a.estimators, a.seeds, a.out, a.alone)
    mb.to_csv(a.out / "mibench.csv", index=False)
    ref = pd.read_csv(a.ref) if a.ref is not None and a.ref.exists() else pd.DataFrame(columns=["task", "estimator", "seed"])
    t = compare(mb, ref, len(a.estimators), a.alone)
    t.to_csv(a.out / "compare.csv", index=False)
    text = markdown(t)
    (a.out / "compare.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
