"""make bench: a sweep trained as one batched model (train_group) vs the same runs trained one at a time.

Vectorised: mibench.engine.train_group on all the sweep's configs, timed as a user experiences the call
(task setup, training, evaluation, outputs). One run at a time: each run trained alone through run_task,
as Hydra's basic launcher does per job, in this same process (so without the Python / torch start-up a
separate process per run would add). The alone side may time a subset of the runs and extrapolate per
run. Both sides run here with torch's thread count, so the ratio (alone time / vectorised time, i.e. the
throughput ratio) compares like with like on whatever machine runs it. Target: >= 2x on 2 CPU cores.

It also prints how far the grouped runs' estimates are from the same runs alone, beside a control: the
runs alone again from initial weights moved by one float32 ulp (training trajectories amplify any rounding
difference; the grouped runs should be no further from the runs alone than that).

    1. Choi & Lee Fig. 7 (experiment=remine_fig7) with critic=separable: 12 estimators x --seeds seeds.
    2. Poole Fig. 2 with the concat critic (experiment=poole_fig2_concat): nwj, tuba, infonce, js, alpha, seed 0.

    python bench/vectorized_speed.py [--steps 400] [--seeds 5] [--alone-runs 12] [--concat-steps 50]
                                     [--repeats 1] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from mibench.compose import compose_config
from mibench.config import validate
from mibench.engine import (Logger, RunResult, conclude, make_backend, make_engine, run_task, seed_everything,
                            setup_task, train_group)

FIG7 = ("mine", "remine", "smile", "resmile", "infonce", "reinfonce", "nwj", "renwj", "tuba", "retuba", "js", "rejs")
POOLE = ("nwj", "tuba", "infonce", "js", "alpha")
COMMON = ["logger=none", "benchmark.plot=false", "benchmark.checkpoint=false", "trainer.enable_progress_bar=false"]


def compose(overrides: list[str], out: Path) -> DictConfig:
    out.mkdir(parents=True)
    cfg = compose_config(overrides, out_dir=out)
    validate(cfg)
    return cfg


def check(results: list[RunResult | Exception], names: list[str]) -> None:
    bad = [(n, r) for n, r in zip(names, results)
           if not (isinstance(r, RunResult) and r.status in ("completed", "diverged"))]
    for n, r in bad:
        print(f"run {n} failed: {r!r}" if isinstance(r, Exception) else f"run {n}: status {r.status}", file=sys.stderr)
    if bad:
        sys.exit(1)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_group(runs: list[list[str]], where: Path, device: str) -> float:
    outs = [where / str(i) for i in range(len(runs))]
    cfgs = [compose(o, out) for o, out in zip(runs, outs)]
    t0 = time.perf_counter()
    results = train_group(cfgs, outs)
    sync(device)
    dt = time.perf_counter() - t0
    check(results, [" ".join(o) for o in runs])
    return dt


def time_alone(runs: list[list[str]], where: Path, device: str) -> float:
    total = 0.0
    for i, o in enumerate(runs):
        cfg = compose(o, where / str(i))
        t0 = time.perf_counter()
        seed_everything(int(cfg.seed))
        result = run_task(cfg, where / str(i))
        sync(device)
        total += time.perf_counter() - t0
        check([result], [" ".join(o)])
    return total


def perturbed(runs: list[list[str]], where: Path) -> None:
    """The runs alone again, each initial weight times (1 + 2^-23) (one float32 ulp): the control for
    :func:`difference` (how far a trajectory moves under any rounding difference)."""
    for i, o in enumerate(runs):
        cfg = compose(o, where / str(i))
        seed_everything(int(cfg.seed))
        backend = make_backend(cfg.hardware)
        task = setup_task(cfg, where / str(i), backend)
        with torch.no_grad():
            for p in task.nets.parameters():
                p.mul_(1 + 2**-23)
        engine = make_engine(task, backend, Logger(), where / str(i))
        engine.train()
        conclude(task, engine, RunResult(), time.perf_counter())


def difference(grouped: Path, alone: Path, k: int, what: str = "grouped vs alone") -> str:
    """The largest |grouped - alone| of the per-step estimate and of the per-level mean over the k runs."""
    step = level = 0.0
    for i in range(k):
        g, a = (pd.read_csv(d / str(i) / "steps.csv")["estimate"] for d in (grouped, alone))
        step = max(step, float(np.nanmax(np.abs(g.to_numpy() - a.to_numpy()))))
        g, a = (pd.read_csv(d / str(i) / "summary.csv")["mean"] for d in (grouped, alone))
        level = max(level, float(np.nanmax(np.abs(g.to_numpy() - a.to_numpy()))))
    return f"{what}: max |d estimate| {step:.2g} per step, {level:.2g} per level mean (nats, {k} runs)"


def compare(label: str, runs: list[list[str]], alone_runs: int, steps: int, repeats: int, device: str,
            control: bool = False) -> str:
    k = min(alone_runs, len(runs)) if alone_runs > 0 else len(runs)
    subset = runs[:k]  # seed-major order: the first 12 of Fig. 7 are one seed of each estimator
    vec, alone_k = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            vec.append(time_group(runs, Path(tmp) / f"g{r}", device))
            alone_k.append(time_alone(subset, Path(tmp) / f"a{r}", device))
        same = difference(Path(tmp) / "g0", Path(tmp) / "a0", k)
        if control:
            perturbed(subset, Path(tmp) / "p")
            same += "\n    " + difference(Path(tmp) / "p", Path(tmp) / "a0", k, "control, alone vs alone with 1-ulp weights")
    vec_t, alone = min(vec), min(alone_k) * len(runs) / k
    n = len(runs) * steps
    how = f"from {k} runs, extrapolated" if k < len(runs) else f"all {k} runs"
    line = (f"  {label}, {len(runs)} runs x {steps} steps: vectorised {vec_t:.1f} s ({1e3 * vec_t / n:.2f} ms/run-step), "
            f"one run at a time {alone:.1f} s ({1e3 * alone / n:.2f} ms/run-step, {how}), ratio {alone / vec_t:.2f}x "
            f"(target >= 2x), best of {repeats}\n    {same}")
    print(line, flush=True)
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400, help="Fig. 7 steps per run (5 MI levels of steps // 5)")
    p.add_argument("--seeds", type=int, default=5, help="Fig. 7 seeds 0..seeds-1 of each of the 12 estimators")
    p.add_argument("--alone-runs", type=int, default=12, help="Fig. 7 runs timed alone, extrapolated (0: all)")
    p.add_argument("--concat-steps", type=int, default=50, help="Poole Fig. 2 concat steps per run (0: skip)")
    p.add_argument("--repeats", type=int, default=1, help="best (min) of this many timings of each side")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="skip the control (Fig. 7 runs alone again from 1-ulp perturbed weights)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: hardware=gpu")
    a = p.parse_args()
    common = COMMON + (["hardware=gpu"] if a.device == "cuda" else [])
    gpu = f", {torch.cuda.get_device_name()}" if a.device == "cuda" else ""
    print(f"torch {torch.__version__}, device {a.device}{gpu}, threads={torch.get_num_threads()}; one run at a time: "
          "run_task in this process (no per-process Python / torch start-up)", flush=True)
    spl = a.steps // 5
    fig7 = [["experiment=remine_fig7", "critic=separable", f"estimator={e}", f"seed={s}",
             f"dataset.steps_per_level={spl}", *common] for s in range(a.seeds) for e in FIG7]
    lines = [compare("Fig. 7 separable", fig7, a.alone_runs, 5 * spl, a.repeats, a.device, control=a.control)]
    if a.concat_steps:
        cspl = a.concat_steps // 5
        poole = [["experiment=poole_fig2_concat", f"estimator={e}", "seed=0", f"dataset.steps_per_level={cspl}",
                  *common] for e in POOLE]
        lines.append(compare("Poole Fig. 2 concat", poole, 0, 5 * cspl, a.repeats, a.device))
    print(f"\nvectorised sweeps ({a.device}{gpu}, {torch.get_num_threads()} threads)", *lines, sep="\n")


if __name__ == "__main__":
    main()
