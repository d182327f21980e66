"""The Beyond-Normal package's own neural estimators on the suite's samples (the reference side of
``bench/bmi_compare.py``). Runs in a separate environment that has ``benchmark-mi`` (it pins numpy < 2):

    python3.11 -m venv /tmp/bmi-venv && /tmp/bmi-venv/bin/pip install benchmark-mi==0.1.3 jax==0.4.31 jaxlib==0.4.31
    /tmp/bmi-venv/bin/python bench/bmi_reference.py --tasks 1v1-normal-0.75 ... --seeds 0 1 2 --out ref.csv

Each (task, seed) sample is drawn once with the task's own sampler (``task.sample(n, seed)``) and saved
as a mibench sample file (``<cache>/<task>/n<n>-seed<seed>.npz``: x, y, true_mi), so that mibench's side
trains on the very same arrays; each estimator runs with the package's defaults and ``seed=seed``.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np


def sample_file(cache: Path, task: str, n: int, seed: int) -> Path:
    return cache / task / f"n{n}-seed{seed}.npz"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--estimators", nargs="*", default=["infonce", "nwj", "mine"],
                   help="the package's estimators to run (none: only draw and cache the samples)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("MIBENCH_DATA", Path.home() / ".cache/mibench")) / "bmi")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    import bmi
    from bmi.benchmark import BENCHMARK_TASKS

    classes = {"infonce": bmi.estimators.InfoNCEEstimator, "nwj": bmi.estimators.NWJEstimator,
               "mine": bmi.estimators.MINEEstimator, "dv": bmi.estimators.DonskerVaradhanEstimator}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    new = not a.out.exists()
    with open(a.out, "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(["task", "estimator", "seed", "true_mi", "estimate", "steps", "wall_s"])
        for task_id in a.tasks:
            task = BENCHMARK_TASKS[task_id]
            for seed in a.seeds:
                path = sample_file(a.cache, task_id, a.n, seed)
                if path.exists():
                    with np.load(path) as z:
                        x, y = z["x"], z["y"]
                else:
                    x, y = task.sample(a.n, seed)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_name(f".{path.stem}.tmp.npz")
                    np.savez(tmp, x=np.asarray(x, np.float64), y=np.asarray(y, np.float64),
                             true_mi=np.float64(task.mutual_information), task=task_id, task_name=task.name)
                    os.replace(tmp, path)
                for name in a.estimators:
                    est = classes[name](verbose=False, seed=seed)
                    t0 = time.perf_counter()
                    r = est.estimate_with_info(x, y)
                    wall = time.perf_counter() - t0
                    w.writerow([task_id, name, seed, task.mutual_information, r.mi_estimate,
                                r.additional_information.get("n_training_steps"), round(wall, 3)])
                    fh.flush()
                    print(f"{task_id} {name} seed={seed}: {r.mi_estimate:.4f} (true {task.mutual_information:.4f}) "
                          f"{wall:.1f} s", flush=True)


if __name__ == "__main__":
    main()
