"""The training loop, written once: segments, blocks, records, divergence, stop signals, checkpoints, resume.

A :class:`Driver` trains the runs of one :class:`Stepper`: a run alone (:class:`mibench.engine.loop.RunStepper`:
``task.step`` on a torch optimizer, through Lightning Fabric for DDP / fp16) or a vectorised group
(:class:`mibench.engine.group.GroupStepper`: ``vmap(task.score)`` and a stacked optimizer). The stepper does one
step of every run and hands back its values on the device; everything else is here. The values go into a
``[block, runs, width]`` device buffer, copied to the host once per block, where each run records its rows
(:class:`mibench.engine.loop.Engine`: divergence, the steps file, ``on_block``, ``done``); a run that stops
(diverged, or done) leaves, the others go on. At each segment's end (a level, an epoch) every run summarises
it and, when it checkpoints, saves what a resumed run needs to end with the same numbers; inside a segment it
also checkpoints on the wall clock and at SLURM's stop signals, with the block's unflushed rows.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import cluster
from ..log import LOG
from ..records import CHECKPOINT, HEARTBEAT_S
from .checkpoint import Resume, fault_injection, fault_injection_step
from .context import Fit
from .interrupt import Interrupts
from .logging import Progress
from .task import Task


class Run(Protocol):
    """What the driver asks of one run's bookkeeping (:class:`mibench.engine.loop.Engine`)."""

    task: Task
    fit: Fit
    checkpoint: bool
    checkpoint_every_s: float | None
    on_interrupt: Callable[[list[dict[str, Any]]], None] | None
    on_beat: Callable[[dict[str, Any]], None] | None
    out_dir: Path | None
    seg_start: int

    def begin(self, resume: Path | None) -> Resume: ...
    def modules(self) -> nn.Module: ...
    def take(self, host: np.ndarray, lo: int, hi: int) -> None: ...
    def peek_fields(self, host: np.ndarray, lo: int, hi: int) -> dict[str, Any]: ...
    def block_fields(self) -> dict[str, Any]: ...
    def end_segment(self, index: int, seg_first: int, t0: float) -> None: ...
    def save_checkpoint(self, pending: Tensor | None = None) -> None: ...
    def beat(self, step: int, segment: int, phase: str = "training") -> None: ...


class Stepper(Protocol):
    """How the runs take a step: one run alone, or a vectorised group."""

    runs: list[Run]  # in the order of the buffer's run axis
    progress: Progress  # what a person watching sees (one bar and progress line for all runs)
    width: int  # device values per run and step (the record, then the progress bar's values)
    device: torch.device

    def step(self, batches: tuple[Any, ...]) -> Tensor:
        """One step of every run on its batch: the values ``[runs, width]`` (or ``[width]`` for one run), on the
        device, detached (no host sync)."""
        ...

    def resumed(self, r: int) -> None:
        """Run ``r`` was loaded from its checkpoint: take its optimizer state."""
        ...

    def leave(self, r: int) -> None:
        """Run ``r`` stopped: its weights are no longer updated."""
        ...

    def export(self, r: int) -> None:
        """Before run ``r``'s checkpoint: its optimizer state into the torch optimizer the checkpoint saves."""
        ...

    def fields(self, fields: list[dict[str, Any]], live: int) -> dict[str, Any]:
        """The progress bar's fields from the runs' fields (``live``: the runs still training)."""
        ...


def log_interruption(event: dict[str, Any], progress: Progress, where: str) -> None:
    """The job log's line for a stop signal handled: what came, at which step, where the checkpoint is."""
    of = f"/{progress.total}" if progress.total else ""
    LOG.info(f"mibench: {progress.desc}: {event['signal']} ({event['kind']}) at step {event['step']}{of}: "
             f"checkpoint written {where}; handing the signal on")


