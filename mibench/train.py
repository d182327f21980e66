"""Trainer and logger construction from the hardware / trainer / logger groups."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from omegaconf import DictConfig, OmegaConf


def quiet_lightning() -> None:
    """Silence Lightning's start-up banner (GPU available..., tips); warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning-internal notices that say nothing about the user's run
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*IterableDataset` has `__len__` defined.*")
    # mibench logs its own per-level / per-epoch metrics, not Lightning's every-n-steps ones
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")


def build_logger(cfg: DictConfig, out_dir: Path) -> Any:
    lg = cfg.logger
    if lg.name == "none":
        return False
    if lg.name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(out_dir), name="", version="csv")
    if lg.name == "wandb":
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(project=lg.project, entity=lg.entity, tags=list(lg.tags), group=lg.group,
                           mode=lg.mode, save_dir=str(out_dir), config=OmegaConf.to_container(cfg, resolve=True))
    raise ValueError(f"unknown logger {lg.name!r}")


def build_trainer(cfg: DictConfig, out_dir: Path, max_steps: int, **overrides: Any) -> L.Trainer:
    quiet_lightning()
    tr, hw = cfg.trainer, cfg.hardware
    callbacks = []
    if tr.enable_progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=int(tr.progress_refresh_rate)))
    kwargs: dict[str, Any] = dict(
        accelerator=hw.accelerator, devices=hw.devices, precision=hw.precision, strategy=hw.get("strategy", "auto"),
        max_steps=max_steps, max_epochs=tr.max_epochs, logger=build_logger(cfg, out_dir), callbacks=callbacks,
        enable_checkpointing=tr.enable_checkpointing, enable_model_summary=tr.enable_model_summary,
        enable_progress_bar=tr.enable_progress_bar, deterministic=tr.deterministic,
        default_root_dir=str(out_dir), num_sanity_val_steps=0, log_every_n_steps=max(1, max_steps),
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
