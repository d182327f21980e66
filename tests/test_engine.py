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
    assert copies.count((20, 4)) == 3  # three levels of 20 steps: three block copies, no per-step sync


def test_divergence_mid_block_records_the_first_bad_step_and_stops(tmp_path, monkeypatch):
    from mibench.benchmarks import staircase

    real = staircase.Staircase.step
    calls = [0]

    def poisoned(self, batch):
        calls[0] += 1
        s = real(self, batch)
        if calls[0] > 25:
            s.values[0] = s.values[0] * float("nan")
        return s

    monkeypatch.setattr(staircase.Staircase, "step", poisoned)
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
