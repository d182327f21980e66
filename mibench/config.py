"""Validation of a composed config: one clear line per problem, raised before any training."""
from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .critics import REGISTRY as CRITICS
from .estimators import REGISTRY as ESTIMATORS

LOGGERS = ("csv", "wandb", "none")


class ConfigError(ValueError):
    """A bad value in the config; the message is one line naming it and what would be valid."""


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def apply_overrides(cfg: DictConfig) -> list[str]:
    """Fold the top-level ``lambda`` / ``c_star`` into the estimator node. Returns notes for the user."""
    notes: list[str] = []
    spec = ESTIMATORS.get(cfg.estimator.name)
    for top, key in (("lambda", "lam"), ("c_star", "c_star")):
        value = cfg.get(top)
        if value is None:
            continue
        if not _num(value):
            raise ConfigError(f"{top}={value!r} is not a number (valid: a finite number{', >= 0' if top == 'lambda' else ''})")
        if top == "lambda" and value < 0:
            raise ConfigError(f"lambda={value} is negative (valid: lambda >= 0, e.g. 0.1, 0.01, 0.001)")
        if spec is not None and spec.regularized:
            with open_dict(cfg):
                cfg.estimator[key] = float(value)
        else:
            regs = ", ".join(n for n, s in ESTIMATORS.items() if s.regularized)
            notes.append(f"{top}={value} ignored: estimator={cfg.estimator.name} has no regularizer (regularized: {regs})")
    return notes


def validate(cfg: DictConfig, check_hardware: bool = True) -> list[str]:
    """Raise :class:`ConfigError` on the first bad value; return informational notes."""
    notes = apply_overrides(cfg)
    est = cfg.estimator
    if est.name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {est.name!r} (valid: {', '.join(sorted(ESTIMATORS))})")
    if "lam" in est and not (_num(est.lam) and est.lam >= 0):
        raise ConfigError(f"estimator.lam={est.lam} is invalid (valid: lambda >= 0, e.g. 0.1, 0.01, 0.001)")
    if est.get("clip") is not None and not (_num(est.clip) and est.clip > 0):
        raise ConfigError(f"estimator.clip={est.clip} is invalid (valid: a positive tau, or null for no clipping)")
    if "alpha" in est and not (_num(est.alpha) and 0 < est.alpha <= 1):
        raise ConfigError(f"estimator.alpha={est.alpha} is invalid (valid: 0 < alpha <= 1)")
    if "ema_rate" in est and not (_num(est.ema_rate) and 0 < est.ema_rate <= 1):
        raise ConfigError(f"estimator.ema_rate={est.ema_rate} is invalid (valid: 0 < ema_rate <= 1)")
    if est.get("eta_lr") is not None and not (_num(est.eta_lr) and est.eta_lr > 0):
        raise ConfigError(f"estimator.eta_lr={est.eta_lr} is invalid (valid: a positive learning rate)")

    from .benchmarks import BENCHMARKS

    bench = cfg.benchmark
    if bench.name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {bench.name!r} (valid: {', '.join(sorted(BENCHMARKS))})")
    allowed = list(bench.get("datasets") or [])
    if allowed and cfg.dataset.name not in allowed:
        raise ConfigError(f"dataset={cfg.dataset.name} does not fit benchmark={bench.name} (valid: {', '.join(allowed)})")
    if not ESTIMATORS[est.name].trainable and not bench.get("fixed_critic", False):
        raise ConfigError(f"estimator={est.name} needs the true critic and cannot be trained "
                          f"(valid: use it in benchmark=optimal, or pick a trainable estimator)")
    if "lr" in bench and not (_num(bench.lr) and bench.lr > 0):
        raise ConfigError(f"benchmark.lr={bench.lr} is invalid (valid: a positive learning rate)")
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed={cfg.seed!r} is invalid (valid: an integer)")
    if cfg.logger.name not in LOGGERS:
        raise ConfigError(f"unknown logger {cfg.logger.name!r} (valid: {', '.join(LOGGERS)})")
    if cfg.hardware.get("threads") is not None:
        check_int(cfg.hardware, "threads", 1, "hardware")
    if check_hardware and cfg.hardware.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"hardware={cfg.hardware.name} but no CUDA device is visible here "
                              f"(valid on this machine: hardware=cpu)")

    from .estimators import build_estimator

    try:  # unknown estimator parameters fail here, not mid-run
        build_estimator(OmegaConf.to_container(est, resolve=True), dim_y=int(cfg.dataset.get("dim", 2)))
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    BENCHMARKS[bench.name].validate(cfg)
    return notes


def validate_critic(cfg: DictConfig, dim_x: int, dim_y: int) -> None:
    """Check the critic group's values and build it once for inputs of the given sizes."""
    from .critics import build_critic

    crit = cfg.critic
    if crit.name not in CRITICS:
        raise ConfigError(f"unknown critic {crit.name!r} (valid: {', '.join(sorted(CRITICS))})")
    for key, lo in (("hidden", 1), ("layers", 0), ("embed", 1)):
        if key in crit and not (isinstance(crit[key], int) and crit[key] >= lo):
            raise ConfigError(f"critic.{key}={crit[key]} is invalid (valid: an integer >= {lo})")
    try:
        build_critic(OmegaConf.to_container(crit, resolve=True), dim_x, dim_y)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def check_int(node: DictConfig, key: str, lo: int, path: str, why: str = "") -> None:
    """Raise unless ``node[key]`` is an integer >= lo (``path`` names it in the message)."""
    v = node.get(key)
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
        raise ConfigError(f"{path}.{key}={v} is invalid{why} (valid: an integer >= {lo})")


def check_positive(node: DictConfig, key: str, path: str, what: str = "a positive number") -> None:
    v = node.get(key)
    if not (_num(v) and v > 0):
        raise ConfigError(f"{path}.{key}={v} is invalid (valid: {what})")
