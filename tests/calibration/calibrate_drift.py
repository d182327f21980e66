"""Calibration of tests/drift.py (runs trained in a vectorised group against the same runs trained alone): per
member of a group, the first step at which the grouped estimate (or loss) differs from the run alone by more
than the tight tolerance, the largest difference over the first steps, and the largest window z (the
difference of the two runs' window means over its standard error from the step-to-step spread, windows of
W steps after step K) -- on the settings of the tests that compare a group with runs alone: the 1-D Gaussian
of test_extending.py (400 steps), test_samples.py's early-stopping group (lr 0.3) and test_vectorized.py's
families (16 steps; alone here, not the golden CSVs). Also the power of the window check: the same run at
lr 1e-3 against lr 5e-3, compared after step K only. Reproduce the figures in the tests with
``nice -n 5 .venv/bin/python tests/calibration/calibrate_drift.py --seeds 0-4 --only gauss1d_group,samples_group``
and ``... --seeds 0-1 --only vectorized_families`` (about 6 and 4 minutes on a busy 2-core machine).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import calib  # noqa: F401  (puts tests/ on sys.path)
import numpy as np
import pandas as pd

from drift import compare_runs
from mibench.app import run
from mibench.compose import compose_config
from mibench.config import validate
from mibench.engine import TASKS, register, train_group

QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
TIGHT_ATOLS = (1e-6, 1e-5, 2e-5, 1e-4)
FIRST = (3, 16, 25, 50)
KS, WS = (1, 3, 25), (25, 50)


@contextlib.contextmanager
def gauss1d_conf(d: Path):
    """test_extending.py's gauss1d fixture: the benchmark's YAML on a search path, its Task registered."""
    import test_extending as T

    conf = d / "conf"
    (conf / "benchmark").mkdir(parents=True)
    (conf / "benchmark" / "gauss1d.yaml").write_text(
        "name: gauss1d\nlr: 5.0e-3\nsteps: 400\nrho: 0.8\nstop_on_divergence: true\n")
    register("gauss1d")(T.Gauss1D)
    try:
        yield f"hydra.searchpath=[file://{conf}]"
    finally:
        TASKS.pop("gauss1d")


def profile(got: pd.DataFrame, want: pd.DataFrame, tag: str) -> dict[str, float]:
    """drift.compare_runs' figures: first step over each tolerance, the largest difference over the first steps,
    the largest window z for windows after step K."""
    out = {f"{tag}_len_differs": float(len(got) != len(want))}
    for tol in TIGHT_ATOLS:
        out[f"{tag}_first_over_{tol:g}"] = float(compare_runs(got, want, tight_steps=0, tight_atol=tol)["first_over"])
    n = min(len(got), len(want))
    for f in FIRST:
        if f <= n:
            out[f"{tag}_max_first{f}"] = compare_runs(got, want, tight_steps=f)["tight_max"]
    for k in KS:
        for w in WS:
            if k + w <= n:
                out[f"{tag}_z_K{k}_W{w}"] = compare_runs(got, want, tight_steps=k, window=w)["window_z"]
    return out


def gauss1d_group(s: int, d: Path) -> dict[str, float]:
    """test_extending.py::test_a_new_benchmark_is_one_task_class_and_one_yaml: its group of three (this seed,
    nwj, seed + 3 at lr 1e-3), each member against itself alone; and lr 1e-3 against 5e-3 alone (the power)."""
    out: dict[str, float] = {}
    with gauss1d_conf(d) as conf:
        over = ["benchmark=gauss1d", conf, "critic=concat", "critic.hidden=32", "dataset.batch_size=64", *QUIET]
        extras = [[f"seed={s}"], ["estimator=nwj", f"seed={s}"], [f"seed={s + 3}", "benchmark.lr=1e-3"]]
        cfgs = [compose_config(over + e, out_dir=d / f"g{i}") for i, e in enumerate(extras)]
        for c in cfgs:
            validate(c)
            Path(c.out_dir).mkdir()
        train_group(cfgs, [Path(c.out_dir) for c in cfgs])
        for i, e in enumerate(extras):
            run(compose_config(over + e, out_dir=d / f"a{i}"), echo=False)
            out.update(profile(pd.read_csv(d / f"g{i}" / "steps.csv"), pd.read_csv(d / f"a{i}" / "steps.csv"), f"m{i}"))
        run(compose_config(over + [f"seed={s}", "benchmark.lr=1e-3"], out_dir=d / "slow"), echo=False)
    slow, fast = pd.read_csv(d / "slow" / "steps.csv"), pd.read_csv(d / "a0" / "steps.csv")
    for k in (*KS, 50, 100):
        out[f"lr_power_z_K{k}_W50"] = compare_runs(slow, fast, tight_steps=k, window=50)["window_z"]
    return out


def samples_group(s: int, d: Path) -> dict[str, float]:
    """test_samples.py::test_group_runs_leave_when_they_stop_early: infonce, nwj, mine on seeds 3s, 3s+1, 3s+2
    (s = 0 is the test's group), grouped against alone."""
    import test_samples as T
    from mibench.data.samples import save_samples
    from mibench.engine import run_task, seed_everything

    x, y, mi = T.gaussian(600, 1, 0.9, seed=2)
    small = save_samples(d / "small.npz", x, y, mi)
    over = ["benchmark.steps=1000", *T.FAST, "benchmark.patience=1", "benchmark.lr=0.3"]
    runs = [("infonce", 3 * s), ("nwj", 3 * s + 1), ("mine", 3 * s + 2)]
    cfgs = [T.cfg_for(small, d / f"{e}{r}", *over, f"estimator={e}", f"seed={r}") for e, r in runs]
    for c in cfgs:
        validate(c)
    train_group(cfgs, [d / f"{e}{r}" for e, r in runs])
    out = {}
    for i, ((e, r), c) in enumerate(zip(runs, cfgs)):
        seed_everything(r)
        (d / f"alone_{e}{r}").mkdir()
        run_task(c, d / f"alone_{e}{r}")
        got, want = pd.read_csv(d / f"{e}{r}" / "steps.csv"), pd.read_csv(d / f"alone_{e}{r}" / "steps.csv")
        out.update(profile(got, want, f"m{i}"))
    return out


def vectorized_families(s: int, d: Path) -> dict[str, float]:
    """test_vectorized.py::test_group_matches_runs_alone, its five families on seed s, grouped against alone
    (the test compares with the golden CSVs, written alone with seed 1-3 on one machine)."""
    import torch
    import test_vectorized as T

    torch.set_num_threads(1)
    out = {}
    for family in ("staircase_separable", "staircase_concat", "staircase_bilinear", "onehot", "eta_gaussian"):
        names = [n for n in T.cases() if n.startswith(family + "_")
                 and (family in ("staircase_separable", "onehot", "eta_gaussian") or n.split("_", 2)[2] in T.SUBSET)]
        overrides = {n: [o for o in T.cases()[n][0] if not o.startswith("seed=")] + [f"seed={s}"] for n in names}
        cfgs = [T._compose(overrides[n], d / "g" / n) for n in names]
        train_group(cfgs, [d / "g" / n for n in names])
        file = "curve.csv" if family == "eta_gaussian" else "steps.csv"
        worst: dict[str, float] = {}
        for n in names:
            run(compose_config(overrides[n] + T.QUIET, out_dir=d / "a" / n), echo=False)
            got, want = pd.read_csv(d / "g" / n / file), pd.read_csv(d / "a" / n / file)
            if family == "eta_gaussian":
                got, want = got.rename(columns={"test_estimate": "estimate"}), want.rename(columns={"test_estimate": "estimate"})
                got["loss"] = want["loss"] = 0.0
            p = profile(got, want, family)
            other = [c for c in want.columns if c not in ("step", "wall_s") and pd.api.types.is_numeric_dtype(want[c])]
            p[f"{family}_max_any_column"] = float(np.nanmax(np.abs(got[other].to_numpy(float) - want[other].to_numpy(float))))
            for k, v in p.items():  # the worst member of the family
                worst[k] = min(worst.get(k, np.inf), v) if "first_over" in k else max(worst.get(k, -np.inf), v)
        out.update({k: v for k, v in worst.items() if "_z_" not in k})
    return out


MEASURES = {"gauss1d_group": gauss1d_group, "samples_group": samples_group, "vectorized_families": vectorized_families}

if __name__ == "__main__":
    calib.main(MEASURES, {}, __file__)
