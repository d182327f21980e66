"""Any data: sample files (dataset=samples), the Beyond-Normal adapter (dataset=bmi, on a fake package), the
held-out estimate, early stopping (alone and in a vectorised group), resume, and the Python API."""
from __future__ import annotations

import math
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
from mibench.critics import ConcatCritic
from mibench.data.samples import load_samples, save_samples, split, standardize
from mibench.engine import run_task, seed_everything, train_group
from mibench.estimators import build_estimator
import mibench.engine.heldout as heldout

from drift import assert_same_run

FAKE_BMI = Path(__file__).parent / "fixtures" / "fake_bmi"
QUIET = ["trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false"]


def gaussian(n: int, d: int, rho: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y, -d / 2 * math.log(1 - rho**2)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    x, y, mi = gaussian(2000, 2, 0.8)
    return save_samples(tmp_path_factory.mktemp("data") / "pairs.npz", x, y, mi)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    x, y, mi = gaussian(600, 1, 0.9, seed=2)
    return save_samples(tmp_path_factory.mktemp("data") / "small.npz", x, y, mi)


FAST = ["benchmark.batch_size=64", "benchmark.eval_every=25"]


def cfg_for(path: Path | str, out: Path | None, *extra: str):
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    return compose_config(["dataset=samples", f"dataset.path={path}", *QUIET, *extra], out_dir=out)


# ------------------------------------------------------------------------------------------ file formats
def test_formats_read_the_same_pairs(tmp_path):
    x, y, mi = gaussian(50, 2, 0.5)
    y1 = y[:, 0]  # a 1-D y becomes [n, 1]
    save_samples(tmp_path / "a.npz", x, y1, mi)
    torch.save({"x": torch.from_numpy(x), "y": torch.from_numpy(y1), "true_mi": mi}, tmp_path / "a.pt")
    pd.DataFrame({"u": x[:, 0], "v": x[:, 1], "w": y1}).to_csv(tmp_path / "a.csv", index=False)
    got = [load_samples(tmp_path / "a.npz"), load_samples(tmp_path / "a.pt"),
           load_samples(tmp_path / "a.csv", ["u", "v"], ["w"], true_mi=mi)]
    for s in got:
        assert s.x.shape == (50, 2) and s.y.shape == (50, 1) and s.x.dtype == np.float64  # standardised in float64
        np.testing.assert_allclose(s.x, x, rtol=1e-6)
        np.testing.assert_allclose(s.y[:, 0], y1, rtol=1e-6)
        assert s.true_mi == pytest.approx(mi)
    assert load_samples(tmp_path / "a.npz", true_mi=0.25).true_mi == 0.25  # dataset.true_mi overrides the file's


BAD = {
    "missing key": (lambda p: np.savez(p, x=np.zeros((5, 1)), z=np.zeros(5)), "bad.npz has no array 'y' (found: x, z"),
    "lengths": (lambda p: np.savez(p, x=np.zeros((5, 1)), y=np.zeros((4, 1))), "x has 5 samples but y has 4"),
    "nan": (lambda p: np.savez(p, x=np.r_[0.0, 1.0, np.nan], y=np.zeros(3)), "x has 1 NaN or infinite value(s), the first in row 2"),
    "one sample": (lambda p: np.savez(p, x=np.zeros((1, 2)), y=np.zeros((1, 2))), "bad.npz has 1 sample (valid: at least 2"),
    "shape": (lambda p: np.savez(p, x=np.zeros((4, 2, 2)), y=np.zeros(4)), "x has shape (4, 2, 2) (valid: [n] or [n, d]"),
    "text": (lambda p: np.savez(p, x=np.array(["a", "b"]), y=np.zeros(2)), "x has dtype <U1 (valid: numbers)"),
    "true_mi": (lambda p: np.savez(p, x=np.zeros(4), y=np.zeros(4), true_mi=-1.0), "true_mi=array(-1.) is invalid"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_files_fail_before_training_with_one_line(case, tmp_path):
    write, message = BAD[case]
    write(tmp_path / "bad.npz")
    with pytest.raises(ConfigError) as e:
        validate(cfg_for(tmp_path / "bad.npz", None))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_paths_and_csv_columns(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.5]}).to_csv(tmp_path / "p.csv", index=False)
    (tmp_path / "p.txt").write_text("1 2\n")
    cases = {
        "dataset.path=null": "dataset.path is not set",
        f"dataset.path={tmp_path / 'none.npz'}": "does not exist",
        f"dataset.path={tmp_path / 'p.txt'}": "has an unknown format '.txt' (valid: .npz, .pt, .csv)",
        f"dataset.path={tmp_path / 'p.csv'}": "dataset.x and dataset.y must list the CSV columns of x and of y (columns: a, b)",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=None) as e:
            validate(compose_config(["dataset=samples", override, *QUIET]))
        assert message in str(e.value), override
    with pytest.raises(ConfigError, match="p.csv has no column 'c' \\(dataset.y; columns: a, b\\)"):
        validate(compose_config(["dataset=samples", f"dataset.path={tmp_path / 'p.csv'}", "dataset.x=[a]", "dataset.y=[c]"]))


def test_split_and_batch_checks(pairs):
    with pytest.raises(ConfigError, match="benchmark.batch_size=1500 is invalid \\(valid: <= the 1000 training pairs"):
        validate(cfg_for(pairs, None, "benchmark.batch_size=1500"))
    with pytest.raises(ConfigError, match="dataset.test_fraction=0.6 is invalid"):
        validate(cfg_for(pairs, None, "dataset.test_fraction=0.6"))
    with pytest.raises(ConfigError, match="dataset.train_fraction=1.0 is invalid"):
        validate(cfg_for(pairs, None, "dataset.train_fraction=1.0"))


def test_split_is_disjoint_seeded_and_sized():
    tr, te = split(101, 0.5, None, seed=3)
    assert len(tr) == 50 and len(te) == 51 and not set(tr) & set(te) and set(tr) | set(te) == set(range(101))
    tr2, te2 = split(101, 0.6, 0.2, seed=3)
    assert len(tr2) == 61 and len(te2) == 20 and not set(tr2) & set(te2)
    assert (split(101, 0.5, None, 3)[0] == tr).all() and not (split(101, 0.5, None, 4)[0] == tr).all()
    z = standardize(np.c_[np.arange(10.0), np.full(10, 7.0)])
    np.testing.assert_allclose(z[:, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, 0].std(), 1, atol=1e-6)
    assert (z[:, 1] == 0).all()  # a constant column is only centred


# ------------------------------------------------------------------------------------------ held-out estimate
@pytest.mark.parametrize("name", ["infonce", "nwj", "mine"])
def test_heldout_estimate_matches_a_pair_by_pair_loop(name, monkeypatch):
    """The chunked estimate over the whole test split equals the estimator on a score matrix built one pair
    at a time (chunks of 2 rows here), and the estimator's state (MINE's moving average) is untouched."""
    torch.manual_seed(0)
    crit = ConcatCritic(2, 3, hidden=[16, 8], layers=2)
    est = build_estimator({"name": name, **({"ema": True} if name == "mine" else {})}, dim_y=3)
    x, y = torch.randn(11, 2), torch.randn(11, 3)
    monkeypatch.setattr(heldout, "ROW_BUDGET", 2 * 11)
    before = [b.clone() for b in est.buffers()]
    got = heldout.heldout_estimate(crit, est, x, y)
    with torch.no_grad():
        loop = torch.tensor([[float(crit(x[i:i + 1], y[j:j + 1])) for j in range(11)] for i in range(11)])
        eye = torch.eye(11, dtype=torch.bool)
        want = est.eval()(loop, eye, ~eye).mi
    assert float(got) == pytest.approx(float(want), abs=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, est.buffers()))


