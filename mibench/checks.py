"""Validation helpers: :class:`ConfigError` and one-line checks of config values.

Imports nothing from the benchmarks (they import this), so validation never forms an import cycle.
"""
from __future__ import annotations

import math
from typing import Any

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


def check_seed(seed: Any) -> None:
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX):
        raise ConfigError(f"seed={seed!r} is invalid (valid: an integer from 0 to {SEED_MAX})")


def check_critic(cfg: Any, dim_x: int, dim_y: int) -> None:
    """Check the critic group's values and build it once for inputs of the given sizes."""
    from omegaconf import ListConfig, OmegaConf

    from .critics import REGISTRY, build_critic

    crit = cfg.critic
    if crit.name not in REGISTRY:
        raise ConfigError(f"unknown critic {crit.name!r} (valid: {', '.join(sorted(REGISTRY))})")
    for key, lo in (("hidden", 1), ("layers", 0), ("embed", 1)):
        v = crit.get(key)
        if key == "hidden" and isinstance(v, ListConfig):
            if len(v) and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v):
                continue
            raise ConfigError(f"critic.hidden={list(v)} is invalid (valid: an integer >= 1, or a non-empty list of them)")
        if key in crit and not (key == "layers" and v is None) and not (isinstance(v, int) and v >= lo):
            raise ConfigError(f"critic.{key}={v} is invalid (valid: an integer >= {lo})")
    try:
        build_critic(OmegaConf.to_container(crit, resolve=True), dim_x, dim_y)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None


# ---------------------------------------------------------------------------------------------
# declarative rules: a task lists its keys and what each may hold (Task.schema); one loop checks them


class Rule:
    """What a config value may hold; ``text`` says it in the error line."""

    text = "a valid value"

    def ok(self, v: Any) -> bool:
        raise NotImplementedError


class Int(Rule):
    def __init__(self, lo: int = 0, hi: int | None = None, why: str = "", minus_one: bool = False):
        self.lo, self.hi, self.why, self.minus_one = lo, hi, why, minus_one
        self.text = (f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}")
        if minus_one:
            self.text = f"-1 for no limit, or {self.text}"

    def ok(self, v: Any) -> bool:
        return (isinstance(v, int) and not isinstance(v, bool)
                and ((v >= self.lo and (self.hi is None or v <= self.hi)) or (self.minus_one and v == -1)))


class Number(Rule):
    def __init__(self, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False,
                 text: str | None = None):
        self.lo, self.hi, self.lo_open, self.hi_open = lo, hi, lo_open, hi_open
        self.text = text or (f"a number {'>' if lo_open else '>='} {lo:g}" if hi == math.inf else
                             f"{lo:g} {'<' if lo_open else '<='} x {'<' if hi_open else '<='} {hi:g}")

    def ok(self, v: Any) -> bool:
        return (num(v) and (v > self.lo if self.lo_open else v >= self.lo)
                and (v < self.hi if self.hi_open else v <= self.hi))


class Choice(Rule):
    def __init__(self, *options: str):
        self.options, self.text = options, ", ".join(options)

    def ok(self, v: Any) -> bool:
        return v in self.options


class Bool(Rule):
    text = "true or false"

    def ok(self, v: Any) -> bool:
        return isinstance(v, bool)


class Numbers(Rule):
    """A non-empty list, each element passing ``each``."""

    def __init__(self, each: Rule, what: str = "values"):
        self.each, self.text = each, f"a non-empty list of {what} ({each.text})"

    def ok(self, v: Any) -> bool:
        from omegaconf import ListConfig

        return isinstance(v, (list, tuple, ListConfig)) and len(v) > 0 and all(self.each.ok(x) for x in v)


POSITIVE = Number(0.0, lo_open=True, text="a positive number")
LEARNING_RATE = Number(0.0, lo_open=True, text="a positive learning rate")


def check_rules(cfg: Any, schema: dict[str, dict[str, Rule]]) -> None:
    """Check ``cfg.<group>.<key>`` against ``schema[group][key]`` for every listed key (raises one line)."""
    for group, rules in schema.items():
        from omegaconf import OmegaConf

        node = OmegaConf.select(cfg, group) if group else cfg
        for key, rule in rules.items():
            v = node.get(key) if node is not None else None
            if not rule.ok(v):
                from omegaconf import ListConfig

                shown = list(v) if isinstance(v, ListConfig) else v
                why = getattr(rule, "why", "")
                raise ConfigError(f"{group + '.' if group else ''}{key}={shown} is invalid{why} (valid: {rule.text})")
