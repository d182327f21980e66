"""Compose a mibench config from Python (tests, notebooks, bench scripts) as the CLI would."""
from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from .overrides import CONF_DIR, implied

_initialized_here: list = [None]  # the global Hydra this module initialised (with CONF_DIR): reused, YAMLs cached


_PARSED: dict[tuple, Any] = {}  # (file, mtime, size) -> Hydra's ConfigResult of that YAML file, parsed once


@contextmanager
def parsed_once() -> Iterator[None]:
    """While composing many configs in one process (a sweep's preflight, the tests), each YAML file is parsed
    once (by path, mtime and size) and Hydra gets a deep copy: Hydra parses every file of the defaults list
    again for every compose, a third of a compose's time. Only under the Hydra release this was tested with
    (``FileConfigSource.load_config``'s contract); under another, composing is unchanged."""
    from hydra._internal.core_plugins.file_config_source import FileConfigSource
    from hydra.plugins.config_source import ConfigResult

    original = FileConfigSource.load_config
    if not hydra.__version__.startswith("1.3.") or getattr(original, "parsed_once", False):
        yield
        return

    def load_config(self: FileConfigSource, config_path: str) -> ConfigResult:
        full = os.path.realpath(os.path.join(self.path, self._normalize_file_name(config_path)))
        try:
            st = os.stat(full)
        except OSError:
            return original(self, config_path)  # Hydra's own error
        key = (full, st.st_mtime_ns, st.st_size, self.path, self.provider)
        if key not in _PARSED:
            _PARSED[key] = original(self, config_path)
        done = _PARSED[key]
        return ConfigResult(config=copy.deepcopy(done.config), path=done.path, provider=done.provider,
                            header=dict(done.header), is_schema_source=done.is_schema_source)

    load_config.parsed_once = True  # type: ignore[attr-defined]
    FileConfigSource.load_config = load_config  # type: ignore[method-assign]
    try:
        yield
    finally:
        FileConfigSource.load_config = original  # type: ignore[method-assign]


def compose_config(overrides: Sequence[str] = (), out_dir: str | Path | None = None, hydra: bool = False) -> DictConfig:
    """The config ``python -m mibench <overrides>`` would run, with ``out_dir`` set (no Hydra run dir);
    ``hydra``: with its ``hydra`` node (the launcher, ``hydra.runtime.choices``)."""
    from .plugins import searchpath_override

    overrides = implied(list(overrides)) + searchpath_override(list(overrides))
    gh = GlobalHydra.instance()
    if not (gh.is_initialized() and gh.hydra is _initialized_here[0]):
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
        _initialized_here[0] = GlobalHydra.instance().hydra
    with parsed_once():
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)
    with open_dict(cfg):
        cfg.out_dir = str(out_dir) if out_dir is not None else None
    return cfg


def override_key(override: str) -> str:
    """``estimator.clip`` of ``+estimator.clip=5`` / ``~estimator.clip`` / ``estimator.clip=5``."""
    return override.lstrip("+~").split("=", 1)[0]


def composition_error(e: BaseException, overrides: Sequence[str], recompose: Callable[[list[str]], Any]) -> str:
    """One line for a config that does not compose. Hydra's "Could not override 'K'." says neither why nor what
    would be valid: compose again without K (``recompose``: overrides -> config with its ``hydra`` node) and
    say which choice lacks the key, the keys it has and which choices of that group have it."""
    import re

    from omegaconf import OmegaConf

    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    first = lines[0] if lines else type(e).__name__
    m = re.match(r"Could not override '([^']+)'\.", first)
    if not m:
        return first
    key = m.group(1)
    given = [o for o in overrides if override_key(o) == key]
    shown = given[-1].lstrip("+") if given else key
    try:
        cfg = recompose([o for o in overrides if override_key(o) != key])
    except Exception:  # noqa: BLE001 -- another problem: Hydra's first line, then the cause
        return f"{first} ({str(e.__cause__).splitlines()[0] if e.__cause__ else 'no such key'})"
    parts = key.split(".")
    for depth in range(len(parts) - 1, -1, -1):  # the deepest existing mapping on the way to the key
        node = OmegaConf.select(cfg, ".".join(parts[:depth])) if depth else cfg
        if node is not None:
            break
    path, missing = ".".join(parts[:depth]), parts[depth]
    if not OmegaConf.is_dict(node):
        value = OmegaConf.to_container(node) if OmegaConf.is_config(node) else node
        return f"{shown}: {path} is {value!r}, which has no keys (valid: {path}=<value>)"
    choices = OmegaConf.select(cfg, "hydra.runtime.choices") or {}
    group = path.replace(".", "/")
    owner = f"{group}={choices[group]}" if group in choices and choices[group] else (path or "the config")
    keys = ", ".join(str(k) for k in node.keys() if k != "hydra") or "none"
    why = f"{shown}: {owner} has no key '{missing}' (its keys: {keys}"
    others = [c for c in _choices_with(group, missing) if c != choices.get(group)] if depth == len(parts) - 1 else []
    if others:
        why += f"; '{missing}' is a key of {group}={', '.join(others)}"
        if path == "estimator":
            from .estimators import RANGES

            if missing in RANGES:
                why += f": {RANGES[missing].text}"
    return why + ")"