# ------------------------------------------------------------------------------------------ runs
@pytest.fixture(scope="module")
def finished(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = cfg_for(pairs, out, "estimator=infonce", "benchmark.steps=600", "benchmark.eval_every=100",
                  "benchmark.plot=true")
    return run(cfg, out, echo=False), out


@pytest.mark.drift  # calibrated on two kernel paths: make test-drift runs it on another
def test_gaussian_sample_with_known_mi_ends_within_tolerance(finished):
    """2-D Gaussian, rho 0.8 (1.022 nats), 2,000 pairs, InfoNCE with the protocol's critic and lr: the best
    held-out estimate is at most 0.2 nats below the truth and 0.1 above it. Measured (calibrate_training.py,
    seeds 0-4 x {AVX512, DEFAULT}): best - truth = -0.081 ± 0.021 (min -0.110, max -0.051): the limits sit
    5.6 sd below and 8.6 sd above the mean (the old ±0.1 was 0.9 sd: seed 3, and seed 0 on DEFAULT, fail it)."""
    result, out = finished
    m = result.metrics
    assert result.status == "completed" and m["true_mi"] == pytest.approx(1.0217, abs=1e-3)
    assert -0.2 < m["best_test_estimate"] - m["true_mi"] < 0.1, m
    curve = pd.read_csv(out / "curve.csv")
    assert m["best_test_estimate"] == pytest.approx(curve["test_estimate"].max())
    assert m["test_estimate"] == pytest.approx(curve["test_estimate"].iloc[-1])
    assert (curve["best_test_estimate"] == curve["test_estimate"].cummax()).all()
    assert m["n_train"] == m["n_test"] == 1000 and (out / "samples.png").exists()
    assert "best test estimate" in result.text and "final test estimate" in result.text


def test_early_stopping_stops_patience_evaluations_after_the_best(small, tmp_path):
    """Stopped early means: the run ended ``patience`` evaluations after its best one, and no sooner."""
    res = run_task(cfg_for(small, tmp_path, "estimator=nwj", "benchmark.steps=3000", *FAST,
                           "benchmark.patience=2", "benchmark.lr=0.3"), tmp_path)
    m = res.metrics
    assert m["stopped_early"] and res.status == "completed"
    assert res.steps_done == m["best_step"] + 2 * 25 < 3000
    curve = res.extra["curve"]
    assert (curve["test_estimate"].iloc[-1] <= curve["test_estimate"].iloc[:-1].max())
    assert len(pd.read_csv(tmp_path / "steps.csv")) == res.steps_done


def test_resume_after_a_crash_ends_with_the_same_numbers(small, tmp_path, monkeypatch):
    import mibench.engine.driver as driver

    over = ["estimator=mine", "estimator.ema=true", "benchmark.steps=100", *FAST, "benchmark.early_stopping=false"]
    seed_everything(0)
    whole = run_task(cfg_for(small, tmp_path / "a", *over), tmp_path / "a")

    def crash(segment: int) -> None:
        if segment == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(driver, "fault_injection", crash)
    seed_everything(0)
    cfg = cfg_for(small, tmp_path / "b", *over)
    with pytest.raises(KeyboardInterrupt):
        run_task(cfg, tmp_path / "b")
    monkeypatch.undo()
    seed_everything(123)  # the checkpoint restores the generators
    resumed = run_task(cfg, tmp_path / "b", resume=tmp_path / "b" / "checkpoint.pt")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "b" / "steps.csv"), pd.read_csv(tmp_path / "a" / "steps.csv"))
    pd.testing.assert_frame_equal(resumed.extra["curve"], whole.extra["curve"])


