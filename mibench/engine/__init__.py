"""The engine under every benchmark: :func:`run_task` builds the task, trains it, evaluates it.

A benchmark is a :class:`Task` (``mibench/benchmarks/<name>.py``) registered with :func:`register`;
see ``docs/engine.md`` for the contract.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import torch
from omegaconf import DictConfig

from .backend import Backend, make_backend
from .logging import Logger, make_logger
from .loop import CHECKPOINT, Engine, Fit, make_optimizer, seed_everything
from .result import RunResult
from .task import TASKS, Optim, Scores, Step, Task, data_error, register


class NoWorkError(RuntimeError):
    """The run ended without a single training step (never recorded as ``completed``)."""


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None and device.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_task(cfg: DictConfig, out_dir: Path | None, resume: Path | None = None) -> RunResult:
    """Set up ``benchmark=<name>``'s task, train it (from ``resume``, a checkpoint), evaluate, write outputs."""
    backend = make_backend(cfg.hardware)
    if cfg.trainer.get("deterministic", False):  # (the call imports torch._dynamo: only when asked for)
        torch.use_deterministic_algorithms(True)
    task = TASKS[cfg.benchmark.name](cfg, out_dir, backend.device)
    task.backend = backend
    task.setup()
    logger = make_logger(cfg, out_dir) if backend.is_global_zero else Logger()
    result = RunResult(out_dir=Path(out_dir) if out_dir is not None else None)
    engine = None
    t0 = time.perf_counter()
    try:
        if task.trains:
            b = cfg.benchmark
            engine = Engine(task, backend, logger, progress=bool(cfg.trainer.get("enable_progress_bar", False)),
                            stop_on_divergence=bool(b.get("stop_on_divergence", True)),
                            checkpoint=bool(b.get("checkpoint", False)), out_dir=out_dir,
                            total_steps=task.total_steps(), int_columns=task.int_columns)
            task.engine = engine
            with cpu_threads(task.cpu_threads, backend.device):
                fit = engine.train(resume)
            result.steps = engine.write_steps()
            result.steps_done, result.diverged_step = fit.t, fit.diverged_step
            if fit.t == 0:
                raise NoWorkError(f"benchmark={task.name} trained no step ({task.no_work_hint()})")
        result.extra["train_wall_s"] = time.perf_counter() - t0
        result.metrics.update(task.evaluate())
        task.finish(result)
    finally:
        logger.close()
    result.wall_time_s = time.perf_counter() - t0
    result.status = "diverged" if result.diverged_step is not None else "completed"
    if engine is not None:
        engine.remove_checkpoint()
    return result


__all__ = ["Backend", "CHECKPOINT", "Engine", "Fit", "NoWorkError", "Optim", "RunResult", "Scores", "Step", "TASKS", "Task",
           "data_error", "make_backend", "make_optimizer", "register", "run_task", "seed_everything"]
