"""Metric loggers of the ``logger`` group: csv (csv/metrics.csv), wandb, none; and the progress bar."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

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


def format_fields(fields: dict[str, Any]) -> dict[str, str]:
    """A task's progress fields as the bar shows them: floats to 3 decimals, the rest as given."""
    return {k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in fields.items()}


def describe(task: Any) -> str:
    """A progress bar's description: the benchmark and, when it uses one, the estimator (``staircase infonce``)."""
    cfg = getattr(task, "cfg", None)  # (DIM's probes are tasks without a config)
    est = cfg.get("estimator") if isinstance(cfg, DictConfig) and getattr(task, "uses_estimator", True) else None
    return f"{task.name} {est.name}" if est is not None and est.get("name") else task.name


# a short bar, so the task's fields fit a terminal line: "staircase infonce:  33%|█████▎          | 300/900 [00:51<01:43, level=1/3, ...]"
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar:16}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


class Progress:
    """A tqdm bar over the run's steps (``trainer.enable_progress_bar``), advanced once per block with the
    task's own fields (:meth:`mibench.engine.task.Task.progress`). Only on a terminal: when stderr is not
    a TTY (CI logs, redirected output) there is no bar at all, so no carriage returns reach the log."""

    def __init__(self, enabled: bool, total: int | None, desc: str):
        self.bar = None
        if enabled and _is_terminal():
            from tqdm import tqdm

            fmt = (BAR_FORMAT if total else "{desc}: {n_fmt} steps [{elapsed}{postfix}]")
            self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True, bar_format=fmt)

    @property
    def enabled(self) -> bool:
        """Whether a bar is shown (callers compute fields only then: nothing is spent when it is off)."""
        return self.bar is not None

    def update(self, n: int, fields: dict[str, Any] | None = None) -> None:
        if self.bar is not None:
            if fields:
                self.bar.set_postfix(format_fields(fields), refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.refresh()  # the last block's fields, which tqdm's rate limit may not have drawn yet
            self.bar.close()


def _is_terminal() -> bool:
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False