@pytest.mark.drift  # calibrated on two kernel paths: make test-drift runs it on another
def test_group_runs_leave_when_they_stop_early(small, tmp_path):
    """Seeds x estimators as one vectorised group: each run stops at its own step, and records what it
    records alone up to rounding (drift.py: step 0 to 1e-5, then the means of the evaluation blocks both ran
    within 4 standard errors; the stopping rule on the run's own curve). At lr 0.3 Adam's first step turns the
    batched matmuls' rounding into up to 0.1 nats, so only step 0 is compared tightly. Measured
    (calibrate_drift.py, this group on seeds 3s..3s+2, s = 0-4, x {AVX512, DEFAULT}): the first difference over
    1e-5 at step 1 in 8 of 30 runs (median step 29); 9 of 30 stop at another step than alone; block z
    0.30 ± 0.39 (max 1.37): the limit 4 is 9.6 sd away."""
    over = ["benchmark.steps=1000", *FAST, "benchmark.patience=1", "benchmark.lr=0.3"]
    runs = [("infonce", 0), ("nwj", 1), ("mine", 2)]
    cfgs = [cfg_for(small, tmp_path / f"{e}{s}", *over, f"estimator={e}", f"seed={s}") for e, s in runs]
    for c in cfgs:
        validate(c)
    grouped = train_group(cfgs, [tmp_path / f"{e}{s}" for e, s in runs])
    steps = set()
    for (e, s), c, g in zip(runs, cfgs, grouped):
        assert not isinstance(g, Exception), g
        seed_everything(s)
        (tmp_path / f"alone_{e}{s}").mkdir()
        alone = run_task(c, tmp_path / f"alone_{e}{s}")
        a, b = pd.read_csv(tmp_path / f"{e}{s}" / "steps.csv"), pd.read_csv(tmp_path / f"alone_{e}{s}" / "steps.csv")
        assert_same_run(a, b, tight_steps=1, window=25, same_length=False, where=e)
        if g.metrics["stopped_early"]:
            assert g.steps_done == g.metrics["best_step"] + 25
        steps.add(g.steps_done)
        assert alone.status == g.status == "completed"
    assert len(steps) > 1 or max(steps) < 1500, steps  # the runs did not all train to the end together


