"""The typed outcome of a run (what result.json, the CLI and the leaderboard read)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

STATUSES = ("completed", "diverged", "skipped")


@dataclass
class RunResult:
    """status: ``completed``, ``diverged`` (a result: the bound went non-finite or left its valid range,
    ``diverged_reason`` says how) or ``skipped``
    (an identical config already ran: ``out_dir`` points at it).

    generated_data: None on the benchmark's real data; else, in words, what was generated in its place
    (result.json's ``generated_data``; every table and figure labels the run GENERATED)

    summary:   the task's summary table (staircase: per level; written as summary.csv by the task)
    steps:     the per-step record (steps.csv)
    metrics:   scalar outcomes stored in result.json
    objective: what a Hydra sweeper would minimise
    """

    status: str = "completed"
    out_dir: Path | None = None
    steps_done: int = 0
    diverged_step: int | None = None
    diverged_reason: str | None = None  # one line: what left which range at which step
    generated_data: str | None = None  # what was GENERATED (a stand-in) about the data (Task.generated_data)
    summary: pd.DataFrame | None = None
    steps: pd.DataFrame | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    text: str = ""
    objective: float | None = None
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific tables (probes, history, ...)

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    # Deprecated: dict-style access of the pre-engine ``run()`` return value (result["steps"], ...).
    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default
