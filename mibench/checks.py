"""Validation helpers: :class:`ConfigError` and one-line checks of config values.

Imports nothing from the benchmarks (they import this), so validation never forms an import cycle.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, ContextManager

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

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
    from .critics import REGISTRY, build_critic

    crit = cfg.critic
    if crit.name not in REGISTRY:
        raise ConfigError(f"unknown critic {crit.name!r} (valid: {', '.join(sorted(REGISTRY))})")
    rules = {"hidden": WIDTHS, "layers": Maybe(Int(0, MAX_LAYERS), "null with a list of widths"), "embed": Int(1)}
    check_rules(cfg, {"critic": rules}, present=True)
    params = as_dict(crit)
    sizes = ", ".join(f"critic.{k}={params[k]}" for k in rules if k in params)
    check_size(lambda: build_critic(params, dim_x, dim_y),
               f"critic={crit.name} ({sizes}) on inputs of dimension {dim_x} and {dim_y}{f' ({inputs})' if inputs else ''}",
               "a smaller critic.hidden, critic.layers or critic.embed",
               key=("critic", frozen(params), dim_x, dim_y, inputs))


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 when unknown)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


_BUILT: dict[Any, tuple[int, Any] | str] = {}  # check_size's answers by key: (parameters, network) or the error


def check_size(build: Any, what: str, smaller: str, key: Any = None) -> Any:
    """Build a network with ``build()`` on the meta device (shapes only: no memory, no initial values, no draw
    from any generator) and raise one line when it cannot be built or its training (fp32 weights, gradients
    and Adam's two moments: 16 bytes a parameter) needs more memory than this machine has; return that
    meta-device network. ``what`` names it and its sizes; ``smaller`` says what to make smaller. ``key``
    (hashable: everything ``build`` depends on) reuses an earlier answer: a sweep's jobs, and a fuzz's cases,
    mostly share their networks."""
    import torch

    got = _BUILT.get(key) if key is not None else None
    if got is None:
        try:
            with torch.device("meta"):
                net = build()
            got = (sum(p.numel() for p in net.parameters()), net)
        except (ValueError, TypeError) as e:
            got = str(e).splitlines()[0]
        except (MemoryError, OverflowError, RuntimeError) as e:  # a size no allocator, shape or list can hold
            got = f"{what} cannot be built: {(str(e).splitlines() or [type(e).__name__])[0]} (valid: {smaller})"
        if key is not None:
            if len(_BUILT) > 4096:
                _BUILT.clear()
            _BUILT[key] = got
    if isinstance(got, str):
        raise ConfigError(got)
    n, net = got
    need, have = 16 * n, physical_memory()
    if have and need > have:
        raise ConfigError(f"{what} has {n:.3g} parameters: training it needs about {need / 2**30:,.0f} GiB, more "
                          f"than this machine's {have / 2**30:,.0f} GiB (valid: {smaller})")
    return net


def frozen(params: Any) -> str:
    """``params`` (plain data) as a hashable key: its JSON with sorted keys."""
    import json

    return json.dumps(params, sort_keys=True, default=repr)


# ---------------------------------------------------------------------------------------------
# declarative rules: a task lists its keys and what each may hold (Task.schema); one loop checks them


class Plain(dict):
    """A config as plain, resolved data: a dict whose keys also read as attributes (``cfg.dataset.batch_size``),
    so the same checks read it and a DictConfig. Validation runs on it: reading it costs a dict lookup, not an
    OmegaConf node access and an interpolation parse, and checking it cannot change the config it came from."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def plain(cfg: Any) -> Any:
    """``cfg`` (a DictConfig or ListConfig, or plain data) as :class:`Plain` data, interpolations resolved; an
    interpolation that cannot be resolved here (``${hydra:...}`` outside a Hydra job) is kept as its text.
    Always a new copy, also of plain data."""
    if isinstance(cfg, DictConfig):
        out = Plain()
        for key in cfg.keys():
            try:
                value = cfg[key]
            except Exception:  # noqa: BLE001 -- an unresolvable interpolation: its text, as the user wrote it
                value = cfg._get_node(key)._value()
            out[key] = plain(value)
        return out
    if isinstance(cfg, (ListConfig, list, tuple)):
        return [plain(v) for v in cfg]
    if isinstance(cfg, dict):
        return Plain({k: plain(v) for k, v in cfg.items()})
    return cfg


def as_dict(node: Any) -> Any:
    """A config node as ordinary dicts and lists, resolved (what builders take): a DictConfig or :class:`Plain`."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return {k: as_dict(v) for k, v in node.items()}
    if isinstance(node, list):
        return [as_dict(v) for v in node]
    return node


def writable(node: Any) -> ContextManager:
    """Where a key may be added to ``node``: ``open_dict`` for a DictConfig, nothing for plain data."""
    return open_dict(node) if isinstance(node, DictConfig) else nullcontext()


def select(cfg: Any, path: str) -> Any:
    """``cfg``'s node at the dotted ``path`` (None when absent): a DictConfig or :class:`Plain`."""
    node = cfg
    for part in path.split("."):
        if node is None or not hasattr(node, "get"):
            return None
        node = node.get(part)
    return node


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
    """One of ``options`` (strings: a number or a bool is none of them)."""

    def __init__(self, *options: str, text: str | None = None):
        self.options, self.text = options, text or ", ".join(options)

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.options


class Bool(Rule):
    def __init__(self, text: str = "true or false"):
        self.text = text

    def ok(self, v: Any) -> bool:
        return isinstance(v, bool)


class Maybe(Rule):
    """null (``meaning`` says what it stands for), or a value passing ``rule``; ``text`` replaces the message's
    wording."""

    def __init__(self, rule: Rule, meaning: str = "null", text: str | None = None):
        self.rule, self.why = rule, getattr(rule, "why", "")
        self.text = text or f"{meaning if meaning.startswith('null') else 'null: ' + meaning}, or {rule.text}"

    def ok(self, v: Any) -> bool:
        return v is None or self.rule.ok(v)


class Numbers(Rule):
    """A non-empty list, each element passing ``each``."""

    def __init__(self, each: Rule, what: str = "values"):
        self.each, self.text = each, f"a non-empty list of {what} ({each.text})"

    def ok(self, v: Any) -> bool:
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
        node = select(cfg, group) if group else cfg
        for key, rule in rules.items():
            if present and (node is None or key not in node):
                continue
            v = node.get(key) if node is not None else None
            if not rule.ok(v):
                shown = list(v) if isinstance(v, ListConfig) else v
                why = getattr(rule, "why", "")
                raise ConfigError(f"{group + '.' if group else ''}{key}={shown} is invalid{why} (valid: {rule.text})")
