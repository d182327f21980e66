"""Validation helpers: :class:`ConfigError` and one-line checks of config values.

Imports nothing from the benchmarks (they import this), so validation never forms an import cycle.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

SEED_MAX = 2**32 - 1  # NumPy's and Python's seeding accept 0 .. 2^32 - 1


class ConfigError(ValueError):
    """A bad value in the config; the message is one line naming it and what would be valid."""


def num(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_int(node: Any, key: str, lo: int, path: str, why: str = "", hi: int | None = None) -> None:
    """Raise unless ``node[key]`` is an integer in [lo, hi] (``path`` names it in the message)."""
    v = node.get(key)
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)):
        valid = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
        raise ConfigError(f"{path}.{key}={v} is invalid{why} (valid: {valid})")


def check_positive(node: Any, key: str, path: str, what: str = "a positive number") -> None:
    v = node.get(key)
    if not (num(v) and v > 0):
        raise ConfigError(f"{path}.{key}={v} is invalid (valid: {what})")


def check_choice(node: Any, key: str, path: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if node.get(key) not in choices:
        raise ConfigError(f"{path}.{key}={node.get(key)} is invalid (valid: {', '.join(choices)})")


def check_bool(node: Any, key: str, path: str) -> None:
    if not isinstance(node.get(key), bool):
        raise ConfigError(f"{path}.{key}={node.get(key)} is invalid (valid: true or false)")


def check_seed(seed: Any) -> None:
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX):
        raise ConfigError(f"seed={seed!r} is invalid (valid: an integer from 0 to {SEED_MAX})")


def check_critic(cfg: Any, dim_x: int, dim_y: int) -> None:
    """Check the critic group's values and build it once for inputs of the given sizes."""
    from omegaconf import OmegaConf

    from .critics import REGISTRY, build_critic

    crit = cfg.critic
    if crit.name not in REGISTRY:
        raise ConfigError(f"unknown critic {crit.name!r} (valid: {', '.join(sorted(REGISTRY))})")
    for key, lo in (("hidden", 1), ("layers", 0), ("embed", 1)):
        if key in crit and not (isinstance(crit[key], int) and crit[key] >= lo):
            raise ConfigError(f"critic.{key}={crit[key]} is invalid (valid: an integer >= {lo})")
    try:
        build_critic(OmegaConf.to_container(crit, resolve=True), dim_x, dim_y)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
