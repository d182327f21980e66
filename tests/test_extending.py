"""Extending mibench: a new estimator is one function + one YAML + one registry line; a new benchmark is
one Task module + one YAML. Both are defined here, inside the tests, and run through the real engine."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mibench.app import run
from mibench.checks import ConfigError
from mibench.compose import compose_config
from mibench.config import validate
from mibench.engine import TASKS, Capabilities, RunResult, Scores, Task, register, train_group
from mibench.estimators import (REGISTRY, Estimate, Spec, build_estimator, masked_logmeanexp, masked_mean,
                                resolve_masks)

from drift import assert_same_run

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
# grouped vs alone on the 1-D Gaussian (tests/calibration/calibrate_drift.py, the group's 3 members x seeds 0-4 x
# {AVX512, DEFAULT}): the estimate or loss first differs by more than 1e-5 at step 6 at the earliest (median 70;
# over steps 0-2 at most 3.0e-7); the 50-step window z after step 3: 0.020 ± 0.021 (max 0.077), the limit 4 is
# 190 sd away. The lr 1e-3 run against the lr 5e-3 run alone, windows from step 0: z >= 9.8.
TIGHT_STEPS = 3


def scaled_dv(scores, joint=None, marginal=None, scale: float = 0.5) -> Estimate:
    """A new bound for the test: scale * (E_P[T] - log E_Q[e^T])."""
    jm, mm = resolve_masks(scores, joint, marginal)
    j, m = masked_mean(scores, jm), masked_logmeanexp(scores, mm)
    mi = scale * (j - m)
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


@pytest.fixture
def plugin_conf(tmp_path, monkeypatch):
    """The YAML of the new estimator in a config dir of its own (Hydra's search path), and its registry line."""
    conf = tmp_path / "conf"
    (conf / "estimator").mkdir(parents=True)
    (conf / "estimator" / "scaled_dv.yaml").write_text("name: scaled_dv\nscale: 0.5\n")
    monkeypatch.setitem(REGISTRY, "scaled_dv", Spec(scaled_dv))  # the one registry line
    return f"hydra.searchpath=[file://{conf}]"


@pytest.mark.parametrize("bench,n", [
    (["dataset.dim=2", "dataset.mi_levels=[1]", "dataset.steps_per_level=30", "dataset.batch_size=16",
      "benchmark.plot=false"], 30),
    (["benchmark=onehot", "benchmark.steps=100", "benchmark.plot=false"], 100),
])
@pytest.mark.drift  # calibrated on two kernel paths: make test-drift runs it on another
def test_new_estimator_runs_through_two_benchmarks(plugin_conf, bench, n, tmp_path):
    """The critic trained: the last 5 steps' mean estimate above the first 5's. Measured (calibrate_training.py,
    seeds 0-4 x {AVX512, DEFAULT}, the same on both): staircase +0.204 ± 0.038 (min 0.143; 5.4 sd above 0);
    one-hot, 100 steps, +0.0254 ± 0.0019 (min 0.022; 13 sd) -- over its old 30 steps +0.0037 ± 0.0026, 1.4 sd."""
    cfg = compose_config(["estimator=scaled_dv", plugin_conf, *bench, *QUIET], out_dir=tmp_path / "run")
    res = run(cfg, echo=False)
    steps = pd.read_csv(tmp_path / "run" / "steps.csv")
    assert res.status == "completed" and len(steps) == n
    # the recorded estimate is the new bound, computed independently from its recorded terms
    np.testing.assert_allclose(steps["estimate"], 0.5 * (steps["joint"] - steps["marginal"]), atol=1e-5)
    assert steps["estimate"].iloc[-5:].mean() > steps["estimate"].iloc[:5].mean()  # it trained the critic
    with pytest.raises(ConfigError, match="scale"):  # its parameters are checked like every other's
        validate(compose_config(["estimator=scaled_dv", plugin_conf, "+estimator.scal=1"]))


class Gauss1D(Task):
    """A whole benchmark in a few lines: a 1-D Gaussian with correlation rho, I = -1/2 log(1 - rho^2)."""

    caps = Capabilities(vectorized=True)  # its sweeps may train as one batched model

    def setup(self) -> None:
        self.rho = float(self.cfg.benchmark.rho)
        self.nets["critic"] = self.build_critic(1, 1)
        self.estimator = self.build_estimator(dim_y=1)

    def segments(self, start: int):
        g = torch.Generator().manual_seed(int(self.cfg.seed))
        b, steps = int(self.cfg.dataset.batch_size), int(self.cfg.benchmark.steps)
        x, e = torch.randn(2, steps, b, 1, generator=g)
        yield zip(x, self.rho * x + math.sqrt(1 - self.rho**2) * e)

    def score(self, batch) -> Scores:  # the default step: the estimator on these scores
        x, y = batch
        return Scores(self.nets["critic"](x, y), y=y)

    def finish(self, result: RunResult) -> None:
        true = -0.5 * math.log(1 - self.rho**2)
        final = float(result.steps["estimate"].iloc[-50:].mean())
        result.metrics.update(true_mi=true, final=final)
        result.text = f"1-D Gaussian: true {true:.3f}, estimate {final:.3f}"


@pytest.fixture
def gauss1d(tmp_path):
    conf = tmp_path / "conf"
    (conf / "benchmark").mkdir(parents=True)
    (conf / "benchmark" / "gauss1d.yaml").write_text(  # the benchmark's YAML
        "name: gauss1d\nlr: 5.0e-3\nsteps: 400\nrho: 0.8\nstop_on_divergence: true\n")
    register("gauss1d")(Gauss1D)  # in a package: @register("gauss1d") on the class
    yield f"hydra.searchpath=[file://{conf}]"
    TASKS.pop("gauss1d")


@pytest.mark.drift  # calibrated on two kernel paths: make test-drift runs it on another
def test_a_new_benchmark_is_one_task_class_and_one_yaml(gauss1d, tmp_path):
    cfg = compose_config(["benchmark=gauss1d", gauss1d, "critic=concat", "critic.hidden=32", "dataset.batch_size=64",
                          *QUIET], out_dir=tmp_path / "run")
    res = run(cfg, echo=False)
    out = tmp_path / "run"
    steps = pd.read_csv(out / "steps.csv")  # the engine's records, divergence check and result.json
    assert list(steps.columns) == ["step", "estimate", "loss", "joint", "marginal"] and len(steps) == 400
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "completed" and rec["steps_done"] == 400 and rec["benchmark"] == "gauss1d"
    # InfoNCE, 0.51 nats, batch 64; final - truth measured (calibrate_training.py, seeds 0-4 x {AVX512, DEFAULT}):
    # -0.022 ± 0.008 (min -0.033): the limit 0.15 is 15 sd away
    assert abs(res.metrics["final"] - res.metrics["true_mi"]) < 0.15, res.metrics
    # ... and its sweeps train as one batched model: that run, grouped with three others, is the same run up to
    # the rounding of the batched matmuls, which training amplifies (drift.py): within 1e-5 over the first
    # TIGHT_STEPS steps, then window means within 4 standard errors
    over = ["benchmark=gauss1d", gauss1d, "critic=concat", "critic.hidden=32", "dataset.batch_size=64", *QUIET]
    extras = [[], ["estimator=nwj"], ["seed=3", "benchmark.lr=1e-3"], ["benchmark.lr=1e-3"]]
    cfgs = [compose_config(over + extra, out_dir=tmp_path / f"g{i}") for i, extra in enumerate(extras)]
    for c in cfgs:
        validate(c)
        Path(c.out_dir).mkdir()
    grouped = train_group(cfgs, [Path(c.out_dir) for c in cfgs])
    assert all(r.status == "completed" for r in grouped)
    got = [pd.read_csv(tmp_path / f"g{i}" / "steps.csv") for i in range(len(cfgs))]
    assert_same_run(got[0], steps, tight_steps=TIGHT_STEPS, where="grouped")
    # the comparison tells runs apart: another estimator or seed at step 0, another learning rate at step 1 and,
    # with no tight steps at all, in the window means
    for i, why in ((1, "at step 0 "), (2, "at step 0 "), (3, "at step 1 ")):
        with pytest.raises(AssertionError, match=why):
            assert_same_run(got[i], steps, tight_steps=TIGHT_STEPS)
    with pytest.raises(AssertionError, match="standard errors"):
        assert_same_run(got[3], steps, tight_steps=0)


@pytest.mark.slow
def test_seed_out_of_range_is_one_line_before_training(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mibench", "seed=-1", f"runs_root={tmp_path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "seed=-1" in lines[0] and "valid:" in lines[0], p.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_batch_larger_than_the_data_is_refused(tmp_path):
    from mibench.data.fake_cifar import write_fake_cifar

    root = write_fake_cifar(tmp_path / "data", classes=10, train_per_class=2, test_per_class=1, seed=0).parent
    with pytest.raises(ConfigError, match="dataset.batch_size=100000 is larger than the 50000 training images"):
        validate(compose_config(["dataset=cifar10", f"dataset.root={root}", "dataset.batch_size=100000",
                                 "model=convnet"]))
    # larger than this (small) copy: refused at set-up, before any step
    cfg = compose_config(["dataset=cifar10", f"dataset.root={root}", "dataset.batch_size=64", "model=convnet",
                          "model.width=8", *QUIET], out_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="larger than the 20 training images"):
        run(cfg, echo=False)


def test_a_run_that_trained_no_step_is_never_completed(tmp_path):
    """CLB skips batches without a positive pair; with one image per class no batch has one."""
    from mibench.data.fake_cifar import write_fake_cifar
    from mibench.engine import NoWorkError

    root = write_fake_cifar(tmp_path / "data", classes=10, train_per_class=1, test_per_class=1, seed=0).parent
    cfg = compose_config(["benchmark=clb", "dataset=cifar10", f"dataset.root={root}", "dataset.batch_size=4",
                          "model=convnet", "model.width=8", "benchmark.epochs=1", *QUIET], out_dir=tmp_path / "run")
    with pytest.raises(NoWorkError, match="trained no step"):
        run(cfg, echo=False)
    rec = json.loads((tmp_path / "run" / "result.json").read_text())
    assert rec["status"] == "crashed" and "trained no step" in rec["error"]


# ----------------------------------------------------------------------------------------- a new dataset
class GaussPairs:
    """A new dataset for the test: ``n`` pairs of a 1-D Gaussian with correlation ``rho``, written once as a
    sample file (kind ``pairs``), so benchmark=samples (and any benchmark that needs pairs) reads it."""

    provides = ("pairs",)
    generated = True

    @classmethod
    def check(cls, cfg) -> None:
        if not (0 < cfg.dataset.rho < 1):
            raise ConfigError(f"dataset.rho={cfg.dataset.rho} is invalid (valid: 0 < rho < 1)")

    @classmethod
    def source(cls, cfg) -> tuple[Path, str]:
        from mibench.data.samples import save_samples

        d = cfg.dataset
        path = Path(d.cache) / f"rho{d.rho}-n{d.n}-seed{cfg.seed}.npz"
        if not path.is_file():
            g = np.random.default_rng(int(cfg.seed))
            x = g.standard_normal(int(d.n))
            y = d.rho * x + math.sqrt(1 - d.rho**2) * g.standard_normal(int(d.n))
            save_samples(path, x, y, -0.5 * math.log(1 - d.rho**2))
        return path, f"gausspairs rho={d.rho}"

    @classmethod
    def described(cls, cfg) -> str:
        return f"dataset.n={cfg.dataset.n} Gaussian pairs"


@pytest.fixture
def gausspairs(tmp_path):
    from mibench.data.dataset import DATASETS, Dataset, register_dataset

    conf = tmp_path / "conf"
    (conf / "dataset").mkdir(parents=True)
    (conf / "dataset" / "gausspairs.yaml").write_text(  # the dataset's YAML
        "# @package _global_\ndefaults:\n  - override /benchmark: samples\ndataset:\n  name: gausspairs\n"
        f"  n: 4000\n  rho: 0.8\n  cache: {tmp_path / 'cache'}\n  standardize: true\n  train_fraction: 0.5\n"
        "  test_fraction: null\n  split_seed: null\n")
    register_dataset("gausspairs")(type("GaussPairs", (GaussPairs, Dataset), {}))  # in a module: the decorator
    yield f"hydra.searchpath=[file://{conf}]"
    DATASETS.pop("gausspairs")


def test_a_new_dataset_is_one_module_and_one_yaml(gausspairs, tmp_path):
    """No benchmark names it: benchmark=samples asks the dataset for its kind (pairs) and its sample file."""
    over = ["dataset=gausspairs", gausspairs, "critic=concat", "critic.hidden=32", "benchmark.steps=300",
            "benchmark.eval_every=100", "benchmark.batch_size=128", "benchmark.lr=5e-3", *QUIET]
    res = run(compose_config(over, out_dir=tmp_path / "run"), echo=False)
    rec = json.loads((tmp_path / "run" / "result.json").read_text())
    assert rec["status"] == "completed" and rec["benchmark"] == "samples" and rec["dataset"] == "gausspairs"
    true = -0.5 * math.log(1 - 0.8**2)
    assert res.metrics["true_mi"] == pytest.approx(true)
    # InfoNCE, 0.51 nats, 300 steps: best test estimate - truth, seeds 0-2: -0.007, -0.035, -0.028
    assert abs(res.metrics["best_test_estimate"] - true) < 0.2, res.metrics
    # a benchmark that needs another kind refuses it, and the benchmarks that need pairs list it
    with pytest.raises(ConfigError, match=r"^dataset=gausspairs does not fit benchmark=staircase \(valid: cubic, gaussian\)$"):
        validate(compose_config(["dataset=gausspairs", gausspairs, "benchmark=staircase"]))
    with pytest.raises(ConfigError, match=r"^dataset=gaussian does not fit benchmark=samples \(valid: bmi, gausspairs, samples\)$"):
        validate(compose_config(["benchmark=samples", "dataset=gaussian", gausspairs]))
    with pytest.raises(ConfigError, match=r"^dataset.rho=1.5 is invalid"):  # its own checks run before any work
        validate(compose_config(["dataset=gausspairs", gausspairs, "dataset.rho=1.5"]))


def test_an_estimator_that_reads_the_host_is_smoke_called_on_the_cpu():
    """Validation's smoke call runs on meta tensors (no estimator is built for it); an estimator that reads a
    value on the host, which a meta tensor cannot give, is called on the CPU instead, and is not refused."""
    from omegaconf import OmegaConf, open_dict

    def hostly(scores, joint=None, marginal=None) -> Estimate:
        jm, mm = resolve_masks(scores, joint, marginal)
        j, m = masked_mean(scores, jm), masked_logmeanexp(scores, mm)
        if float(j) > 1e30:  # a host read
            raise ValueError("unreachable")
        return Estimate(mi=j - m, loss=m - j, joint=j, marginal=m)

    REGISTRY["hostly"] = Spec(hostly)
    try:
        cfg = compose_config(["dataset.dim=2"])
        with open_dict(cfg):
            cfg.estimator = OmegaConf.create({"name": "hostly"})
        validate(cfg)
        import torch

        from mibench.config import _smoke

        with torch.device("meta"):
            meta = build_estimator({"name": "hostly"})
        assert "meta" in _smoke(meta, "meta", "any", False, 2)  # on meta tensors it cannot run: hence the CPU call
        assert _smoke(lambda: build_estimator({"name": "hostly"}), "cpu", "any", False, 2) is None
    finally:
        REGISTRY.pop("hostly")
