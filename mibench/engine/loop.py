"""The engine: one training loop, record buffer, divergence check and checkpoint for every task.

Per step: the task's forward (under the backend's autocast) gives a loss and the step's values;
``zero_grad`` / ``backward`` / ``step`` run directly on the optimizer (Lightning would only add
hooks here); the values go into a preallocated device buffer. Every ``task.block`` steps the
buffer is copied to the host once: the rows are streamed to steps.csv, checked for divergence
(non-finite values, an estimate outside its bound's valid range: :mod:`mibench.engine.divergence`; recorded
with its step and reason, the run stops cleanly when ``stop_on_divergence``) and handed to the task. At
each segment's end (a level, an epoch) the task summarises it and, for a resumable task, everything a
resumed run needs to end with the same numbers is checkpointed atomically.
"""
from __future__ import annotations

import itertools
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import cluster
from ..checks import ConfigError
from ..log import LOG
from ..records import CHECKPOINT, HEARTBEAT_S
from ..results import atomic_write_csv, first_line, publish
from .backend import Backend
from .divergence import Watch
from .interrupt import Interrupts
from .logging import Logger, Progress, describe
from .task import Optim, Task

CHECKPOINT_VERSION = 2  # (version 2 files without seg_start / pending are segment-end checkpoints)


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (as Lightning's seed_everything does)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(groups: list[dict[str, Any]], opt: Optim) -> torch.optim.Optimizer:
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    return torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.weight_decay)


def fault_injection(segment: int) -> None:
    """``MIBENCH_KILL_AFTER_SEGMENT=k``: SIGKILL this process once segment k's checkpoints are written
    (the resume tests' crash)."""
    kill_after = os.environ.get("MIBENCH_KILL_AFTER_SEGMENT")
    if kill_after is not None and segment == int(kill_after) + 1:
        os.kill(os.getpid(), signal.SIGKILL)


def fault_injection_rows(hi: int) -> None:
    """``MIBENCH_KILL_AFTER_ROWS=k``: SIGKILL this process once the rows of steps up to k are streamed to the
    partial steps file (a kill between checkpoints: those rows are not in any checkpoint)."""
    at = os.environ.get("MIBENCH_KILL_AFTER_ROWS")
    if at is not None and hi >= int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def fault_injection_step(t: int) -> None:
    """``MIBENCH_KILL_AT_STEP=k``: SIGKILL this process once the mid-segment checkpoint at step k is written."""
    at = os.environ.get("MIBENCH_KILL_AT_STEP")
    if at is not None and t == int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def log_interruption(event: dict[str, Any], progress: Progress, where: str) -> None:
    """The job log's line for a stop signal handled: what came, at which step, where the checkpoint is."""
    of = f"/{progress.total}" if progress.total else ""
    LOG.info(f"mibench: {progress.desc}: {event['signal']} ({event['kind']}) at step {event['step']}{of}: "
             f"checkpoint written {where}; handing the signal on")


def block_estimate(task: Task, block: np.ndarray, before: float | None) -> float | None:
    """The mean of a host block's finite estimates (``before`` when the task records none, or none is finite)."""
    if "estimate" not in task.columns or not len(block):
        return before
    col = block[:, 1 + len(task.context_columns) + task.columns.index("estimate")]
    col = col[np.isfinite(col)]
    return float(col.mean()) if len(col) else before


class CheckpointError(ConfigError):
    """A checkpoint a run cannot resume from (one line: the file and the user's choices; exit 2)."""


def write_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``state`` to ``path`` through a temporary file and an atomic rename; on a failed write (a full disk) the
    temporary file is removed and the OSError names ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(state, tmp)
        publish(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """The state saved in ``path`` (``mmap``: tensors mapped, not read: a cheap check that it loads);
    :class:`CheckpointError` when it is empty, truncated, not a checkpoint, or from another checkpoint format."""
    choices = "delete it, or start afresh with resume=false overwrite=true"
    try:
        state = torch.load(path, weights_only=False, map_location=map_location, mmap=mmap)
    except Exception as e:  # noqa: BLE001 -- torch raises RuntimeError, EOFError, UnpicklingError, ... on a bad file
        empty = path.exists() and path.stat().st_size == 0
        why = "it is empty" if empty else f"it is truncated or not a checkpoint ({first_line(e)})"
        raise CheckpointError(f"cannot resume from {path}: {why}; {choices}") from None
    version = state.get("version", 1) if isinstance(state, dict) else None
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"cannot resume from {path}: written by another mibench (checkpoint format {version}, "
                              f"this one reads {CHECKPOINT_VERSION}); {choices}")
    return state


