"""A run's checkpoint file: written atomically, read back with a one-line error for a file a run cannot resume
from, where a resumed segment stands (:class:`Resume`), and the crash points the resume tests inject."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checks import ConfigError
from ..results import first_line, publish

CHECKPOINT_VERSION = 2  # (version 2 files without seg_start / pending are segment-end checkpoints)


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
        """Put the global generators back where the checkpoint found them."""
        if self.rng_cpu is not None:
            torch.set_rng_state(self.rng_cpu)
        if torch.cuda.is_available() and self.rng_cuda is not None:
            torch.cuda.set_rng_state_all(self.rng_cuda)


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
