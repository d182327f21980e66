"""What a job hands to the launcher that runs it, in the same process: a typed value both import.

``Prepared`` is a run validated and about to train (the vectorised launcher prepares every job of a sweep, then
trains them in groups); ``LAST_RECORD`` is the record of this process's last finished run (the sweep's one line
per job, written by the progress callback). Standard library only: the Hydra plug-ins import it on every start.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

LAST_RECORD: dict[str, Any] = {}  # the record of this process's last finished run (a sweep's per-job line)


def hand_over(record: dict[str, Any]) -> None:
    """``record`` becomes this process's last record."""
    LAST_RECORD.clear()
    LAST_RECORD.update(record)


@dataclass
class Prepared:
    """A run about to train: its config, directory, checkpoint to resume from and started record."""

    cfg: "DictConfig"
    out: Path
    resume_from: Path | None
    record: dict[str, Any]
    t0: float
    echo: bool = True
    carried: list[dict[str, Any]] = field(default_factory=list)  # interruptions of the attempts before this one
