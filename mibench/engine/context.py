"""What a benchmark gets from the engine: a :class:`RunContext` (where the run computes and, while it trains,
where training stands), given to the benchmark when it is made (``Benchmark.ctx``). The engine records into the
context's :class:`Fit`; a task reads the context, never the engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from .backend import Backend


@dataclass
class Fit:
    """Where one run's training stands: steps done, segments done, host rows, divergence."""

    t: int = 0
    segment: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    diverged_step: int | None = None
    diverged_reason: str | None = None
    stopped: bool = False
    interruptions: list[dict[str, Any]] = field(default_factory=list)  # stop signals survived (time limit, preemption)
    fields: dict[str, Any] = field(default_factory=dict)  # the task's progress fields at the last segment end

    def table(self, columns: list[str], int_columns: tuple[str, ...] = ()) -> pd.DataFrame:
        """The host rows as a table (``step`` and ``int_columns`` as integers)."""
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, len(columns)))
        return pd.DataFrame(rows, columns=columns).astype({c: int for c in ("step", *int_columns)})


@dataclass
class RunContext:
    """What one run of a benchmark needs from the engine: the backend (device, rank, world size) and where its
    training stands (``fit``: written by the run's :class:`mibench.engine.loop.Engine`, read here as ``step``,
    ``segment`` and ``diverged_step``). The default is one CPU process that has not trained."""

    backend: Backend = field(default_factory=Backend)
    fit: Fit = field(default_factory=Fit)

    @property
    def device(self) -> torch.device:
        """Where the run's tensors and networks live."""
        return self.backend.device

    @property
    def rank(self) -> int:
        """This process's rank (0 without DDP)."""
        return self.backend.rank

    @property
    def world_size(self) -> int:
        """How many processes train the run (1 without DDP)."""
        return self.backend.world_size

    @property
    def is_global_zero(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.backend.is_global_zero

    @property
    def step(self) -> int:
        """Training steps done so far."""
        return self.fit.t

    @property
    def segment(self) -> int:
        """Segments (levels, epochs) done so far."""
        return self.fit.segment

    @property
    def diverged_step(self) -> int | None:
        """The step the run diverged at, or None."""
        return self.fit.diverged_step


__all__ = ["Fit", "RunContext"]
