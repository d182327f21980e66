"""Compose a mibench config from Python (tests, notebooks, bench scripts) as the CLI would."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
_initialized_here: list = [None]  # the global Hydra this module initialised (with CONF_DIR): reused, YAMLs cached


def compose_config(overrides: Sequence[str] = (), out_dir: str | Path | None = None) -> DictConfig:
    """The config ``python -m mibench <overrides>`` would run, with ``out_dir`` set (no Hydra run dir)."""
    from .cli import implied

    from .plugins import searchpath_override

    overrides = implied(list(overrides)) + searchpath_override(list(overrides))
    gh = GlobalHydra.instance()
    if gh.is_initialized() and gh.hydra is _initialized_here[0]:
        cfg = compose(config_name="config", overrides=list(overrides))  # Hydra's YAML cache is kept between calls
    else:
        GlobalHydra.instance().clear()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3")
        _initialized_here[0] = GlobalHydra.instance().hydra
        cfg = compose(config_name="config", overrides=list(overrides))
    with open_dict(cfg):
        cfg.out_dir = str(out_dir) if out_dir is not None else None
    return cfg
