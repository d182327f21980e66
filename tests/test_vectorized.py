"""Vectorised sweeps (mibench.engine.group, hydra/launcher=vectorized): runs trained in a group match the
same runs trained alone (the golden CSVs, written one run at a time by the pre-engine code), divergence
stays with its run, grouping rules, the optimizer on stacked tensors, the launcher and a killed group's
resume."""
from __future__ import annotations

import inspect
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from mibench.compose import compose_config
from mibench.config import validate
from mibench.benchmarks.staircase import Staircase
from mibench.engine import TASKS, run_task, seed_everything, train_group
from mibench.critics import build_critic
from mibench.engine.group import GroupRefused, Optim, StackedOptimizer, _Slot
from mibench.engine.plan import group_key, plan_groups, probe_bytes, split_sizes, why_alone

sys.path.insert(0, str(Path(__file__).parent))
from golden.cases import QUIET, STAIRCASE, cases, golden_path  # noqa: E402
from drift import assert_same_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Grouped against alone by drift.py's principle. These runs are short enough to be compared tightly all along:
# measured (tests/calibration/calibrate_drift.py, this file's families on seeds 0-1 x {AVX512, DEFAULT}, one
# thread), the estimate and loss of a grouped run differ from the run alone by at most 6.9e-6 over the 16
# staircase steps (separable 4.9e-6, concat 6.1e-7, bilinear 6.9e-6), 3.3e-7 over the 40 one-hot steps and
# 1.1e-6 on the eta_gaussian curve: only the summation order of batched matmuls differs, and it has not grown
# yet (on the 400-step 1-D Gaussian it passes 1e-5 from step 6 on). The joint / marginal terms of bounds blind
# to a constant shift of T (DV, MINE, SMILE, InfoNCE) move by up to 9.5e-3 (Adam normalises the ~1e-9 rounding
# noise of that flat direction into full-size steps) and are not compared.
EST_TOL = 2e-5


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _compose(overrides: list[str], out: Path):
    cfg = compose_config(overrides + QUIET, out_dir=out)
    validate(cfg)
    out.mkdir(parents=True)
    return cfg


def _compare(got: pd.DataFrame, want: pd.DataFrame, est_col: str, where: str) -> float:
    assert list(got.columns) == list(want.columns) and len(got) == len(want), where
    cols = ("test_estimate", "train_estimate") if est_col == "test_estimate" else (est_col, "loss")
    return assert_same_run(got, want, tight_steps=len(want), columns=cols, tight_atol=EST_TOL, where=where)["tight_max"]


# the other critics with the estimators that carry state or a learned baseline, and one of each bound type
SUBSET = ("mine", "eta_mine", "tuba", "alpha", "infonce", "retuba", "js")


@pytest.mark.parametrize("family", ["staircase_separable", "staircase_concat", "staircase_bilinear", "onehot",
                                    "eta_gaussian"])
@pytest.mark.drift  # calibrated on two kernel paths: make test-drift runs it on another
def test_group_matches_runs_alone(family, tmp_path):
    """The golden cases of a family trained as one group reproduce their CSVs written by runs alone: with
    the separable critic every trainable estimator (incl. MINE's EMA, eta, learned baselines)."""
    names = [n for n in cases() if n.startswith(family + "_")
             and (family in ("staircase_separable", "onehot", "eta_gaussian") or n.split("_", 2)[2] in SUBSET)]
    cfgs = [_compose(cases()[n][0], tmp_path / n) for n in names]
    assert len({group_key(c) for c in cfgs}) == 1
    results = train_group(cfgs, [tmp_path / n for n in names])
    file, col = ("curve.csv", "test_estimate") if family == "eta_gaussian" else ("steps.csv", "estimate")
    for n, r in zip(names, results):
        assert not isinstance(r, Exception), (n, r)
        _compare(pd.read_csv(tmp_path / n / file), pd.read_csv(golden_path(n, file)), col, n)
        assert (tmp_path / n / "summary.csv").exists()


