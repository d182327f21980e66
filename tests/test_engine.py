"""The engine itself: data parallelism on the CPU, one host copy per block, divergence as a result."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mibench.app import run
from mibench.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["dataset.steps_per_level=20", "dataset.mi_levels=[2]", "dataset.dim=4", "dataset.batch_size=16",
        "trainer.enable_progress_bar=false", "benchmark.plot=false", "logger=none"]


@pytest.mark.slow
def test_ddp_two_cpu_ranks_reproduce_the_single_process_run(tmp_path):
    """hardware=ddp through Fabric (gloo, 2 processes): both ranks see the same staircase batches and the
    gradients are averaged over ranks, so the run must equal the single-process one step for step."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for name, extra in (("one", []), ("ddp", ["hardware=ddp", "hardware.accelerator=cpu", "hardware.devices=2",
                                             "hardware.precision=32-true"])):
        p = subprocess.run([sys.executable, "-m", "mibench", *TINY, *extra, f"runs_root={tmp_path / name}"], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    (one,), (ddp,) = (list((tmp_path / n).rglob("steps.csv")) for n in ("one", "ddp"))
    assert len(list((tmp_path / "ddp").rglob("result.json"))) == 1  # rank 0 alone writes the records
    pd.testing.assert_frame_equal(pd.read_csv(one), pd.read_csv(ddp))


def test_one_host_copy_per_block(tmp_path, monkeypatch):
    """The step record stays on the device; it is copied to the host once per block (here: per level)."""
    copies = []
    real = torch.Tensor.cpu

    def counting(self, *a, **k):
        copies.append(tuple(self.shape))
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    run(compose_config(TINY + ["dataset.mi_levels=[2,4,6]"], out_dir=tmp_path), echo=False)
    # three levels of 20 steps (x 1 run x 4 columns): three block copies, no per-step sync
    assert copies.count((20, 1, 4)) == 3 and len(copies) == 3


def poison(monkeypatch, step, change, once=False):
    """The staircase's step ``step`` (0-based), and every later one unless ``once``, records ``change(estimate)``."""
    from mibench.benchmarks import staircase

    real = staircase.Staircase.step
    calls = [0]

    def poisoned(self, batch):
        calls[0] += 1
        s = real(self, batch)
        if calls[0] - 1 == step or (calls[0] - 1 > step and not once):
            s.values[0] = change(s.values[0])
        return s

    monkeypatch.setattr(staircase.Staircase, "step", poisoned)


def test_divergence_mid_block_records_the_first_bad_step_and_stops(tmp_path, monkeypatch):
    poison(monkeypatch, 25, lambda est: est * float("nan"))
    res = run(compose_config(TINY + ["dataset.mi_levels=[2,4,6]"], out_dir=tmp_path), echo=False)
    assert res.status == "diverged" and res.diverged_step == 25
    steps = pd.read_csv(tmp_path / "steps.csv")
    assert len(steps) == 40 and np.isnan(steps["estimate"].iloc[25]) and np.isfinite(steps["estimate"].iloc[24])


def test_float64_runs_compute_every_step_in_float64(tmp_path, monkeypatch):
    """``hardware.precision=64-true``: data, critic, scores and bound are float64 (the float64 goldens rely on
    it), the recorded estimate is the float64 bound of those scores, and torch's default dtype is restored."""
    from mibench.benchmarks import staircase
    from mibench.estimators.bounds import infonce

    seen = []
    real = staircase.Staircase.score

    def spy(self, batch):
        s = real(self, batch)
        seen.append((batch[0].dtype, next(self.nets["critic"].parameters()).dtype, s.scores.detach().clone()))
        return s

    monkeypatch.setattr(staircase.Staircase, "score", spy)
    run(compose_config(TINY + ["hardware.precision=64-true"], out_dir=tmp_path), echo=False)
    assert torch.get_default_dtype() == torch.float32
    assert {(x, p, s.dtype) for x, p, s in seen} == {(torch.float64,) * 3}
    steps = pd.read_csv(tmp_path / "steps.csv")
    want = [float(infonce(s).mi) for _, _, s in seen]  # the bound recomputed from the float64 scores
    np.testing.assert_allclose(steps["estimate"], want, rtol=1e-8)


def test_unknown_precision_is_one_line(tmp_path):
    from mibench.checks import ConfigError
    from mibench.config import validate

    with pytest.raises(ConfigError, match=r"hardware.precision=48-true is invalid \(valid: 32-true, 64-true"):
        validate(compose_config(TINY + ["hardware.precision=48-true"]))


@pytest.mark.parametrize("grouped", [False, True])
def test_a_fresh_start_never_appends_to_an_earlier_attempts_rows(tmp_path, grouped):
    """A run that starts afresh (no checkpoint) in a directory holding an earlier attempt's partial steps file
    writes its own rows only: the same steps.csv as in an empty directory (issue 27: 12,001 rows for 8,001)."""
    from mibench.engine import seed_everything, train_group
    from mibench.engine.run import run_task
    import mibench.benchmarks  # noqa: F401  (the task registry)

    def train(out):
        out.mkdir(exist_ok=True)
        cfg = compose_config(TINY + ["dataset.mi_levels=[2,4]"], out_dir=out)
        seed_everything(int(cfg.seed))
        train_group([cfg], [out]) if grouped else run_task(cfg, out)
        return (out / "steps.csv").read_bytes()

    clean = train(tmp_path / "clean")
    left = tmp_path / "left"
    left.mkdir()
    (left / "steps.csv.partial").write_text("step,level,true_mi,estimate,loss,joint,marginal\n0,0,2,9,9,9,9\n")
    assert train(left) == clean
    assert not (left / "steps.csv.partial").exists()


# ----------------------------------------------------------------------------------------- divergence
def record_of(out):
    import json

    return json.loads((Path(out) / "result.json").read_text())


def test_dv_at_lr_100_is_diverged_with_its_step_and_reason(tmp_path):
    """The issue's run: benchmark.lr=100 with DV. Its estimate reaches -1e19 (level means of -3.9e22 were recorded
    as completed before); now the run stops, diverged, naming the step and the limit it left."""
    import re

    res = run(compose_config(TINY + ["estimator=dv", "benchmark.lr=100", "dataset.mi_levels=[2,4]"],
                             out_dir=tmp_path), echo=False)
    rec = record_of(tmp_path)
    assert res.status == rec["status"] == "diverged" and rec["steps_done"] == 20  # stopped after the first level
    m = re.fullmatch(r"estimate (-\S+) < -10 x max\(true MI, 1 nat\) = -20 nats for 10 steps from step (\d+)",
                     rec["diverged_reason"])
    assert m and float(m.group(1)) < -1e6 and int(m.group(2)) == rec["diverged_step"] == res.diverged_step


def test_infonce_above_log_k_is_diverged_at_that_step(tmp_path, monkeypatch):
    """InfoNCE's estimate can never exceed log K (K = 16, the batch): one step above it is divergence."""
    poison(monkeypatch, 25, lambda est: est * 0 + 3.0, once=True)  # log 16 = 2.773
    res = run(compose_config(TINY + ["dataset.mi_levels=[2,4,6]"], out_dir=tmp_path), echo=False)
    rec = record_of(tmp_path)
    assert res.status == rec["status"] == "diverged" and rec["diverged_step"] == 25
    assert rec["diverged_reason"] == "estimate 3 > log K = log 16 = 2.77 nats, the bound's ceiling at step 25"
    assert len(pd.read_csv(tmp_path / "steps.csv")) == 40  # the block with the step, then it stopped


@pytest.mark.parametrize("est", ["infonce", "nwj", "mine"])
def test_a_normal_run_stays_completed(tmp_path, est):
    res = run(compose_config(TINY + [f"estimator={est}", "dataset.mi_levels=[2,4]"], out_dir=tmp_path), echo=False)
    rec = record_of(tmp_path)
    assert res.status == rec["status"] == "completed" and rec["diverged_reason"] is None


def test_divergence_limits_are_settable_and_checked(tmp_path):
    """trainer.diverge_above / diverge_loss: null turns a limit off (the lr=100 run then completes as before);
    anything but null or a positive number is one line before training."""
    from mibench.checks import ConfigError
    from mibench.config import validate

    off = ["trainer.diverge_above=null", "trainer.diverge_loss=null"]
    res = run(compose_config(TINY + ["estimator=dv", "benchmark.lr=100", *off], out_dir=tmp_path), echo=False)
    assert res.status == "completed" and pd.read_csv(tmp_path / "steps.csv")["estimate"].min() < -1e6
    for key, value in (("diverge_above", 0), ("diverge_loss", "big")):
        with pytest.raises(ConfigError, match=rf"^trainer.{key}={value} is invalid \(valid: null \(no limit\) or a "
                                              rf"positive number\)$"):
            validate(compose_config(TINY + [f"trainer.{key}={value}"]))


def test_the_valid_range_of_each_bound_is_the_registry_s():
    from mibench.estimators import REGISTRY, STREAK

    infonce, dv = REGISTRY["infonce"], REGISTRY["dv"]
    assert [(s.upper, s.steps) for s in infonce.valid(64, None, 10.0)] == [(True, 1)]  # log K alone: no true MI
    (ceiling,) = infonce.valid(64, None, 10.0)
    assert ceiling.limit == pytest.approx(np.log(64) + 1e-3)
    assert dv.valid(64, None, 10.0) == [] and dv.valid(64, 3.0, None) == []
    hi, lo = dv.valid(64, np.array([0.5, 3.0]), 10.0)
    assert (hi.upper, lo.upper, hi.steps) == (True, False, STREAK)
    np.testing.assert_array_equal(hi.limit, [10.0, 30.0]) and np.testing.assert_array_equal(lo.limit, [-10.0, -30.0])
    assert {n for n, s in REGISTRY.items() if s.ceiling == "log_k"} == {"infonce", "reinfonce", "tnce"}


@pytest.mark.slow
def test_a_diverged_job_keeps_the_sweep_going(runs_dir):
    from mibench.records import iter_records

    from test_cli import mibench

    p = mibench("-m", *TINY, "estimator=dv,infonce", "benchmark.lr=100", runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    status = {r["estimator"]: r["status"] for _, r in iter_records(runs_dir)}
    assert status["dv"] == "diverged" and set(status) == {"dv", "infonce"}
