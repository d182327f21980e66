"""Running tasks: one alone (:func:`run_task`) or a group of compatible ones as one batched model
(:func:`train_group`, see :mod:`mibench.engine.group`); both train through :class:`mibench.engine.driver.Driver`."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from omegaconf import DictConfig

from .. import cluster
from .backend import Backend, make_backend
from .driver import Driver
from .group import GroupStepper
from .logging import Logger, log_every_s, make_logger
from .loop import Engine, seed_everything
from .result import RunResult
from .context import RunContext
from .task import TASKS, Benchmark, Task


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


def setup_task(cfg: DictConfig, out_dir: Path | None, backend: Backend) -> Benchmark:
    """``benchmark=<name>``'s task (or analysis), set up (data loaded, networks built from the global generator's
    state)."""
    if cfg.trainer.get("deterministic", False):  # (the call imports torch._dynamo: only when asked for)
        torch.use_deterministic_algorithms(True)
    task = TASKS[cfg.benchmark.name](cfg, out_dir, RunContext(backend))
    task.setup()
    return task


Hook = Callable[[Any], None]


def make_engine(task: Task, backend: Backend, logger: Logger, out_dir: Path | None, progress: bool | None = None,
                on_interrupt: Hook | None = None, on_beat: Hook | None = None, alone: bool = True) -> Engine:
    """The task's engine. It checkpoints when ``benchmark.checkpoint`` says so, and always inside a SLURM job
    (a requeued job resumes from it): at segment ends, every ``trainer.checkpoint_every_min`` minutes and
    when SLURM signals the job's end. A run ``alone`` writes a progress line every ``trainer.log_every_min``
    minutes (a vectorised group writes one for all its runs). ``on_interrupt`` gets the interruptions when a stop
    signal is handled, ``on_beat`` where training stands (:meth:`Engine.beat`: the run's heartbeat)."""
    cfg, b = task.cfg, task.cfg.benchmark
    every = cfg.trainer.get("checkpoint_every_min", None)
    engine = Engine(task, backend, logger,
                    progress=bool(cfg.trainer.get("enable_progress_bar", False)) if progress is None else progress,
                    stop_on_divergence=bool(b.get("stop_on_divergence", True)),
                    checkpoint=bool(b.get("checkpoint", False)) or cluster.job_id() is not None, out_dir=out_dir,
                    total_steps=task.total_steps(), int_columns=task.int_columns,
                    checkpoint_every_s=60.0 * float(every) if every else None,
                    log_every_s=log_every_s(cfg) if alone else None)
    engine.on_interrupt, engine.on_beat = on_interrupt, on_beat
    return engine


def conclude(task: Benchmark, engine: Engine | None, result: RunResult, t0: float) -> RunResult:
    """After training: the records (steps.csv), the task's evaluation and outputs, the status."""
    if engine is not None:
        fit = engine.fit
        result.steps = engine.write_steps()
        result.steps_done, result.diverged_step, result.diverged_reason = fit.t, fit.diverged_step, fit.diverged_reason
        result.extra["interruptions"] = list(fit.interruptions)
        result.extra["fields"] = dict(fit.fields)  # the task's progress fields at the end (the job log's end line)
        if fit.t == 0:
            raise NoWorkError(f"benchmark={task.name} trained no step ({task.no_work_hint()})")
        engine.beat(fit.t, fit.segment, phase="evaluating")
    result.extra["train_wall_s"] = time.perf_counter() - t0
    result.metrics.update(task.evaluate())
    task.finish(result)
    label_generated(task, result)
    result.wall_time_s = time.perf_counter() - t0
    result.status = "diverged" if result.diverged_step is not None else "completed"
    if result.status == "diverged" and result.diverged_reason is None:  # the task's own finding (finish)
        result.diverged_reason = f"a non-finite value in {task.name}'s evaluation by step {result.diverged_step}"
    if engine is not None:
        engine.remove_checkpoint()
    return result


GENERATED = "GENERATED"  # how a run on generated data is marked, wherever it is shown


def label_generated(task: Benchmark, result: RunResult) -> None:
    """``result.generated_data`` from the task (:meth:`Task.generated_data`); the console text starts by saying so
    unless the task's own text already does."""
    result.generated_data = task.generated_data()
    if result.generated_data and GENERATED not in result.text:
        result.text = (f"{GENERATED} DATA: {result.generated_data}; these numbers say nothing about the paper's\n"
                       + result.text)


def run_task(cfg: DictConfig, out_dir: Path | None, resume: Path | None = None, on_interrupt: Hook | None = None,
             on_beat: Hook | None = None) -> RunResult:
    """Set up ``benchmark=<name>``'s task, train it (from ``resume``, a checkpoint), evaluate, write outputs.
    ``on_interrupt`` is called with the run's interruptions when a stop signal is handled, ``on_beat`` with
    where training stands (its record's heartbeat)."""
    backend = make_backend(cfg.hardware)
    with backend.dtype_scope():
        task = setup_task(cfg, out_dir, backend)
        logger = make_logger(cfg, out_dir) if backend.is_global_zero else Logger()
        result = RunResult(out_dir=Path(out_dir) if out_dir is not None else None)
        engine = None
        t0 = time.perf_counter()
        try:
            trains = isinstance(task, Task) and task.capabilities(cfg).trains  # (an Analysis: no engine, no loop)
            with cpu_threads(task.cpu_threads if trains else None, backend.device):
                result.extra["threads"] = torch.get_num_threads()  # what the run computes with: result.json's machine
                if trains:
                    engine = make_engine(task, backend, logger, out_dir, on_interrupt=on_interrupt, on_beat=on_beat)
                    engine.train(resume)
            return conclude(task, engine, result, t0)
        finally:
            logger.close()


def train_group(cfgs: list[DictConfig], out_dirs: list[Path], resumes: list[Path | None] | None = None,
                progress: bool = False, on_interrupt: list[Hook | None] | None = None,
                on_beat: list[Hook | None] | None = None) -> list[RunResult | Exception]:
    """Train compatible runs (:func:`mibench.engine.plan.group_key`) as one batched model; each run's
    task is set up from its own seed exactly as alone, and concluded (records, evaluation, outputs) on its
    own: a run whose evaluation fails gets its exception in the returned list, the others their results."""
    backend = make_backend(cfgs[0].hardware)
    with backend.dtype_scope():
        return _train_group(cfgs, out_dirs, backend, resumes, progress, on_interrupt, on_beat)


def _train_group(cfgs: list[DictConfig], out_dirs: list[Path], backend: Backend, resumes: list[Path | None] | None,
                 progress: bool, on_interrupt: list[Hook | None] | None, on_beat: list[Hook | None] | None
                 ) -> list[RunResult | Exception]:
    engines, loggers = [], []
    none = [None] * len(cfgs)
    for cfg, out, hook, beat in zip(cfgs, out_dirs, on_interrupt or none, on_beat or none):
        seed_everything(int(cfg.seed))
        task = setup_task(cfg, out, backend)
        loggers.append(make_logger(cfg, out))
        engines.append(make_engine(task, backend, loggers[-1], out, progress=False, on_interrupt=hook, on_beat=beat,
                                   alone=False))
    t0 = time.perf_counter()
    threads = torch.get_num_threads()  # what the group trains with (result.json's machine)
    try:
        stepper = GroupStepper(engines, backend, progress)
        resume_of = dict(zip(map(id, engines), resumes or none))
        Driver(stepper).run([resume_of[id(e)] for e in stepper.runs])
        results: list[RunResult | Exception] = []
        for e, out in zip(engines, out_dirs):
            try:
                results.append(conclude(e.task, e, RunResult(out_dir=Path(out), extra={"threads": threads}), t0))
            except Exception as err:  # noqa: BLE001 -- recorded as this run's crash
                results.append(err)
        return results
    finally:
        for logger in loggers:
            logger.close()