def test_divergence_stays_with_its_run(tmp_path):
    """A run on lr=50 goes NaN: it is recorded as diverged at the same step as alone, with the same rows;
    the runs beside it (other estimators and learning rates) match their golden CSVs."""
    over = {"a": ["estimator=nwj"], "bad": ["estimator=nwj", "benchmark.lr=50"], "c": ["estimator=infonce"]}
    cfgs = [_compose([*o, "seed=1"] + STAIRCASE, tmp_path / k) for k, o in over.items()]
    res = dict(zip(over, train_group(cfgs, [tmp_path / k for k in over])))
    seed_everything(1)
    (tmp_path / "alone").mkdir()
    alone = run_task(cfgs[1], tmp_path / "alone")
    assert res["bad"].status == alone.status == "diverged"
    assert res["bad"].diverged_step == alone.diverged_step and res["bad"].steps_done == alone.steps_done < 16
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "bad" / "steps.csv"), pd.read_csv(tmp_path / "alone" / "steps.csv"),
                                  atol=EST_TOL)
    for k, golden in (("a", "staircase_separable_nwj"), ("c", "staircase_separable_infonce")):
        assert res[k].status == "completed"
        _compare(pd.read_csv(tmp_path / k / "steps.csv"), pd.read_csv(golden_path(golden, "steps.csv")), "estimate", k)


def test_grouping_rules():
    base = compose_config(["dataset.steps_per_level=10"], out_dir="x")
    key = group_key(base)

    def variant(**values):
        cfg = base.copy()
        for k, v in values.items():
            OmegaConf.update(cfg, k.replace("__", "."), v, force_add=True)
        return cfg

    same = [{"estimator__name": "remine", "lambda": 0.01}, {"seed": 7}, {"benchmark__lr": 0.01},
            {"estimator__name": "mine", "estimator__ema": True}, {"c_star": 1.0}, {"out_dir": "elsewhere"}]
    for values in same:  # per-run keys: these train together
        assert group_key(variant(**values)) == key, values
    differ = [{"critic__name": "concat"}, {"critic__hidden": 64}, {"dataset__dim": 5}, {"dataset__batch_size": 32},
              {"dataset__steps_per_level": 11}, {"dataset__transform": "cubic"}]
    for values in differ:
        k = group_key(variant(**values))
        assert k is not None and k != key, values
    alone = {("benchmark=slb", "dataset=cifar10"): "one run per process", ("benchmark=dim",): "one run per process",
             ("hardware=ddp",): "DDP", ("logger=wandb",): "wandb",
             ("benchmark=eta_gaussian", "estimator=eta_mine", "benchmark.eta_schedule=alternating"): "one run"}
    for over, why in alone.items():
        cfg = compose_config(list(over), out_dir="z")
        assert group_key(cfg) is None and why in why_alone(cfg), over


def test_split_sizes():
    assert split_sizes(60, per_run=10, budget=1000) == [60]
    assert split_sizes(60, per_run=100, budget=1000) == [10] * 6
    assert split_sizes(7, per_run=100, budget=250) == [2, 2, 2, 1]
    assert split_sizes(5, per_run=1, budget=10**9, cap=2) == [2, 2, 1]
    assert split_sizes(3, per_run=10**12, budget=1) == [1, 1, 1]


@pytest.mark.parametrize("name,kw", [("adam", {}), ("adam", {"weight_decay": 0.1}), ("adam", {"fused": True}),
                                     ("sgd", {"momentum": 0.9})])
def test_stacked_optimizer_is_torch_per_row(name, kw):
    """Rows on their own learning rates (two share one, one differs), one row dropped after 3 steps:
    each row follows torch.optim.Adam / SGD on that row alone, the dropped row stays frozen; bit for bit
    against ``Adam(fused=True)``, whose public update the stacked optimizer calls (no private torch API)."""
    torch.manual_seed(0)
    lrs = [1e-2, 1e-2, 3e-3]
    p = torch.randn(3, 4, 5).transpose(1, 2).contiguous().transpose(1, 2).requires_grad_()  # the stacked layout
    ref = [torch.nn.Parameter(p[r].detach().clone()) for r in range(3)]
    cls = torch.optim.Adam if name == "adam" else torch.optim.SGD
    opts = [cls([q], lr=lr, **kw) for q, lr in zip(ref, lrs)]
    opt = StackedOptimizer([_Slot(p, lrs, [0, 1, 2])], Optim(name, 0.0, kw.get("weight_decay", 0.0), kw.get("momentum", 0.0)))
    assert "_fused_adam_" not in inspect.getsource(StackedOptimizer)
    for t in range(6):
        g = torch.randn(3, 5, 4).transpose(1, 2)  # [3, 4, 5] in the layout of p, as vmap gives it
        p.grad = g.clone()
        opt.step()
        for r in range(3):
            if t < 3 or r != 1:
                ref[r].grad = g[r].clone()
                opts[r].step()
        if t == 2:
            opt.drop(1)
    for r in range(3):
        torch.testing.assert_close(p[r].detach(), ref[r].detach(), rtol=0, atol=0 if kw.get("fused") else 1e-6)