@dataclass
class Resume:
    """Where a checkpoint left its segment: ``offset`` batches of it done, ``pending`` rows not yet flushed,
    this segment's host blocks from ``fit.rows[seg_first]``, and the generators' states to restore."""

    rng_cpu: torch.Tensor | None = None
    rng_cuda: Any = None
    offset: int = 0
    pending: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    seg_first: int = 0

    def restore_rng(self) -> None:
        if self.rng_cpu is not None:
            torch.set_rng_state(self.rng_cpu)
        if torch.cuda.is_available() and self.rng_cuda is not None:
            torch.cuda.set_rng_state_all(self.rng_cuda)


@dataclass
class Fit:
    """Where training stands: steps done, segments done, host rows, divergence."""

    t: int = 0
    segment: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    diverged_step: int | None = None
    diverged_reason: str | None = None
    stopped: bool = False
    interruptions: list[dict[str, Any]] = field(default_factory=list)  # stop signals survived (time limit, preemption)
    fields: dict[str, Any] = field(default_factory=dict)  # the task's progress fields at the last segment end

    def table(self, columns: list[str], int_columns: tuple[str, ...] = ()) -> pd.DataFrame:
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, len(columns)))
        return pd.DataFrame(rows, columns=columns).astype({c: int for c in ("step", *int_columns)})


