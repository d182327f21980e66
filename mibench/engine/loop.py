"""One run's side of training: its optimizers, records, divergence, heartbeat and checkpoints (:class:`Engine`),
and its step (:class:`RunStepper`); the loop that drives them is :mod:`mibench.engine.driver`.

Per step: the task's forward (under the backend's autocast) gives a loss and the step's values;
``zero_grad`` / ``backward`` / ``step`` run directly on the optimizer (Lightning would only add
hooks here). Every ``task.block`` steps the driver copies the values to the host once and the engine
records them: streamed to steps.csv, checked for divergence (non-finite values, an estimate outside its
bound's valid range: :mod:`mibench.engine.divergence`; recorded with its step and reason, the run stops
cleanly when ``stop_on_divergence``) and handed to the task. At each segment's end (a level, an epoch) the
task summarises it and, for a resumable task, everything a resumed run needs to end with the same numbers
is checkpointed atomically.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..records import CHECKPOINT
from ..results import atomic_write_csv, publish
from .backend import Backend
from .checkpoint import CHECKPOINT_VERSION, Resume, fault_injection_rows, read_checkpoint, write_checkpoint
from .divergence import Watch
from .driver import Driver, Fit
from .logging import Logger, Progress, describe
from .task import Optim, Task


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (as Lightning's seed_everything does)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(groups: list[dict[str, Any]], opt: Optim) -> torch.optim.Optimizer:
    """The torch optimizer ``opt`` names (SGD, else Adam) over ``groups``."""
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    return torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.weight_decay)


def block_estimate(task: Task, block: np.ndarray, before: float | None) -> float | None:
    """The mean of a host block's finite estimates (``before`` when the task records none, or none is finite)."""
    if "estimate" not in task.columns or not len(block):
        return before
    col = block[:, 1 + len(task.context_columns) + task.columns.index("estimate")]
    col = col[np.isfinite(col)]
    return float(col.mean()) if len(col) else before


