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


def check_dir(path: Any, name: str) -> None:
    """Raise one line unless ``path`` is a writable directory, or one can be made there (its first existing
    ancestor is a writable directory on a writable filesystem, not under /proc or /sys). ``name`` says
    where the path came from in the message (``runs_root=runs (MIBENCH_RUNS)``, ``out_dir=...``)."""
    import errno
    import os
    import stat
    from pathlib import Path

    valid = "(valid: a writable directory, or a path where one can be made)"
    p = Path(os.path.abspath(os.path.expanduser(str(path))))
    top = Path(os.path.realpath(p)).parts[1:2]
    if top in (("proc",), ("sys",)):
        raise ConfigError(f"{name} is under /{top[0]}, a kernel filesystem where no run can write {valid}")
    here = p
    while True:
        try:
            mode = here.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):
            here = here.parent
        except OSError as e:
            why = "a symlink loop" if e.errno == errno.ELOOP else e.strerror
            raise ConfigError(f"{name} cannot be used: {here} is {why} {valid}") from None
    kind = "a file" if stat.S_ISREG(mode) else "a directory" if stat.S_ISDIR(mode) else "a special file"
    where = f"{name} is" if here == p else f"{name} cannot be made: {here} is"
    if not stat.S_ISDIR(mode):
        raise ConfigError(f"{where} {kind}, not a directory {valid}")
    if os.statvfs(here).f_flag & os.ST_RDONLY:
        raise ConfigError(f"{where} on a read-only filesystem {valid}")
    if not os.access(here, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} not writable for this user {valid}")


def check_runs_root(root: Any) -> None:
    """``runs_root`` (``MIBENCH_RUNS``) must be a writable directory or creatable: checked before any work."""
    import os

    env = " (MIBENCH_RUNS)" if os.environ.get("MIBENCH_RUNS") == str(root) else ""
    check_dir(root, f"runs_root={root}{env}")


MAX_LAYERS = 1000  # an MLP deeper than this is a typo (building even its empty shell would take minutes)


def check_critic(cfg: Any, dim_x: int, dim_y: int, inputs: str = "") -> None:
    """Check the critic group's values and build it once for inputs of the given sizes (``inputs``: the keys
    that set them, for the message), on the meta device: no memory, and a size beyond this machine's is one line."""
    from omegaconf import OmegaConf

    from .critics import REGISTRY, build_critic

    crit = cfg.critic
    if crit.name not in REGISTRY:
        raise ConfigError(f"unknown critic {crit.name!r} (valid: {', '.join(sorted(REGISTRY))})")
    rules = {"hidden": WIDTHS, "layers": Maybe(Int(0, MAX_LAYERS), "null with a list of widths"), "embed": Int(1)}
    check_rules(cfg, {"critic": rules}, present=True)
    params = OmegaConf.to_container(crit, resolve=True)
    sizes = ", ".join(f"critic.{k}={params[k]}" for k in rules if k in params)
    check_size(lambda: build_critic(params, dim_x, dim_y),
               f"critic={crit.name} ({sizes}) on inputs of dimension {dim_x} and {dim_y}{f' ({inputs})' if inputs else ''}",
               "a smaller critic.hidden, critic.layers or critic.embed")


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when unknown)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_size(build: Any, what: str, smaller: str) -> Any:
    """Build a network with ``build()`` on the meta device (shapes only, no memory) and raise one line when it
    cannot be built or its training (fp32 weights, gradients and Adam's two moments: 16 bytes a parameter) needs
    more memory than this machine has. ``what`` names it and its sizes; ``smaller`` says what to make smaller."""
    import torch

    try:
        with torch.device("meta"):
            net = build()
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    except (MemoryError, OverflowError, RuntimeError) as e:  # a size no allocator, shape or list can hold
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{what} cannot be built: {why} (valid: {smaller})") from None
    n = sum(p.numel() for p in net.parameters())
    need, have = 16 * n, physical_memory()
    if have and need > have:
        raise ConfigError(f"{what} has {n:.3g} parameters: training it needs about {need / 2**30:,.0f} GiB, more than "
                          f"this machine's {have / 2**30:,.0f} GiB (valid: {smaller})")
    return net


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


class Maybe(Rule):
    """null (``meaning`` says what it stands for), or a value passing ``rule``."""

    def __init__(self, rule: Rule, meaning: str = "null"):
        self.rule, self.why = rule, getattr(rule, "why", "")
        self.text = f"{meaning if meaning.startswith('null') else 'null: ' + meaning}, or {rule.text}"

    def ok(self, v: Any) -> bool:
        return v is None or self.rule.ok(v)


class Numbers(Rule):
    """A non-empty list, each element passing ``each``."""

    def __init__(self, each: Rule, what: str = "values"):
        self.each, self.text = each, f"a non-empty list of {what} ({each.text})"

    def ok(self, v: Any) -> bool:
        from omegaconf import ListConfig

        return isinstance(v, (list, tuple, ListConfig)) and len(v) > 0 and all(self.each.ok(x) for x in v)


class OneOf(Rule):
    """A value passing any of ``rules``."""

    def __init__(self, *rules: Rule, text: str | None = None):
        self.rules, self.text = rules, text or ", or ".join(r.text for r in rules)

    def ok(self, v: Any) -> bool:
        return any(r.ok(v) for r in self.rules)


class Name(Rule):
    """A name: a non-empty string, or a number that Hydra parsed from one (a CSV column ``0``)."""

    text = "a name"

    def ok(self, v: Any) -> bool:
        return (isinstance(v, str) and v != "") or (isinstance(v, int) and not isinstance(v, bool))


POSITIVE = Number(0.0, lo_open=True, text="a positive number")
LEARNING_RATE = Number(0.0, lo_open=True, text="a positive learning rate")
WIDTHS = OneOf(Int(1), Numbers(Int(1), "widths"), text="an integer >= 1, or a non-empty list of them")


def check_rules(cfg: Any, schema: dict[str, dict[str, Rule]], present: bool = False) -> None:
    """Check ``cfg.<group>.<key>`` against ``schema[group][key]`` for every listed key (raises one line);
    ``present``: only the keys the config has (a group whose options have different keys)."""
    for group, rules in schema.items():
        from omegaconf import OmegaConf

        node = OmegaConf.select(cfg, group) if group else cfg
        for key, rule in rules.items():
            if present and (node is None or key not in node):
                continue
            v = node.get(key) if node is not None else None
            if not rule.ok(v):
                from omegaconf import ListConfig

                shown = list(v) if isinstance(v, ListConfig) else v
                why = getattr(rule, "why", "")
                raise ConfigError(f"{group + '.' if group else ''}{key}={shown} is invalid{why} (valid: {rule.text})")
