"""Which runs of a sweep train together as one batched model, and why the others train alone.

:func:`group_key` (the launcher): configs equal but for the per-run keys form a group, unless
:func:`why_alone` names something a group cannot do. :func:`plan_groups` (before a group trains): the
runs that start at the same step, cut to fit the device's memory, or each alone when a set-up run shows
something the group stepper refuses (:func:`mibench.engine.group.refusal`; the log says what).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from ..registry import TASKS  # complete: every built-in task and plug-in registered by then
from ..log import LOG
from .backend import make_backend, needs_fabric
from .context import RunContext
from .group import per_process, refusal
from .task import Task

# config keys that may differ between the runs of a group (everything else must be equal)
PER_RUN_KEYS = ("seed", "estimator", "lambda", "c_star", "per_estimator", "benchmark.lr", "out_dir",
                "resume", "overwrite", "runs_root", "logger")


def group_key(cfg: DictConfig) -> str | None:
    """Runs with equal keys can train together; None: this config trains alone (and why is in
    :func:`why_alone`)."""
    if why_alone(cfg) is not None:
        return None
    c = cfg.copy()
    with open_dict(c):
        for key in PER_RUN_KEYS:  # blanked before resolving: out_dir needs Hydra's runtime, estimator ${lambda}
            OmegaConf.update(c, key, None, force_add=True)
    return json.dumps(OmegaConf.to_container(c, resolve=True), sort_keys=True, default=str)


def why_alone(cfg: DictConfig) -> str | None:
    """Why runs of this config cannot share a batched step (None: they can): the hardware, the logger, or what
    the task asks of its step (:func:`mibench.engine.group.refusal` of the task, not set up)."""
    cls = TASKS.get(cfg.benchmark.name)
    if cls is None:
        return f"benchmark={cfg.benchmark.name} is not a registered benchmark"
    if needs_fabric(cfg.hardware):
        return "DDP / several devices / fp16 (Lightning Fabric) runs train alone"
    if cfg.logger.name == "wandb":
        return "logger=wandb runs train alone"
    if not cls.capabilities(cfg).vectorized:  # (an Analysis, or an option rules it out: nothing to make)
        return per_process(cfg)
    return refusal(cls(cfg, None, RunContext()))


# ---------------------------------------------------------------------------------------------- memory
def run_bytes(task: Task, batch: Any) -> int:
    """Device bytes one run adds to a group: parameters x 4 (value, gradient, two optimizer moments), the
    activations its step saves for backward (x 2: temporaries) and its data (``Task.data_bytes``)."""
    saved = [0]

    def pack(t: Tensor) -> Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    params = sum(p.numel() * p.element_size() for mod in (task.nets, task.estimators) for p in mod.parameters())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        task.step(batch)
    return 4 * params + 2 * saved[0] + task.data_bytes()


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device`` (a CPU: the system's available memory; 8 GiB when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def split_sizes(n: int, per_run: int, budget: int, cap: int | None = None) -> list[int]:
    """Sizes of the groups ``n`` runs are cut into so that each fits ``budget`` bytes (and ``cap`` runs)."""
    most = max(1, budget // max(1, per_run))
    if cap:
        most = min(most, int(cap))
    k = math.ceil(n / most)
    base, extra = divmod(n, k)
    return [base + (i < extra) for i in range(k)]


def start_step(resume: Path | None) -> int:
    """The step a run starts at: its checkpoint's, or 0."""
    if resume is None:
        return 0
    return int(torch.load(resume, map_location="cpu", weights_only=False)["t"])


def probe(cfg: DictConfig) -> tuple[Task, Any]:
    """A throw-away run of ``cfg``, set up, and its first batch."""
    backend = make_backend(cfg.hardware)
    task = TASKS[cfg.benchmark.name](cfg, None, RunContext(backend))
    task.setup()
    nn.ModuleDict({"n": task.nets, "e": task.estimators}).to(backend.device)
    return task, next(iter(next(iter(task.segments(0)))))


def probe_bytes(cfg: DictConfig) -> tuple[int, torch.device]:
    """:func:`run_bytes` of one run of ``cfg``, measured on a throw-away task (one step, no update)."""
    task, batch = probe(cfg)
    return run_bytes(task, batch), task.device


def plan_groups(runs: list[tuple[DictConfig, Path | None]], max_group_size: int | None = None,
                memory_fraction: float = 0.5) -> list[list[int]]:
    """Indices of ``runs`` (configs of one :func:`group_key`, each with its checkpoint or None) per group:
    runs that start at the same step, at most as many as fit ``memory_fraction`` of the device's free
    memory (:func:`run_bytes`) and ``max_group_size``; each run alone when its set-up task shows something
    the group stepper refuses (logged)."""
    by_start: dict[int, list[int]] = {}
    for i, (_, resume) in enumerate(runs):
        by_start.setdefault(start_step(resume), []).append(i)
    plan: list[list[int]] = []
    for idx in by_start.values():
        cfg = runs[idx[0]][0]
        task, batch = probe(cfg)
        why = refusal(task)
        if why is not None:
            LOG.info(f"mibench: {len(idx)} runs of benchmark={cfg.benchmark.name} train alone: {why}")
            plan += [[i] for i in idx]
            continue
        sizes = split_sizes(len(idx), run_bytes(task, batch), int(memory_fraction * free_bytes(task.device)),
                            max_group_size)
        lo = 0
        for n in sizes:
            plan.append(idx[lo:lo + n])
            lo += n
    return plan


__all__ = ["PER_RUN_KEYS", "free_bytes", "group_key", "plan_groups", "probe_bytes", "run_bytes", "split_sizes",
           "why_alone"]
