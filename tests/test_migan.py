"""benchmark=migan: the 25-Gaussian mixture's metrics against constructed samples and a loop, the score matrix
against a loop over the critic, gradient flow of the MI term into the generator, a tiny end-to-end run, and
bad values rejected before training."""
from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf, open_dict

from mibench.app import run
from mibench.benchmarks.migan import MIGan, draw_codes, mi_scores, panel_steps
from mibench.checks import ConfigError
from mibench.compose import compose_config
from mibench.config import validate
from mibench.data import mixture25
from mibench.engine.backend import make_backend
from mibench.engine.run import run_task, setup_task

QUIET = ["trainer.enable_progress_bar=false", "logger=none"]
TINY = ["benchmark.steps=40", "benchmark.eval_every=20", "benchmark.batch_size=16", "benchmark.eval_samples=200",
        "benchmark.g_hidden=16", "benchmark.d_hidden=16", "critic.hidden=16", "critic.embed=8"]
MU = mixture25.centres()
STD = 0.05


# ------------------------------------------------------------------------------------------ the mixture
def test_centres_are_the_5x5_grid():
    want = {(a, b) for a in (-4.0, -2.0, 0.0, 2.0, 4.0) for b in (-4.0, -2.0, 0.0, 2.0, 4.0)}
    assert MU.shape == (25, 2) and {tuple(map(float, r)) for r in MU} == want


def test_sampler_is_seeded_and_lands_on_the_modes():
    a = mixture25.sample(5000, torch.Generator().manual_seed(3))
    b = mixture25.sample(5000, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    cov = mixture25.coverage(a, MU, STD, threshold=100)
    # measured (calibrate_montecarlo.py, generator seeds 0-4 x {AVX512, DEFAULT}): 25 modes in all; quality
    # 0.9892 ± 0.0022 (min 0.986): 0.98 is 4.1 sd below, |quality - 0.9889| < 0.01 is 4.4 sd away
    assert cov.modes == 25 and cov.quality > 0.98  # P(|N(0, I_2)| <= 3) = 1 - e^{-4.5} = 0.989
    assert abs(cov.quality - (1 - math.exp(-4.5))) < 0.01


def test_all_on_modes_gives_25_and_quality_1():
    x = MU.repeat_interleave(4, 0) + 0.02 * torch.tensor([[1.0, 0.0], [0.0, -1.0], [-1.0, 1.0], [0.5, 0.5]]).repeat(25, 1)
    cov = mixture25.coverage(x, MU, STD, threshold=4)
    assert cov.modes == 25 and cov.quality == 1.0 and cov.counts.tolist() == [4] * 25


def test_samples_on_seven_modes_only_give_7():
    g = torch.Generator().manual_seed(0)
    keep = torch.tensor([0, 3, 7, 12, 13, 20, 24])
    x = MU[keep].repeat(30, 1) + 0.3 * STD * torch.randn(210, 2, generator=g)
    cov = mixture25.coverage(x, MU, STD, threshold=10)
    assert cov.modes == 7 and cov.quality == 1.0
    assert set(torch.nonzero(cov.counts).flatten().tolist()) == set(keep.tolist())


def test_far_samples_have_zero_quality_and_no_modes():
    x = MU + torch.tensor([1.0, 1.0])  # each point at distance sqrt(2) (28 sd) from every mean
    cov = mixture25.coverage(torch.cat([x, torch.full((3, 2), float("nan"))]), MU, STD, threshold=1)
    assert cov.quality == 0.0 and cov.modes == 0


def test_threshold_counts_only_high_quality_samples():
    x = torch.cat([MU[:1].repeat(9, 1), MU[1:2] + 0.2])  # 9 on mode 0; one 4 sd off mode 1
    assert mixture25.coverage(x, MU, STD, threshold=9).modes == 1
    assert mixture25.coverage(x, MU, STD, threshold=10).modes == 0
    assert mixture25.coverage(x, MU, STD, threshold=1, n_sigma=6.0).modes == 2
    assert mixture25.min_count(2500, 25, 0.1) == 10 and mixture25.min_count(10, 25, 0.1) == 1


def test_nearest_mode_matches_a_loop():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1)) * 3
    idx, dist = mixture25.nearest_mode(x, MU)
    for i in range(len(x)):
        d = [math.dist(x[i].tolist(), m.tolist()) for m in MU]
        k = int(np.argmin(d))
        assert idx[i] == k and dist[i] == pytest.approx(d[k], abs=1e-5)
    cov = mixture25.coverage(x, MU, 0.5, threshold=2)
    counts = [0] * 25
    for i in range(len(x)):
        if dist[i] <= 1.5:
            counts[int(idx[i])] += 1
    assert cov.counts.tolist() == counts and cov.modes == sum(c >= 2 for c in counts)
    assert cov.quality == pytest.approx(sum(counts) / len(x))


# ------------------------------------------------------------------------------------------ the task
@pytest.fixture(scope="module")
def base():
    """One composed config (Hydra's compose takes seconds on a busy machine); variants are edited copies."""
    return compose_config(["benchmark=migan", "estimator=eta_mine", *QUIET, *TINY])


def variant(base, **keys):
    """A copy of ``base`` with dotted keys set (``estimator={"name": "mine"}`` replaces a whole node)."""
    cfg = copy.deepcopy(base)
    with open_dict(cfg):
        for k, v in keys.items():
            OmegaConf.update(cfg, k.replace("__", "."), v, merge=False)
    return cfg