class Driver:
    """Trains the runs of ``stepper`` from their checkpoints (or afresh) to their end (module docstring)."""

    def __init__(self, stepper: Stepper):
        self.stepper, self.runs, self.progress = stepper, stepper.runs, stepper.progress
        self.live = list(range(len(self.runs)))  # the runs still training
        self.seg_first = [0] * len(self.runs)  # each run's first host block of the segment in progress
        self.checkpoints = any(run.checkpoint for run in self.runs)
        self.beating = any(run.on_beat is not None for run in self.runs)
        self.beat_due = 0.0  # time.monotonic() of the next heartbeat inside a segment
        self.t = self.lo = 0  # steps done; the first step of the block being filled
        self.buf = torch.zeros(0)

    def run(self, resumes: Sequence[Path | None]) -> None:
        """Train every run (``resumes``: each run's checkpoint, or None) through its segments."""
        ats = self.begin(resumes)
        start = self.runs[0].fit.segment
        with self.interrupts() as stop:
            streams = [run.task.segments(start) for run in self.runs]
            for index, segments in enumerate(zip(*streams), start=start):
                t0 = time.perf_counter()
                self.train_segment(self.enter(segments, ats), index, t0, stop)
                ats = [Resume()] * len(self.runs)
                if not self.end_segment(index, t0, stop):
                    break
            if self.checkpoints and stop.signum is not None and self.live:  # flagged after the last step
                self.interrupt(stop, 0)
            self.progress.close()
        for run in self.runs:
            run.modules().eval()

    def begin(self, resumes: Sequence[Path | None]) -> list[Resume]:
        """Each run from its checkpoint or afresh; the buffer, holding a checkpoint's unflushed rows."""
        ats = [run.begin(resume) for run, resume in zip(self.runs, resumes)]
        for r, resume in enumerate(resumes):
            if resume is not None:
                self.stepper.resumed(r)
        starts = {(run.fit.t, at.offset) for run, at in zip(self.runs, ats)}
        if len(starts) != 1:
            raise ValueError(f"a group's runs must start at the same step (got {sorted(starts)})")
        for run in self.runs:
            run.modules().train()
        self.t = self.runs[0].fit.t
        self.progress.resume_at(self.t)
        block = max(1, self.runs[0].task.block)
        self.buf = torch.zeros(block, len(self.runs), self.stepper.width, device=self.stepper.device)
        for r, at in enumerate(ats):
            if len(at.pending):  # (a segment-end checkpoint has none)
                self.buf[: len(at.pending), r] = at.pending.to(self.stepper.device)
        self.lo = self.t - len(ats[0].pending)
        return ats

    def interrupts(self) -> Interrupts:
        """Checkpoint deadlines inside a segment (the soonest wall-clock interval of the runs) and, in a SLURM job
        whose runs checkpoint, the stop signals."""
        every = min((run.checkpoint_every_s for run in self.runs if run.checkpoint and run.checkpoint_every_s),
                    default=None)
        return Interrupts(every if self.checkpoints else None, lead_s=cluster.signal_lead_s(),
                          install=None if self.checkpoints else False)

    def enter(self, segments: tuple[Iterable[Any], ...], ats: list[Resume]) -> Iterator[tuple[Any, ...]]:
        """The segment's batches (one per run and step), past those trained before the checkpoint it resumes from."""
        offset = ats[0].offset
        its = [iter(s) for s in segments]
        for r, (run, it) in enumerate(zip(self.runs, its)):
            self.seg_first[r] = ats[r].seg_first if offset else len(run.fit.rows)
            run.seg_start = self.t - offset
            for _ in itertools.islice(it, offset):
                pass
        if offset:
            ats[0].restore_rng()  # (iterating may draw from the global generator, e.g. a DataLoader's seed)
        return zip(*its)

    def train_segment(self, batches: Iterator[tuple[Any, ...]], index: int, t0: float, stop: Interrupts) -> None:
        """Step through a segment: one host copy per block; between block ends only clock reads (no host sync)."""
        for batch in batches:
            self.buf[self.t - self.lo] = self.stepper.step(batch)
            self.t += 1
            for r in self.live:  # (a task's batches may read where training stands: max_steps)
                self.runs[r].fit.t = self.t
            if self.t - self.lo == len(self.buf):
                self.flush(index, t0)
                if not self.live:
                    break
            elif self.progress.due():  # between block ends: the rows so far (at most every TICK_S)
                self.peek()
            self.beat_if_due()
            if self.checkpoints and stop.due(self.t):  # mid-segment: the wall clock, or the cluster stops the job
                self.interrupt(stop, self.t - self.lo)
        if self.t > self.lo:
            self.flush(index, t0)

    def host(self) -> np.ndarray:
        """The rows of the block so far on the host ``[steps, runs, width]``: the one device-to-host copy."""
        return self.buf[: self.t - self.lo].cpu().numpy().astype(np.float64)

    def flush(self, index: int, t0: float) -> None:
        """Each live run records the block's rows; a run that stopped there leaves; the bar moves."""
        lo, hi, host = self.lo, self.t, self.host()
        wanted, fields = self.progress.wanted(), []
        for r in list(self.live):
            run = self.runs[r]
            run.take(host[:, r], lo, hi)
            if wanted:  # this run's fields from the rows it just recorded
                fields.append(run.block_fields())
            if run.fit.stopped:
                self.leave(r, index, t0)
        if wanted:
            self.progress.show(hi, self.stepper.fields(fields, len(self.live)))
        self.lo = hi

    def leave(self, r: int, index: int, t0: float) -> None:
        """Run ``r`` stopped (diverged, or done: early stopping): it ends its segment as it would alone, and its
        weights stay where they are while the others train on."""
        self.live.remove(r)
        self.stepper.leave(r)
        self.runs[r].end_segment(index, self.seg_first[r], t0)

    def peek(self) -> None:
        """The bar and the progress line between block ends, from the rows of the block so far (one copy, when
        :meth:`Progress.due`: never per step)."""
        host = self.host()
        fields = [self.runs[r].peek_fields(host[:, r], self.lo, self.t) for r in self.live]
        self.progress.show(self.t, self.stepper.fields(fields, len(self.live)))

    def beat_if_due(self) -> None:
        """Every live run's heartbeat, at the first step boundary ``HEARTBEAT_S`` after the last (a clock read)."""
        if self.beating and time.monotonic() >= self.beat_due:
            for r in self.live:
                self.runs[r].beat(self.t, self.runs[r].fit.segment + 1)
            self.beat_due = time.monotonic() + HEARTBEAT_S

    def end_segment(self, index: int, t0: float, stop: Interrupts) -> bool:
        """Each live run's segment end (its summary and heartbeat) and checkpoint; False when no run is left."""
        for r in self.live:
            self.runs[r].end_segment(index, self.seg_first[r], t0)
        self.beat_due = time.monotonic() + HEARTBEAT_S  # (each run just beat)
        if not self.live:
            return False
        if self.checkpoints:
            self.save(None)
            stop.saved()
            fault_injection(index + 1)
        return True

    def save(self, pending: Tensor | None) -> None:
        """Each live run's checkpoint (``pending``: the block's unflushed rows ``[steps, runs, width]``, inside a
        segment)."""
        for r in self.live:
            run = self.runs[r]
            if run.checkpoint:
                self.stepper.export(r)
                run.save_checkpoint(None if pending is None else pending[:, r])

    def interrupt(self, stop: Interrupts, n: int) -> None:
        """Checkpoint inside a segment, with the ``n`` unflushed rows of the block; on a stop signal also record the
        interruption (in the checkpoints and through each run's ``on_interrupt``) and hand the signal on."""
        event = stop.event(self.t) if stop.signum is not None else None
        if event is not None:
            for r in self.live:
                if self.runs[r].checkpoint:
                    self.runs[r].fit.interruptions.append(event)
        self.save(self.buf[:n])
        stop.saved()
        fault_injection_step(self.t)
        if event is not None:
            for r in self.live:
                if self.runs[r].on_interrupt is not None:
                    self.runs[r].on_interrupt(list(self.runs[r].fit.interruptions))
            self.progress.close()
            where = f"-> {self.runs[0].out_dir / CHECKPOINT}" if len(self.runs) == 1 else "in each run's directory"
            log_interruption(event, self.progress, where)
            stop.forward()


__all__ = ["Driver", "Fit", "Run", "Stepper", "log_interruption"]
