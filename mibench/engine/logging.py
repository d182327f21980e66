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


class Progress:
    """A tqdm bar over the run's steps (``trainer.enable_progress_bar``), advanced once per block."""

    def __init__(self, enabled: bool, total: int | None, desc: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)

    def update(self, n: int, **postfix: float | int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix({k: f"{v:.3f}" if isinstance(v, float) else v for k, v in postfix.items()},
                                     refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
