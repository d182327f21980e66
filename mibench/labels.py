"""What names a run in its directory, its record and every table: the estimator and critic it used (none where
its benchmark uses none) and the label beside its seed, from the benchmarks' Task declarations. Above
:mod:`mibench.config` (it reads the complete task registry, plug-ins included); :mod:`mibench.records` below it
takes these names as given."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from .registry import TASKS


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The fields that name a run in tables: benchmark, dataset, estimator, critic, model, lambda, C*, seed.
    ``estimator`` / ``critic`` are null where the run uses none (:func:`roles`)."""
    est, used = cfg.estimator, roles(cfg)
    return {
        "benchmark": cfg.benchmark.name, "dataset": cfg.dataset.name, "estimator": used["estimator"],
        "critic": used["critic"], "model": cfg.get("model", {}).get("name", "none"),
        "lam": est.get("lam"), "c_star": est.get("c_star"), "seed": int(cfg.seed),
    }


def roles(cfg: DictConfig | dict) -> dict[str, str | None]:
    """What a run of ``cfg`` (a DictConfig, or a config.yaml as plain data) is named by, from its benchmark's Task
    capabilities (``uses_estimator``, ``uses_critic``, ``method``): ``estimator`` (None where the run
    uses no estimator: benchmark=optimal, sandwich, gradients; jigsaw's objective=ce; layerpair's supervised
    reference), ``critic`` (None where no network is built from the critic group: those and dim, dsprites,
    jigsaw, layerpair) and ``label``, its name beside the seed in the run directory (the estimator, else the
    analysis: ``sandwich``, ``ce``). A benchmark no installed plug-in registers keeps the configured names."""
    bench, est, critic = (_name(cfg, g) for g in ("benchmark", "estimator", "critic"))
    task = _task(bench)
    if task is None:
        return {"estimator": est, "critic": critic, "label": est or bench or "run"}
    caps = task.capabilities(cfg)
    return {"estimator": est if caps.uses_estimator else None, "critic": critic if caps.uses_critic else None,
            "label": (est if caps.uses_estimator else None) or caps.method}


def _name(cfg: DictConfig | dict, group: str) -> str | None:
    node = cfg.get(group) if hasattr(cfg, "get") else None
    name = node.get("name") if hasattr(node, "get") else None
    return None if name is None else str(name)


def _task(benchmark: str | None) -> Any:
    """The Task class registered as ``benchmark`` (mibench's own and the plug-ins'), or None."""
    if benchmark is None:
        return None
    return TASKS.get(benchmark)