def task_for(base, **keys) -> MIGan:
    cfg = variant(base, **keys)
    validate(cfg, check_hardware=False)
    return setup_task(cfg, None, make_backend(cfg.hardware))


def test_score_matrix_matches_a_loop_over_the_critic(base):
    t = task_for(base, critic={"name": "concat", "hidden": 8, "layers": 2})
    g = torch.Generator().manual_seed(0)
    z, c = torch.randn(6, t.noise_dim, generator=g), draw_codes(6, "categorical", t.code_dim, g)
    crit = t.nets["critic"]
    with torch.no_grad():
        x = t.generate(z, c)
        s = mi_scores(crit, x, c, 1.0)
        for i in range(6):
            for j in range(6):
                assert s[i, j] == pytest.approx(float(crit(x[i:i + 1], c[j:j + 1])[0, 0]), abs=1e-5)


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_mi_term_alone_reaches_the_generator_only_with_its_weight(base, weight):
    t = task_for(base, benchmark__mi_weight=weight)
    g = torch.Generator().manual_seed(0)
    real = mixture25.sample(16, g)
    z, c = torch.randn(16, t.noise_dim, generator=g), draw_codes(16, "categorical", t.code_dim, g)
    est = t.estimator(mi_scores(t.nets["critic"], t.generate(z, c), c, weight), None, None, y=c)
    est.loss.backward()  # the MI term alone
    grads = [p.grad for p in t.nets["generator"].parameters()]
    norm = sum(float(gr.abs().sum()) for gr in grads if gr is not None)
    assert (norm > 0) == (weight > 0)
    assert all(float(p.grad.abs().sum()) > 0 for p in t.nets["critic"].parameters() if p.dim() == 2)  # critic: full
    # the step's loss is the GAN loss plus the MI loss, its record the estimate and the GAN loss
    s = t.step((real, z, c))
    assert len(s.values) == len(MIGan.columns) - 1 and torch.isfinite(s.adversary())


def test_unconditional_generator_takes_noise_only(base):
    t = task_for(base, benchmark__conditional=False)
    assert t.nets["generator"][0].in_features == t.noise_dim and t.mi_weight == 0.0
    x = t.generate(torch.randn(4, t.noise_dim), draw_codes(4, "categorical", t.code_dim, torch.Generator()))
    assert x.shape == (4, 2)
    c = draw_codes(1000, "continuous", 3, torch.Generator().manual_seed(0))
    assert c.shape == (1000, 3) and float(c.abs().max()) <= 1.0 and float(c.min()) < -0.9


def test_panel_steps_keep_first_and_last():
    assert panel_steps([10, 20, 30], 5) == [10, 20, 30]
    assert panel_steps(list(range(100, 1100, 100)), 4) == [100, 400, 700, 1000]


# ------------------------------------------------------------------------------------------ end to end
def test_tiny_run_writes_summary_and_figure(base, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    cfg = variant(base, estimator={"name": "mine"}, benchmark__panels=2, out_dir=str(out))
    res = run(cfg, out, echo=False)
    assert res.status == "completed" and res.steps_done == 40
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["step"]) == [20, 40] and summary["modes"].between(0, 25).all()
    assert summary["quality"].between(0, 1).all() and (out / "migan.png").stat().st_size > 1000
    steps = pd.read_csv(out / "steps.csv")
    assert {"estimate", "loss", "joint", "marginal", "g_loss", "d_loss"} <= set(steps.columns) and len(steps) == 40
    m = res.metrics
    assert m["final_modes"] == summary["modes"].iloc[-1] and m["evaluations"] == 2
    assert (m["steps_to_all_modes"] is None) == (summary["modes"].max() < 25)
    assert "not reached" in res.text or "all 25 modes at step" in res.text


def test_stop_at_all_modes_ends_the_run(base, monkeypatch):
    full = mixture25.Coverage(25, 1.0, torch.full((25,), 10), 10)
    monkeypatch.setattr(MIGan, "evaluate_generator", lambda self: (full, torch.zeros(4, 2)))
    cfg = variant(base, benchmark__plot=False, benchmark__stop_at_all_modes=True)
    validate(cfg, check_hardware=False)
    res = run_task(cfg, None)
    assert res.status == "completed" and res.steps_done == 20
    assert res.metrics["steps_to_all_modes"] == 20 and res.metrics["stopped_early"]


@pytest.mark.parametrize("key, value, message", [
    ("benchmark.mi_weight", -1, "benchmark.mi_weight=-1 is invalid (valid: a number >= 0"),
    ("benchmark.code", "gaussian", "benchmark.code=gaussian is invalid (valid: categorical, continuous)"),
    ("benchmark.code_dim", 1, "benchmark.code_dim=1 is invalid for benchmark.code=categorical"),
    ("dataset.std", 0, "dataset.std=0 is invalid (valid: a positive number)"),
    ("benchmark.mode_share", 0, "benchmark.mode_share=0 is invalid (valid: 0 < share <= 1)"),
])
def test_bad_values_rejected_before_training(base, key, value, message):
    with pytest.raises(ConfigError) as e:
        validate(variant(base, **{key.replace(".", "__"): value}), check_hardware=False)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", ["infonce", "alpha", "nwj", "tuba", "js"])
def test_other_registry_estimators_fit(base, name):
    t = task_for(base, estimator={"name": name})
    g = torch.Generator().manual_seed(0)
    batch = (mixture25.sample(16, g), torch.randn(16, t.noise_dim, generator=g),
             draw_codes(16, "categorical", t.code_dim, g))
    s = t.step(batch)
    s.loss.backward()
    assert torch.isfinite(s.loss)