def _choices_with(group: str, key: str) -> list[str]:
    """The options of config group ``group`` (conf/ and plug-ins' conf folders) whose YAML sets ``key``."""
    from .plugins import conf_dirs

    options = {f.stem for root in (CONF_DIR, *conf_dirs()) for f in (root / group).glob("*.yaml")}
    return sorted(o for o in options if key in (_option_node(group, o) or {}))


PRESET_GROUPS = ("experiment", "dataset", "benchmark", "hardware")  # options that choose or set other groups' values


def preset_notes(cfg: DictConfig, given: dict[str, str], keys: set[str]) -> list[str]:
    """Notes on presets the command line overrides implicitly, for the group options it names (``given``:
    group -> option) and the keys it sets (``keys``), from a config composed with its ``hydra`` node: an
    option that replaces the one a preset (experiment, dataset, benchmark, hardware) chooses, and a preset's
    values that still land on the option the command line named (``dataset=samples critic=onehot``: the
    benchmark's ``critic.hidden=[16, 8]`` over onehot's 64)."""
    from omegaconf import OmegaConf

    choices = OmegaConf.select(cfg, "hydra.runtime.choices") or {}
    presets = [(g, choices[g]) for g in PRESET_GROUPS if choices.get(g)]
    notes = []
    for group, option in given.items():
        own = _option_node(group, option)
        if own is None or group.startswith("hydra"):
            continue
        parts = []
        replaced = [f"{g}={c}'s {group}={theirs}" for g, c in presets if g != group
                    and (theirs := _preset_choice(g, c, group)) not in (None, option)]
        if replaced:
            parts.append(f"{group}={option} replaces {', '.join(replaced)} (the command line wins)")
        node = OmegaConf.select(cfg, group)
        for g, c in presets:
            if g == group:
                continue
            theirs = _option_node(g, c, under=group) or {}
            changed = [k for k in own if k in theirs and f"{group}.{k}" not in keys and k in node
                       and node[k] != own[k]]
            if changed:
                shown = lambda v: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v  # noqa: E731
                parts.append(f"{g}={c} sets {', '.join(f'{group}.{k}={shown(node[k])}' for k in changed)} over "
                             f"{group}={option}'s {', '.join(str(shown(own[k])) for k in changed)} (set "
                             f"{'them' if len(changed) > 1 else 'it'} on the command line to choose)")
        if parts:
            notes.append("; ".join(parts))
    return notes


def _option_file(group: str, option: str) -> Path | None:
    from .plugins import conf_dirs

    for root in (CONF_DIR, *conf_dirs()):
        if (root / group / f"{option}.yaml").is_file():
            return root / group / f"{option}.yaml"
    return None


def _option_node(group: str, option: str, under: str | None = None) -> Any:
    """conf/<group>/<option>.yaml's values for ``under`` (default: its own group), without its defaults list;
    None when it has none (a ``_global_`` file's values are placed by their own keys)."""
    from omegaconf import OmegaConf

    f = _option_file(group, option)
    if f is None:
        return None
    node = OmegaConf.load(f)
    is_global = any(ln.startswith("# @package _global_") for ln in f.read_text().splitlines())
    if is_global:
        return OmegaConf.select(node, (under or group).replace("/", "."))
    if under is not None and under != group:
        return None
    return OmegaConf.masked_copy(node, [k for k in node if k != "defaults"]) if "defaults" in node else node


def _preset_choice(group: str, option: str, other: str) -> str | None:
    """The option of group ``other`` that conf/<group>/<option>.yaml chooses (``override /other: X``), if any."""
    from omegaconf import OmegaConf

    f = _option_file(group, option)
    defaults = OmegaConf.load(f).get("defaults") if f is not None else None
    for entry in defaults or []:
        if OmegaConf.is_dict(entry):
            for k, v in entry.items():
                if str(k).replace("override", "").strip().lstrip("/") == other:
                    return str(v)
    return None