class Engine:
    """One run of a task: its optimizers, records, divergence, heartbeat and checkpoints; :meth:`train` drives it
    alone. ``out_dir`` None: nothing is written (e.g. DIM's probes, trained in memory)."""

    def __init__(self, task: Task, backend: Backend, logger: Logger | None = None, progress: bool = False,
                 stop_on_divergence: bool = True, checkpoint: bool = False, out_dir: Path | None = None,
                 total_steps: int | None = None, int_columns: tuple[str, ...] = (),
                 checkpoint_every_s: float | None = None, log_every_s: float | None = None):
        self.task, self.backend, self.logger = task, backend, logger or Logger()
        self.stop_on_divergence, self.out_dir = stop_on_divergence, Path(out_dir) if out_dir is not None else None
        self.checkpoint = checkpoint and task.capabilities(task.cfg).resumable and self.out_dir is not None
        self.checkpoint_every_s = checkpoint_every_s  # also checkpoint inside a segment this often (None: never)
        self.on_interrupt: Any = None  # called with the interruptions so far when a stop signal is handled
        self.on_beat: Any = None  # called with where training stands (the heartbeat): see beat()
        self.estimate: float | None = None  # the last host block's mean estimate
        self.seg_start = 0  # the step the current segment began at
        self.progress = Progress(progress and backend.is_global_zero, total_steps, describe(task),
                                 log_every_s if backend.is_global_zero else None)  # (a progress line every log_every_s)
        self._last: tuple[int, int, np.ndarray, np.ndarray | None] | None = None  # the last block recorded
        self._fields_at: int | None = None  # the step fit.fields were computed up to
        self.total_steps = total_steps
        self.columns = task.record_columns()
        self.watch = Watch(task)
        self.int_columns = int_columns
        self.fit = task.ctx.fit  # (the task reads where training stands from its context)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.scheduler: Any = None
        self._partial = self.out_dir / f"{task.steps_file}.partial" if self.out_dir and task.steps_file else None

    # ------------------------------------------------------------------ set-up
    def modules(self) -> nn.ModuleDict:
        """Everything the run trains (networks, estimators, the adversary): moved, switched and checkpointed as one."""
        t = self.task
        mods = nn.ModuleDict({"nets": t.nets, "estimators": t.estimators})
        if t.adversary is not None:
            mods["adversary"] = t.adversary
        return mods

    def build_optimizers(self) -> None:
        """Main optimizer: the task's networks in one group plus each estimator's own groups (eta, a(y),
        q(y), on their own learning rates); a second one for the adversary when the task has one."""
        t, opt = self.task, self.task.optim()
        self.modules().to(self.backend.device)
        groups = [{"params": [p for p in t.nets.parameters() if p.requires_grad], "lr": opt.lr}]
        for est in t.estimators:
            groups += est.param_groups(opt.lr)
        self.optimizers = [make_optimizer(groups, opt)]
        self.params = [p for g in groups for p in g["params"]]
        if t.adversary is not None:
            self.adv_params = list(t.adversary.parameters())
            adv = Optim("adam", opt.adversary_lr or opt.lr)
            self.optimizers.append(make_optimizer([{"params": self.adv_params, "lr": adv.lr}], adv))
        if opt.milestones:
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizers[0], list(opt.milestones), 0.1)

    def train(self, resume: Path | None = None) -> Fit:
        """Train the task from ``resume`` (its checkpoint) or afresh: the driver with this run's stepper."""
        Driver(RunStepper(self)).run([resume])
        return self.fit

    # ------------------------------------------------------------------ records
    def end_segment(self, seg_index: int, seg_first: int, t0: float) -> None:
        """The task summarises the segment (its host blocks are ``fit.rows[seg_first:]``); its metrics are logged."""
        fit = self.fit
        self.block_fields()  # (before the segment count moves on: a task may name the segment in progress)
        fit.segment = seg_index + 1
        seg_rows = (np.concatenate(fit.rows[seg_first:]) if len(fit.rows) > seg_first
                    else np.zeros((0, len(self.columns))))
        metrics = self.task.end_segment(seg_index, seg_rows, time.perf_counter() - t0)
        if metrics:
            self.logger.log(metrics, step=fit.t)
        if self.scheduler is not None:
            self.scheduler.step()
        self.beat(fit.t, fit.segment)

    def beat(self, step: int, segment: int, phase: str = "training") -> None:
        """Tell ``on_beat`` where the run stands, from host values only (no device sync): the step, the planned
        total, the segment (1-based) of how many and its name (level, epoch), the last host block's mean
        estimate, the phase (training; evaluating once training is over). Called at every segment end and,
        inside a segment, at the first step boundary once HEARTBEAT_S seconds have passed since the last call
        (:meth:`mibench.engine.driver.Driver.beat_if_due`)."""
        if self.on_beat is not None:
            task = self.task
            self.on_beat({"step": int(step), "total": self.total_steps, "segment": int(segment),
                          "segments": task.segment_count(), "unit": task.segment_unit, "estimate": self.estimate,
                          "phase": phase})

    def split(self, host: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Host rows of the device buffer: the record (``task.columns``) and the bar's values (``Step.shown``)."""
        n = len(self.task.columns)
        return host[:, :n], (host[:, n:] if host.shape[1] > n else None)

    def take(self, host: np.ndarray, lo: int, hi: int) -> None:
        """Record the host copy of steps [lo, hi) (:meth:`record`)."""
        rec, shown = self.split(host)
        self.record(rec, lo, hi, shown)

    def peek_fields(self, host: np.ndarray, lo: int, hi: int) -> dict[str, Any]:
        """The task's fields from the host copy of the block so far (steps [lo, hi))."""
        rec, shown = self.split(host)
        return self.fields(lo, hi, self.rows(rec, lo, hi), shown)

    def rows(self, rec: np.ndarray, lo: int, hi: int) -> np.ndarray:
        """Host rows of steps [lo, hi): ``step``, the task's context columns, then ``rec`` (its ``columns``)."""
        steps = np.arange(lo, hi, dtype=np.float64)
        ctx = self.task.context(lo, hi)
        return np.column_stack([steps, *[np.broadcast_to(np.asarray(ctx[c], dtype=np.float64), steps.shape)
                                         for c in self.task.context_columns], rec])

    def fields(self, lo: int, hi: int, rows: np.ndarray, shown: np.ndarray | None = None) -> dict[str, Any]:
        """The task's progress fields for the rows of steps [lo, hi) (host rows only, never per step)."""
        # (``shown`` only to a task that declares shown_columns: a task written before it keeps its 3 arguments)
        task = self.task
        return task.progress(lo, hi, rows, shown) if task.shown_columns else task.progress(lo, hi, rows)

    def block_fields(self) -> dict[str, Any]:
        """The task's fields for the last block recorded (``fit.fields``; computed once per block, when a bar,
        a progress line or a segment end asks)."""
        if self._last is not None and self._last[1] != self._fields_at:
            self.fit.fields, self._fields_at = self.fields(*self._last), self._last[1]
        return self.fit.fields

    def record(self, rec: np.ndarray, lo: int, hi: int, shown: np.ndarray | None = None) -> None:
        """Host rows of steps [lo, hi) (``task.columns``): check them for divergence, stream them out
        (``shown``: the block's ``Step.shown`` values, for the progress bar only)."""
        task, fit = self.task, self.fit
        block = self.rows(rec, lo, hi)
        found = self.watch.first(block, fit.rows)  # (step, reason) or None
        flag = torch.tensor(float(found is not None), device=self.backend.device)  # NCCL reduces only CUDA tensors
        diverged = bool(self.backend.reduce(flag, "max"))  # any rank
        if found is not None and fit.diverged_step is None:
            fit.diverged_step, fit.diverged_reason = found
        fit.rows.append(block)
        if task.on_block(lo, hi, block) and fit.diverged_step is None:
            fit.diverged_step, diverged = hi, True
            fit.diverged_reason = f"a non-finite value in {task.name}'s evaluation after step {hi}"
        elif diverged and fit.diverged_step is None:
            fit.diverged_step, fit.diverged_reason = lo, f"another rank diverged in steps {lo}-{hi - 1}"
        if (diverged and self.stop_on_divergence) or task.done():
            fit.stopped = True
        if self._partial is not None and self.backend.is_global_zero:
            df = pd.DataFrame(block, columns=self.columns).astype({c: int for c in ("step", *self.int_columns)})
            df.to_csv(self._partial, mode="a" if self._partial.exists() else "w", header=not self._partial.exists(),
                      index=False, float_format="%.9g")
            fault_injection_rows(hi)
        self.estimate = block_estimate(task, block, self.estimate)
        if self.logger.per_step:
            self.logger.log_steps(block, self.columns)
        self._last = (lo, hi, block, shown)

    def write_steps(self) -> pd.DataFrame:
        """steps.csv appears only complete: the streamed partial file is renamed over it at the end."""
        df = self.fit.table(self.columns, self.int_columns)
        if self._partial is not None and self.backend.is_global_zero:
            target = self._partial.with_name(self.task.steps_file)
            if self._partial.exists():
                publish(self._partial, target)
            else:
                atomic_write_csv(target, df)
        return df

    # ------------------------------------------------------------------ checkpoint / resume
    def save_checkpoint(self, pending: torch.Tensor | None = None) -> None:
        """Everything a resumed run needs to end with the same numbers, written atomically: at a segment's end,
        or inside one (``pending``: the rows of the block not yet copied to the host; the resumed run skips
        the segment's first ``t - seg_start`` batches)."""
        if not self.backend.is_global_zero:
            return
        fit = self.fit
        rows = np.concatenate(fit.rows) if fit.rows else np.zeros((0, len(self.columns)))
        inside = pending is not None
        state = {"version": CHECKPOINT_VERSION, "t": fit.t, "segment": fit.segment, "diverged_step": fit.diverged_step,
                 "diverged_reason": fit.diverged_reason,
                 "seg_start": self.seg_start if inside else fit.t,
                 "pending": pending.detach().cpu() if inside else torch.zeros(0),
                 "interruptions": list(fit.interruptions),
                 "rows": torch.from_numpy(rows), "modules": self.modules().state_dict(),
                 "optimizers": [o.state_dict() for o in self.optimizers],
                 "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                 "task": self.task.state_dict(), "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        write_checkpoint(state, self.out_dir / CHECKPOINT)

    def load_checkpoint(self, path: Path) -> Resume:
        """The run's state from ``path``; where its segment stands (rows of the checkpoint rewrite the steps file)."""
        state = read_checkpoint(path, self.backend.device)
        self.modules().load_state_dict(state["modules"])
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.task.load_state_dict(state["task"])
        at = Resume(state["rng_cpu"], state.get("rng_cuda"))
        at.restore_rng()
        fit = self.fit
        fit.t, fit.segment, fit.diverged_step = int(state["t"]), int(state["segment"]), state["diverged_step"]
        fit.diverged_reason = state.get("diverged_reason")
        fit.interruptions = list(state.get("interruptions", []))
        at.pending = state.get("pending", torch.zeros(0))
        at.offset = fit.t - int(state.get("seg_start", fit.t))
        rows = state["rows"].numpy()
        split = int(np.searchsorted(rows[:, 0], fit.t - at.offset)) if len(rows) else 0  # this segment's rows
        fit.rows = [r for r in (rows[:split], rows[split:]) if len(r)]
        at.seg_first = 1 if split > 0 else 0
        if self._partial is not None:
            self._partial.unlink(missing_ok=True)
            if len(rows):
                fit.table(self.columns, self.int_columns).to_csv(self._partial, index=False, float_format="%.9g")
        return at

    def begin(self, resume: Path | None) -> Resume:
        """Where training starts: the checkpoint ``resume`` (its rows rewrite the partial steps file: rows an
        attempt streamed after its last checkpoint are dropped), or afresh, which removes the partial steps file
        and the checkpoint an earlier attempt left: rows are never appended to another attempt's, and no later
        resume continues that attempt's state."""
        if resume is not None:
            return self.load_checkpoint(resume)
        if self.out_dir is not None and self.backend.is_global_zero:
            if self._partial is not None:
                self._partial.unlink(missing_ok=True)
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
        return Resume()

    def remove_checkpoint(self) -> None:
        """After a run's end: no later resume continues it."""
        if self.out_dir is not None and self.backend.is_global_zero:
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)


class RunStepper:
    """One run's step (:class:`mibench.engine.driver.Stepper`): ``task.step`` under the backend's autocast, then
    ``zero_grad`` / ``backward`` / ``step`` on its optimizer (Fabric's for DDP / fp16: gradients averaged over
    ranks, the gradient scaler), then the adversary's step on its own optimizer."""

    def __init__(self, engine: Engine):
        engine.build_optimizers()
        task = engine.task
        self.engine, self.runs, self.progress = engine, [engine], engine.progress
        self.width = len(task.columns) + len(task.shown_columns)  # the record, then the bar's values
        self.device, self.dtype = engine.backend.device, torch.get_default_dtype()

    def step(self, batches: tuple[Any, ...]) -> Tensor:
        """The step on the run's batch: its record and the bar's values, on the device."""
        e, be = self.engine, self.engine.backend
        with be.autocast():
            s = e.task.step(batches[0])
        if e.params:  # nothing to learn (a known critic and a parameter-free bound): evaluate only
            self.update(e.optimizers[0], s.loss, e.params)
        values = s.values
        if s.adversary is not None:
            with be.autocast():
                adv_loss = s.adversary()
            self.update(e.optimizers[1], adv_loss, e.adv_params)
            values = [*values, adv_loss]
        return torch.stack([v.detach().to(self.dtype) for v in (*values, *s.shown)])

    def update(self, opt: torch.optim.Optimizer, loss: Tensor, params: list[Tensor]) -> None:
        """One optimizer step on ``loss``."""
        opt.zero_grad(set_to_none=True)
        self.engine.backend.backward(loss, params)
        self.engine.backend.step(opt)

    def resumed(self, r: int) -> None:
        """(The engine loaded its optimizers with its checkpoint.)"""

    def leave(self, r: int) -> None:
        """(The run ends with the loop.)"""

    def export(self, r: int) -> None:
        """(The torch optimizers hold the state.)"""

    def fields(self, fields: list[dict[str, Any]], live: int) -> dict[str, Any]:
        """The run's own fields."""
        return fields[0]


__all__ = ["CHECKPOINT", "Engine", "Fit", "RunStepper", "make_optimizer", "seed_everything"]