def _sweep(args: list[str], root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mibench", "-m", "hydra/launcher=vectorized", *args,
                           f"runs_root={root}", *QUIET, "hydra.launcher.progress=false"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_launcher_two_groups_kill_and_resume(tmp_path):
    """A 6-job sweep: 2 groups (two critics) of 3 estimators, split by max_group_size=2 into 2 + 1 (the 1
    trains alone). Killed after the first group's first-level checkpoints, then run again with resume=true:
    the 2 checkpointed runs resume, the others start afresh, and every run's records are complete and
    match the golden CSVs of the runs alone."""
    args = ["critic=separable,bilinear", "estimator=dv,nwj,reinfonce", "seed=1", *STAIRCASE,
            "hydra.launcher.max_group_size=2"]
    killed = _sweep(args, tmp_path, {"MIBENCH_KILL_AFTER_SEGMENT": "0"})
    assert killed.returncode != 0
    assert "2 vectorised group(s) of 3, 3 runs, 0 alone" in killed.stderr + killed.stdout
    assert len(list(tmp_path.glob("multirun/*/*/checkpoint.pt"))) == 2
    done = _sweep([*args, "resume=true"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    records = {d: json.loads((d / "result.json").read_text()) for d in (p.parent for p in tmp_path.glob("multirun/*/*/result.json"))}
    finished = {d: r for d, r in records.items() if r["status"] == "completed"}
    assert len(finished) == 6  # (the run prepared but not started when killed keeps its "running" record)
    assert sum(r["resumed"] for r in finished.values()) == 2
    assert sorted((r.get("vectorized") or {}).get("group_size", 1) for r in finished.values()) == [1, 1, 2, 2, 2, 2]
    for d, rec in finished.items():
        assert rec["steps_done"] == 16 and not (d / "checkpoint.pt").exists()
        for f in ("steps.csv", "summary.csv", "config.yaml", ".hydra/overrides.yaml"):
            assert (d / f).exists(), (d, f)
        name = f"staircase_{rec['config']['critic.name']}_{rec['estimator']}"
        _compare(pd.read_csv(d / "steps.csv"), pd.read_csv(golden_path(name, "steps.csv")), "estimate", name)


def test_memory_plan_splits_groups(monkeypatch):
    """A run's bytes cover its parameters (x4: value, gradient, two Adam moments) and data; a group that
    would need more than its share of free memory is cut into groups that fit. (The free memory is fixed
    here: the machine's changes with its load between two reads.)"""
    import mibench.engine.plan as plan

    monkeypatch.setattr(plan, "free_bytes", lambda device: 1 << 30)
    cfg = compose_config(["seed=1", *STAIRCASE], out_dir="x")
    per_run, _ = probe_bytes(cfg)
    d = cfg.dataset
    params = sum(p.numel() * 4 for p in build_critic(dict(cfg.critic), d.dim, d.dim).parameters())
    assert per_run > 4 * params + 4 * d.steps_per_level * d.batch_size * d.dim * 4
    plan = plan_groups([(cfg, None)] * 5, memory_fraction=2.5 * per_run / (1 << 30))
    assert plan == [[0, 1], [2, 3], [4]]
    assert plan_groups([(cfg, None)] * 5, max_group_size=4) == [[0, 1, 2], [3, 4]]


# ------------------------------------------------------------------ what the group stepper refuses (never ignores)
class _Schedule(Staircase):
    def optim(self) -> Optim:
        return Optim("adam", float(self.cfg.benchmark.lr), milestones=(1,))


class _AdversaryRate(Staircase):
    def optim(self) -> Optim:
        return Optim("adam", float(self.cfg.benchmark.lr), adversary_lr=1e-3)


class _Shown(Staircase):
    shown_columns = ("acc",)


class _Adversary(Staircase):  # only a set-up task shows it
    def setup(self) -> None:
        super().setup()
        self.adversary = torch.nn.Linear(2, 1)


class _Frozen(Staircase):  # only a set-up task shows it
    def setup(self) -> None:
        super().setup()
        next(iter(self.nets["critic"].parameters())).requires_grad_(False)


class _GroupOption(Staircase):  # only a set-up task shows it
    def setup(self) -> None:
        super().setup()
        groups = self.estimator.param_groups
        self.estimator.param_groups = lambda lr: [{**g, "weight_decay": 0.1} for g in groups(lr)]


def _as(cls: type, monkeypatch, out: str = "x", *over: str):
    """A staircase config whose benchmark is ``cls`` (registered for the test)."""
    monkeypatch.setitem(TASKS, "stair_x", cls)
    cfg = compose_config(["seed=1", *STAIRCASE, *QUIET, *over], out_dir=out)
    OmegaConf.update(cfg, "benchmark.name", "stair_x")
    return cfg


@pytest.mark.parametrize("cls,why", [(_Schedule, "MultiStepLR"), (_AdversaryRate, "adversary"),
                                     (_Shown, "progress-bar values (acc")])
def test_a_feature_the_group_stepper_lacks_keeps_the_config_alone(cls, why, monkeypatch):
    """The launcher's grouping: a learning-rate schedule, an adversary's optimizer or progress-bar values train
    alone, with the reason the launcher logs."""
    cfg = _as(cls, monkeypatch)
    assert group_key(cfg) is None and why in why_alone(cfg)
    assert why_alone(_as(Staircase, monkeypatch)) is None


@pytest.mark.parametrize("cls,why", [(_Adversary, "an adversary"), (_Frozen, "frozen parameters (critic.h.0.weight)"),
                                     (_GroupOption, "estimator parameter groups with weight_decay")])
def test_what_only_a_set_up_run_shows_is_refused_when_the_group_is_planned(cls, why, monkeypatch, caplog, tmp_path):
    """An adversary, a frozen parameter or an estimator's optimizer option, set in ``setup``: the planned group
    falls apart into runs alone, and the log says why; a group formed anyway (train_group) refuses to train
    instead of training them wrong."""
    cfg = _as(cls, monkeypatch, "x", "estimator=tuba", "estimator.baseline=learned")
    with caplog.at_level(logging.INFO, logger="mibench"):
        assert plan_groups([(cfg, None)] * 3) == [[0], [1], [2]]
    assert f"3 runs of benchmark=stair_x train alone: {why}" in caplog.text
    with pytest.raises(GroupRefused, match=f"cannot train in a group: {re.escape(why)}"):
        train_group([cfg, cfg], [tmp_path / "a", tmp_path / "b"])


def test_why_alone_reads_a_complete_registry():
    """In a fresh process that imports only the planner, the registry holds every benchmark (it was empty when
    nothing had imported mibench.benchmarks: every job then trained alone without a word)."""
    code = ("from mibench.engine.plan import why_alone\nfrom mibench.engine.task import TASKS\n"
            "from omegaconf import OmegaConf\nimport sys\n"
            "cfg = OmegaConf.create({'benchmark': {'name': 'staircase', 'lr': 1e-3}, 'critic': {'name': 'separable'},"
            " 'hardware': {'precision': '32-true'}, 'logger': {'name': 'none'}})\n"
            "sys.exit(0 if 'staircase' in TASKS and why_alone(cfg) is None else 1)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_a_float64_group_matches_its_runs_alone(tmp_path):
    """``hardware.precision=64-true`` is the group stepper's too (the backend's dtype scope around set-up and
    training): grouped runs follow their runs alone to float64 rounding."""
    over = ["hardware.precision=64-true", *STAIRCASE]
    cfgs = [_compose([f"estimator={e}", "seed=1", *over], tmp_path / e) for e in ("nwj", "infonce")]
    assert why_alone(cfgs[0]) is None
    grouped = train_group(cfgs, [tmp_path / e for e in ("nwj", "infonce")])
    for cfg, res in zip(cfgs, grouped):
        seed_everything(1)
        (tmp_path / "alone" / cfg.estimator.name).mkdir(parents=True)
        alone = run_task(cfg, tmp_path / "alone" / cfg.estimator.name)
        assert res.status == alone.status == "completed" and res.steps.shape == alone.steps.shape
        for col in ("estimate", "loss"):
            np.testing.assert_allclose(res.steps[col], alone.steps[col], rtol=0, atol=1e-9)


def test_a_sweep_that_skips_the_preflight_still_groups(tmp_path):
    """The registries are complete wherever they are read (mibench.registry): a vectorised sweep entered straight
    at Hydra (``app.hydra_entry``, no CLI preflight: nothing has imported the benchmarks before the launcher asks
    which jobs may group) trains its jobs as one group, not each alone."""
    code = ("import sys; from mibench.app import hydra_entry; "
            "hydra_entry(sys.argv[1:])")
    args = ["-m", "hydra/launcher=vectorized", "estimator=infonce,nwj", "seed=1", *STAIRCASE, f"runs_root={tmp_path}",
            *QUIET, "hydra.launcher.progress=false"]
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "1 vectorised group(s) of 2 runs, 0 alone" in p.stderr + p.stdout, p.stderr + p.stdout
    groups = [json.loads(f.read_text()).get("vectorized", {}).get("group_size") for f in tmp_path.rglob("result.json")]
    assert groups == [2, 2]