# ------------------------------------------------------------------------------------------ Beyond-Normal adapter
def _forget_bmi(monkeypatch) -> None:
    for name in [m for m in sys.modules if m == "bmi" or m.startswith("bmi.")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.fixture
def fake_bmi(monkeypatch, tmp_path):
    _forget_bmi(monkeypatch)
    monkeypatch.syspath_prepend(str(FAKE_BMI))
    import bmi.benchmark as fake

    fake.CALLS.clear()
    yield fake
    for name in [m for m in sys.modules if m == "bmi" or m.startswith("bmi.")]:
        del sys.modules[name]  # the fake's modules (monkeypatch then restores any real ones)


def test_bmi_task_is_drawn_once_and_cached(fake_bmi, tmp_path):
    over = ["dataset=bmi", "dataset.task=fake-2v2-0.8", "dataset.n=600", f"dataset.cache={tmp_path / 'cache'}",
            "benchmark.steps=100", "benchmark.eval_every=50", *QUIET]
    cfg = compose_config([*over, "seed=4"], out_dir=tmp_path / "r")
    validate(cfg)
    path = tmp_path / "cache" / "fake-2v2-0.8" / "n600-seed4.npz"
    assert path.exists() and fake_bmi.CALLS == [("fake-2v2-0.8", 600, 4)]
    res = run(cfg, tmp_path / "r", echo=False)
    assert fake_bmi.CALLS == [("fake-2v2-0.8", 600, 4)]  # the run read the cache
    want = fake_bmi.BENCHMARK_TASKS["fake-2v2-0.8"]
    x, y = want.sample(600, 4)
    s = load_samples(path)
    np.testing.assert_allclose(s.x, x, rtol=1e-6)
    assert res.metrics["true_mi"] == pytest.approx(want.mutual_information) and res.metrics["n_train"] == 300
    with pytest.raises(ConfigError, match="dataset.task='nope' is not a Beyond-Normal task \\(valid: 1v1-normal-0.75, fake-2v2-0.8\\)"):
        validate(compose_config([*over, "dataset.task=nope"]))


def test_bmi_without_the_extra_says_how_to_install(monkeypatch, tmp_path):
    _forget_bmi(monkeypatch)
    monkeypatch.setitem(sys.modules, "bmi", None)  # import bmi raises ImportError
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["dataset=bmi", f"dataset.cache={tmp_path}", *QUIET]))
    assert "needs the Beyond-Normal package" in str(e.value) and 'pip install -c requirements/bmi.txt -e ".[bmi]"' in str(e.value)


