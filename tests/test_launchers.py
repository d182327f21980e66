"""Sweeps through Hydra's launchers (joblib in parallel, submitit's local executor) and W&B offline."""
import json

import pandas as pd
import pytest

from mibench.records import iter_records

from test_cli import mibench
from wandb_offline import logged

pytestmark = pytest.mark.slow  # the full suite (make test) runs it; make test-fast does not

FAST = ["dataset.steps_per_level=30", "dataset.mi_levels=[2,4]", "dataset.dim=4", "dataset.batch_size=16",
        "trainer.enable_progress_bar=false", "benchmark.plot=false", "logger=none"]


def finished(root):
    return {(r["estimator"], r["seed"]): (d, r) for d, r in iter_records(root)}


def check_complete(runs, expected):
    assert set(runs) == expected
    for d, r in runs.values():
        assert r["status"] == "completed"
        steps = pd.read_csv(d / "steps.csv")
        assert len(steps) == 60 and steps["step"].tolist() == list(range(60))
    assert len({d for d, _ in runs.values()}) == len(expected)  # every job its own directory


def test_joblib_two_parallel_jobs(runs_dir):
    p = mibench("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "estimator=nwj,infonce", "seed=0,1",
                *FAST, runs=runs_dir, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    check_complete(finished(runs_dir), {("nwj", 0), ("nwj", 1), ("infonce", 0), ("infonce", 1)})


def test_submitit_local_executor(runs_dir):
    p = mibench("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=0,1",
                *FAST, runs=runs_dir, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    check_complete(finished(runs_dir), {("infonce", 0), ("infonce", 1)})


def test_wandb_offline_holds_the_logged_metrics(runs_dir):
    args = [a for a in FAST if a != "logger=none" and a != "benchmark.plot=false"]
    p = mibench("logger=wandb", "logger.mode=offline", "logger.tags=[t1]", "estimator=nwj", *args, runs=runs_dir)
    assert p.returncode == 0, p.stderr[-3000:]
    ((d, rec),) = iter_records(runs_dir)
    w = logged(d)
    levels = [h for h in w["history"] if "level/mse" in h]
    summary = pd.read_csv(d / "summary.csv")
    assert [h["level/true_mi"] for h in levels] == [2, 4]
    assert [h["level/mse"] for h in levels] == pytest.approx(list(summary["mse"]), rel=1e-7)
    steps = pd.read_csv(d / "steps.csv")
    per_step = [h["step/estimate"] for h in w["history"] if "step/estimate" in h]
    assert len(per_step) == 60 and abs(sum(per_step) - steps["estimate"].sum()) < 1e-4
    assert any("figures/staircase" in k for h in w["history"] for k in h)  # the final figure
    assert w["config"]["estimator"]["name"] == "nwj" and w["summary"]["status"] == "completed"
    assert json.loads((d / "result.json").read_text())["status"] == "completed"
