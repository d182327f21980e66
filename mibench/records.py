"""Run records: one ``result.json`` per run directory, its identity and outcome, written atomically.

A record's ``status`` is ``running`` from the moment the run starts, then ``completed``,
``diverged`` (a result: the bound went non-finite) or ``crashed`` (an exception, with its message).
A run killed from outside stays ``running`` with a ``pid`` and ``host``, which is how
aggregation and ``resume=true`` recognise it. The identity includes a hash of the resolved
config without the keys that cannot change a result (where it writes, logging, progress bars),
so identical configs are found again: re-running one is skipped unless ``overwrite=true``.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from .results import atomic_write_text

RECORD = "result.json"
# keys that do not change a run's numbers: left out of the config hash
_NOT_HASHED = ("out_dir", "runs_root", "overwrite", "resume", "logger", "hydra")
_NOT_HASHED_TRAINER = ("enable_progress_bar", "progress_refresh_rate", "enable_model_summary")


def config_hash(cfg: DictConfig | dict) -> str:
    """sha256 (first 16 hex digits) of the resolved config, without output/logging-only keys."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for k in _NOT_HASHED:
        c.pop(k, None)
    for k in _NOT_HASHED_TRAINER:
        (c.get("trainer") or {}).pop(k, None)
    blob = json.dumps(c, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The fields that name a run in tables: benchmark, dataset, estimator, critic, model, lambda, C*, seed."""
    est = cfg.estimator
    return {
        "benchmark": cfg.benchmark.name, "dataset": cfg.dataset.name, "estimator": est.name,
        "critic": cfg.critic.name, "model": cfg.get("model", {}).get("name", "none"),
        "lam": est.get("lam"), "c_star": est.get("c_star"), "seed": int(cfg.seed),
    }


def write_record(out_dir: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / RECORD, json.dumps(record, indent=2, default=_jsonable))


def _jsonable(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def start_record(cfg: DictConfig, out_dir: Path, commit: str | None) -> dict[str, Any]:
    rec = {"status": "running", **identity(cfg), "config_hash": config_hash(cfg), "git_commit": commit,
           "hardware": cfg.hardware.name, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "pid": os.getpid(), "host": socket.gethostname()}
    write_record(out_dir, rec)
    return rec


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's record, or None when there is none or it cannot be parsed (never half-written by us)."""
    p = Path(run_dir) / RECORD
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def iter_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """(run_dir, record) for every run directory below ``root``: a directory with a config.yaml or a
    result.json. A run that has a config but no readable record yields ``None``."""
    root = Path(root)
    if not root.exists():
        return
    seen: set[Path] = set()
    for p in sorted(root.rglob("config.yaml")):
        if p.parent.name == ".hydra":
            continue
        seen.add(p.parent)
        yield p.parent, read_record(p.parent)
    for p in sorted(root.rglob(RECORD)):
        if p.parent not in seen:
            yield p.parent, read_record(p.parent)


def find_same(root: str | Path, chash: str, exclude: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Runs under ``root`` with config hash ``chash`` (newest first by start time)."""
    hits = [(d, r) for d, r in iter_records(root)
            if r is not None and r.get("config_hash") == chash and (exclude is None or d.resolve() != exclude.resolve())]
    return sorted(hits, key=lambda dr: dr[1].get("started_at", ""), reverse=True)
