"""The benchmark contract (docs/engine.md "What a benchmark declares"): one Capabilities value per config, an
explicit RunContext, and analyses as their own kind without training hooks."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mibench.engine import Analysis, Capabilities, RunContext, Task
from mibench.registry import TASKS

ANALYSES = ("gradients", "optimal", "sandwich")


@pytest.mark.parametrize("name", ANALYSES)
def test_analyses_are_their_own_kind_without_training_hooks(name):
    cls = TASKS[name]
    assert issubclass(cls, Analysis) and not issubclass(cls, Task)
    assert not any(hasattr(cls, m) for m in ("segments", "step", "score", "columns", "optim", "on_block"))
    caps = cls.capabilities({"benchmark": {"name": name}})
    assert not (caps.trains or caps.uses_estimator or caps.uses_critic or caps.trains_critic or caps.vectorized)
    assert caps.method == name


def test_every_other_benchmark_is_a_task():
    assert sorted(n for n, t in TASKS.items() if not issubclass(t, Task)) == list(ANALYSES)


def cfg(bench: dict, **groups) -> dict:
    """A config as plain data (a config.yaml): capabilities read it by key."""
    return {"benchmark": bench, "critic": {"name": "separable"}, **groups}


@pytest.mark.parametrize("name, config, changed", [
    ("staircase", cfg({"name": "staircase"}), {}),
    ("staircase", cfg({"name": "staircase"}, critic={"name": "conditional"}), {"conditional": True, "vectorized": False}),
    ("jigsaw", cfg({"name": "jigsaw", "objective": "mi", "negatives": "batch"}), {"layout": "paired"}),
    ("jigsaw", cfg({"name": "jigsaw", "objective": "ce", "negatives": "unused"}), {"uses_estimator": False, "layout": "rows"}),
    ("layerpair", cfg({"name": "layerpair", "supervised": True, "epochs": 3}), {"uses_estimator": False}),
    ("layerpair", cfg({"name": "layerpair", "supervised": False, "epochs": 0}), {"trains": False}),
    ("dim", cfg({"name": "dim", "epochs": 2}, dim={"beta": 1.0}), {"layout": "rows"}),
    ("dim", cfg({"name": "dim", "epochs": 0}, dim={"beta": 0.0}), {"layout": "paired", "trains": False}),
    ("eta_gaussian", cfg({"name": "eta_gaussian", "eta_schedule": "alternating"}), {"vectorized": False}),
])
def test_options_change_only_what_they_say(name, config, changed):
    """``capabilities(cfg)`` is the class's ``caps`` but for what the config's options change."""
    cls = TASKS[name]
    base = dataclasses.replace(cls.caps, method=cls.caps.method or name)
    got = cls.capabilities(config)
    assert isinstance(got, Capabilities) and got == dataclasses.replace(base, **changed)


def test_the_context_is_where_a_task_reads_where_training_stands():
    ctx = RunContext()
    assert (ctx.device, ctx.rank, ctx.world_size, ctx.is_global_zero) == (torch.device("cpu"), 0, 1, True)
    assert (ctx.step, ctx.segment, ctx.diverged_step) == (0, 0, None)
    ctx.fit.t, ctx.fit.segment, ctx.fit.diverged_step = 7, 2, 5  # what the run's Engine records
    assert (ctx.step, ctx.segment, ctx.diverged_step) == (7, 2, 5)