def test_suite_presets_compose():
    cfg = compose_config(["experiment=bmi_suite", "estimator=mine", "dataset.task=spiral-multinormal-sparse-5-5-2-2.0"])
    from mibench.config import apply_overrides

    apply_overrides(cfg)
    assert (cfg.benchmark.name, cfg.benchmark.lr, cfg.benchmark.batch_size, cfg.benchmark.steps) == ("samples", 0.1, 256, 10000)
    assert (cfg.benchmark.eval_every, list(cfg.critic.hidden), cfg.dataset.n, cfg.dataset.train_fraction) == (250, [16, 8], 10000, 0.5)
    assert cfg.estimator.ema is True and cfg.estimator.ema_rate == 0.1
    from omegaconf import OmegaConf

    tasks = OmegaConf.load(Path(__file__).parents[1] / "conf/experiment/bmi_suite.yaml").hydra.sweeper.params["dataset.task"]
    assert len(tasks.split(",")) == 40


# ------------------------------------------------------------------------------------------ Python API
def test_api_numpy_and_torch_give_the_same_run(tmp_path):
    from mibench import estimate

    x, y, mi = gaussian(600, 1, 0.9, seed=5)
    a = estimate(x, y, estimator="nwj", steps=200, true_mi=mi, overrides=["benchmark.eval_every=100", "benchmark.batch_size=64"])
    b = estimate(torch.from_numpy(x).float(), torch.from_numpy(y).float(), estimator="nwj", steps=200, true_mi=mi,
                 overrides=["benchmark.eval_every=100", "benchmark.batch_size=64"], out_dir=tmp_path / "kept")
    assert a.best_test_estimate == pytest.approx(b.best_test_estimate, abs=1e-6) and a.steps == 200
    assert list(a.curve["step"]) == [100, 200] and a.record["status"] == "completed" and a.out_dir is None
    assert a.record["metrics"]["true_mi"] == pytest.approx(mi) and float(a) == a.best_test_estimate
    assert (tmp_path / "kept" / "result.json").exists() and (tmp_path / "kept" / "samples.npz").exists()
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        estimate(x, y, estimator="nope")
    with pytest.raises(ValueError, match="benchmark.batch_size=500 is invalid"):
        estimate(x, y, overrides=["benchmark.batch_size=500"])
    with pytest.raises(ValueError, match="x has 600 samples but y has 599"):
        estimate(x, y[:-1])


def test_critic_widths_as_a_list(pairs):
    """The protocol's critic: hidden layers of widths [16, 8] (the Beyond-Normal MLP), checked before training."""
    from mibench.critics import build_critic

    net = build_critic({"name": "concat", "hidden": [16, 8], "layers": 2}, 3, 2)
    widths = [m.out_features for m in [net.first, *net.rest] if isinstance(m, torch.nn.Linear)]
    assert widths == [16, 8, 1] and net.first.in_features == 5
    with pytest.raises(ConfigError, match="critic.layers=3 does not match critic.hidden=\\[16, 8\\]"):
        validate(cfg_for(pairs, None, "critic.layers=3"))
    with pytest.raises(ConfigError, match="critic.hidden=\\[16, 0\\] is invalid"):
        validate(cfg_for(pairs, None, "critic.hidden=[16,0]"))