class Engine:
    """Trains one task. ``out_dir`` None: nothing is written (e.g. DIM's probes, trained in memory)."""

    def __init__(self, task: Task, backend: Backend, logger: Logger | None = None, progress: bool = False,
                 stop_on_divergence: bool = True, checkpoint: bool = False, out_dir: Path | None = None,
                 total_steps: int | None = None, int_columns: tuple[str, ...] = (),
                 checkpoint_every_s: float | None = None, log_every_s: float | None = None):
        self.task, self.backend, self.logger = task, backend, logger or Logger()
        task.engine = self  # (a task's hooks read where training stands: self.engine.fit)
        self.stop_on_divergence, self.out_dir = stop_on_divergence, Path(out_dir) if out_dir is not None else None
        self.checkpoint = checkpoint and task.resumable and self.out_dir is not None
        self.checkpoint_every_s = checkpoint_every_s  # also checkpoint inside a segment this often (None: never)
        self.on_interrupt: Any = None  # called with the interruptions so far when a stop signal is handled
        self.on_beat: Any = None  # called with where training stands (the heartbeat): see beat()
        self.beat_due = 0.0  # time.monotonic() of the next heartbeat inside a segment
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
        self.fit = Fit()
        self.optimizers: list[torch.optim.Optimizer] = []
        self.scheduler: Any = None
        self._partial = self.out_dir / f"{task.steps_file}.partial" if self.out_dir and task.steps_file else None

    # ------------------------------------------------------------------ set-up
    def modules(self) -> nn.ModuleDict:
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

    # ------------------------------------------------------------------ the loop
    def train(self, resume: Path | None = None) -> Fit:
        task, fit, be = self.task, self.fit, self.backend
        self.build_optimizers()
        width = len(task.columns) + len(task.shown_columns)  # the record, then the bar's values
        buf = torch.zeros(max(1, task.block), width, device=be.device)
        at = self.begin(resume)
        if len(at.pending):  # (a segment-end checkpoint has none)
            buf[: len(at.pending)] = at.pending.to(be.device)
        self.modules().train()
        lo = fit.t - len(at.pending)  # first step of the block being filled
        with Interrupts(self.checkpoint_every_s if self.checkpoint else None, lead_s=cluster.signal_lead_s(),
                        install=None if self.checkpoint else False) as stop:
            for seg_index, segment in enumerate(task.segments(fit.segment), start=fit.segment):
                t0 = time.perf_counter()
                seg_first = at.seg_first if at.offset else len(fit.rows)  # this segment's host blocks: fit.rows[seg_first:]
                self.seg_start = fit.t - at.offset
                batches = iter(segment)
                if at.offset:  # resumed inside this segment: its first batches were trained before the checkpoint
                    for _ in itertools.islice(batches, at.offset):
                        pass
                    at.restore_rng()  # (iterating may draw from the global generator, e.g. a DataLoader's seed)
                    at = Resume()
                for batch in batches:
                    with be.autocast():
                        s = task.step(batch)
                    if self.params:  # nothing to learn (a known critic and a parameter-free bound): evaluate only
                        opt = self.optimizers[0]
                        opt.zero_grad(set_to_none=True)
                        be.backward(s.loss, self.params)
                        be.step(opt)
                    values = s.values
                    if s.adversary is not None:
                        with be.autocast():
                            adv_loss = s.adversary()
                        adv = self.optimizers[1]
                        adv.zero_grad(set_to_none=True)
                        be.backward(adv_loss, self.adv_params)
                        be.step(adv)
                        values = [*values, adv_loss]
                    buf[fit.t - lo] = torch.stack([v.detach().to(buf.dtype) for v in (*values, *s.shown)])
                    fit.t += 1
                    if fit.t - lo == buf.shape[0]:
                        self._flush(buf, lo, fit.t)
                        lo = fit.t
                        if fit.stopped:
                            break
                    elif self.progress.due():  # between block ends: the rows so far (at most every TICK_S)
                        self.peek(buf[: fit.t - lo], lo)
                    self.beat_if_due(fit.t)
                    if self.checkpoint and stop.due(fit.t):  # mid-segment: the wall clock, or the cluster stops the job
                        self.interrupt(stop, buf[: fit.t - lo])
                if fit.t > lo:
                    self._flush(buf, lo, fit.t)
                    lo = fit.t
                self.end_segment(seg_index, seg_first, t0)
                if fit.stopped:
                    break
                if self.checkpoint:
                    self.save_checkpoint()
                    stop.saved()
                    fault_injection(fit.segment)
            if self.checkpoint and stop.signum is not None and not fit.stopped:  # flagged after the last step
                self.interrupt(stop, buf[:0])
            self.progress.close()
        self.modules().eval()
        return fit

    def interrupt(self, stop: Interrupts, pending: torch.Tensor) -> None:
        """Checkpoint inside a segment (with the block's unflushed rows); on a stop signal also record the
        interruption (in the checkpoint and through ``on_interrupt``) and hand the signal on."""
        if stop.signum is not None:
            self.fit.interruptions.append(stop.event(self.fit.t))
        self.save_checkpoint(pending)
        stop.saved()
        fault_injection_step(self.fit.t)
        if stop.signum is not None:
            if self.on_interrupt is not None:
                self.on_interrupt(list(self.fit.interruptions))
            self.progress.close()
            log_interruption(self.fit.interruptions[-1], self.progress, f"-> {self.out_dir / CHECKPOINT}")
            stop.forward()

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
        (:meth:`beat_if_due`)."""
        self.beat_due = time.monotonic() + HEARTBEAT_S
        if self.on_beat is not None:
            task = self.task
            self.on_beat({"step": int(step), "total": self.total_steps, "segment": int(segment),
                          "segments": task.segment_count(), "unit": task.segment_unit, "estimate": self.estimate,
                          "phase": phase})

    def beat_if_due(self, step: int) -> None:
        """:meth:`beat` at a step boundary inside a segment when it is due (one clock read per step)."""
        if self.on_beat is not None and time.monotonic() >= self.beat_due:
            self.beat(step, self.fit.segment + 1)

    def _flush(self, buf: torch.Tensor, lo: int, hi: int) -> None:
        """Copy steps [lo, hi) to the host (the one sync of the block) and record them."""
        rec, shown = self._to_host(buf[: hi - lo])
        self.record(rec, lo, hi, shown)

    def _to_host(self, pending: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows of the device buffer on the host (one copy): the record (``task.columns``) and the bar's values."""
        host = pending.cpu().numpy().astype(np.float64)
        n = len(self.task.columns)
        return host[:, :n], (host[:, n:] if host.shape[1] > n else None)

    def peek(self, pending: torch.Tensor, lo: int) -> None:
        """The bar and the progress line between block ends: steps done and the task's fields from the rows
        of the block so far (one copy, when :meth:`Progress.due`: never per step)."""
        t = self.fit.t
        rec, shown = self._to_host(pending)
        self.progress.show(t, self.fields(lo, t, self.rows(rec, lo, t), shown))

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
        if self.progress.wanted():
            self.progress.show(hi, self.block_fields())

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

    def load_checkpoint(self, path: Path) -> "Resume":
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
        self.progress.resume_at(fit.t)
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
        if self.out_dir is not None and self.backend.is_global_zero:
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
