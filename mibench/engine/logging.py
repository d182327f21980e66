"""Metric loggers of the ``logger`` group: csv (csv/metrics.csv), wandb, none; and what a person watching a run
sees: the progress bar and the progress lines of the job log (:class:`Progress`)."""
from __future__ import annotations

import csv
import functools
import io
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ..log import LOG, bars_cleared_by, duration
from ..results import atomic_write_text


class Logger:
    """logger=none: logs nothing."""

    per_step = False  # also wants every step's record (W&B's per-step curves)

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_steps(self, block: np.ndarray, columns: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        pass


class CSVLogger(Logger):
    """``<out_dir>/csv/metrics.csv``: one row per logged call (step + the union of keys), rewritten atomically."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / "csv" / "metrics.csv"
        self.rows: list[dict[str, Any]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append({**metrics, "step": step})
        keys = sorted({k for r in self.rows for k in r} - {"step"}) + ["step"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


class WandbLogger(Logger):
    """Weights & Biases: per-segment metrics, every step's record (``step/<column>``), the config."""

    per_step = True

    def __init__(self, cfg: DictConfig, out_dir: Path):
        import wandb

        lg = cfg.logger
        self.run = wandb.init(project=lg.project, entity=lg.entity, tags=list(lg.tags), group=lg.group, mode=lg.mode,
                              dir=str(out_dir), config=OmegaConf.to_container(cfg, resolve=True))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_steps(self, block: np.ndarray, columns: Sequence[str]) -> None:
        names = list(columns)[1:]
        for row in block:
            self.run.log({f"step/{k}": float(v) for k, v in zip(names, row[1:])}, step=int(row[0]))


def make_logger(cfg: DictConfig, out_dir: Path | None) -> Logger:
    name = cfg.logger.name
    if name == "csv" and out_dir is not None:
        return CSVLogger(out_dir)
    if name == "wandb" and out_dir is not None:
        return WandbLogger(cfg, out_dir)
    return Logger()


def log_every_s(cfg: DictConfig) -> float | None:
    """``trainer.log_every_min`` in seconds (None or 0: no progress lines)."""
    every = cfg.trainer.get("log_every_min", None)
    return 60.0 * float(every) if every else None


def format_fields(fields: dict[str, Any]) -> dict[str, str]:
    """A task's progress fields as the bar shows them: floats to 3 decimals, the rest as given."""
    return {k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in fields.items()}


def join_fields(fields: dict[str, Any], sep: str = " ") -> str:
    """``level=3/5 true MI=6.000 est=3.912``."""
    return sep.join(f"{k}={v}" for k, v in format_fields(fields).items())


def describe(task: Any) -> str:
    """A progress bar's description: the benchmark and, when it uses one, the estimator (``staircase infonce``)."""
    cfg = getattr(task, "cfg", None)  # (DIM's probes are tasks without a config)
    uses = isinstance(cfg, DictConfig) and task.capabilities(cfg).uses_estimator  # (jigsaw's objective=ce: none)
    est = cfg.get("estimator") if uses else None
    return f"{task.name} {est.name}" if est is not None and est.get("name") else task.name


# What matters first, so that an 80-column terminal keeps the task's fields (tqdm cuts a line at the terminal's
# width) and the bar itself fills what is left: "staircase infonce 8000/20000 [00:51<01:43] level=3/5 true MI=6.000
# est=3.912 |██▌       |" (77 columns before the bar; tests/test_progress.py renders it at COLUMNS=80)
BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{fields} |{bar}|"
OPEN_FORMAT = "{desc} {n_fmt} steps [{elapsed}]{fields}"  # the number of steps is not known in advance
TICK_S = 1.0  # between block ends, the bar shows the steps done and the rows so far at most this often


class Progress:
    """What a person watching a run sees: a tqdm bar over its steps (``trainer.enable_progress_bar``; only
    when stderr is a terminal, so no carriage returns reach a log) and, every ``log_every_s`` seconds, a
    progress line through :data:`mibench.log.LOG` (the job log and app.log), both with the task's fields
    (:meth:`mibench.engine.task.Task.progress`).

    The engine calls :meth:`due` after every step (a clock read: no host sync) and :meth:`show` at each
    block end and, when due, with the rows of the block so far: the bar moves every :data:`TICK_S`
    whatever the block's length, with the fields of the steps in progress (the level being trained)."""

    def __init__(self, enabled: bool, total: int | None, desc: str, log_every_s: float | None = None):
        self.total, self.desc, self.fields = total, desc, {}
        self.bar = None
        if enabled and _is_terminal():
            self.bar = _bar_type()(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True,
                                   bar_format=BAR_FORMAT if total else OPEN_FORMAT)
        self.log_every_s = log_every_s if log_every_s and log_every_s > 0 else None
        self.t0 = time.monotonic()
        self.n0 = 0  # steps done when this process started (a resumed run's rate counts its own steps)
        self._next_bar = self.t0 + TICK_S if self.bar is not None else math.inf
        self._next_log = self.t0 + self.log_every_s if self.log_every_s else math.inf
        self._next = min(self._next_bar, self._next_log)

    @property
    def enabled(self) -> bool:
        """Whether a bar is shown."""
        return self.bar is not None

    def due(self) -> bool:
        """Whether the bar or a progress line is due (called after every step: a clock read, no host sync)."""
        return time.monotonic() >= self._next

    def wanted(self) -> bool:
        """Whether :meth:`show` would use fields now (callers compute them only then: nothing is spent when
        neither a bar nor a progress line is due)."""
        return self.bar is not None or time.monotonic() >= self._next_log

    def resume_at(self, n: int) -> None:
        """A resumed run starts at step ``n``."""
        self.n0 = n
        if self.bar is not None:
            self.bar.n = self.bar.last_print_n = self.bar.initial = n

    def show(self, n: int, fields: dict[str, Any] | None = None) -> None:
        """``n`` steps done, ``fields`` from the latest rows (None: as before): the bar, and a progress line
        when one is due."""
        if fields is not None:
            self.fields = fields
        now = time.monotonic()
        if self.bar is not None:
            self.bar.fields = f" {join_fields(self.fields)}" if self.fields else ""
            self.bar.update(n - self.bar.n)  # (drawn at most every tqdm's mininterval)
            if now >= self._next_bar:
                self.bar.refresh()
                self._next_bar = now + TICK_S
        if now >= self._next_log:
            LOG.info(self.line(n, now))
            self._next_log = now + self.log_every_s
        self._next = min(self._next_bar, self._next_log)

    def line(self, n: int, now: float) -> str:
        """``mibench: staircase infonce step 8000/20000 (40%) level=3/5, true MI=6.000, est=3.912; 00:51
        elapsed, ~01:43 left``."""
        elapsed = now - self.t0
        rate = (n - self.n0) / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total} ({100 * n / self.total:.0f}%)" if self.total else ""
        left = f", ~{duration((self.total - n) / rate)} left" if self.total and rate > 0 else ""
        fields = f" {join_fields(self.fields, ', ')}" if self.fields else ""
        return f"mibench: {self.desc} step {n}{of}{fields}; {duration(elapsed)} elapsed{left}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the last block's fields, which tqdm's rate limit may not have drawn yet
            self.bar.close()


@functools.cache
def _bar_type() -> type:
    """tqdm with ``{fields}`` in its bar format (set_postfix would put ", " before them), as wide as the terminal
    or, when set, ``$COLUMNS`` (as Python's shutil.get_terminal_size)."""
    from tqdm import tqdm

    bars_cleared_by(tqdm.external_write_mode)

    class Bar(tqdm):
        fields = ""

        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            cols = os.environ.get("COLUMNS", "")
            return {**d, "fields": self.fields, "ncols": int(cols) - 1 if cols.isdigit() else d["ncols"]}

    return Bar


def _is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
