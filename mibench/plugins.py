"""Estimators and benchmarks from other packages, without forking mibench.

A package declares an entry point in the group ``mibench.plugins`` that names a module::

    # pyproject.toml of the user's package
    [project.entry-points."mibench.plugins"]
    mybounds = "mybounds"

Importing that module registers what it brings (``REGISTRY["mybound"] = Spec(my_fn)`` for an
estimator, ``@register("mybench")`` for a benchmark), and a ``conf/`` folder next to the module
(``mybounds/conf/estimator/mybound.yaml`` ...) joins Hydra's search path, so
``python -m mibench estimator=mybound`` works like a built-in choice.
"""
from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "mibench.plugins"
_loaded: set[str] = set()


def modules() -> list[str]:
    """The plug-in modules installed (entry point values of the ``mibench.plugins`` group)."""
    return sorted({ep.value.split(":")[0] for ep in entry_points(group=GROUP)})


def conf_dirs() -> list[Path]:
    """The ``conf/`` folders of the installed plug-ins, found without importing them (cheap for --help)."""
    out = []
    for name in modules():
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            d = Path(spec.origin).parent / "conf"
            if d.is_dir():
                out.append(d)
    return out


def load() -> None:
    """Import every plug-in module once (each registers its estimators and benchmarks)."""
    for name in modules():
        if name not in _loaded:
            importlib.import_module(name)
            _loaded.add(name)


def searchpath_override(args: list[str]) -> list[str]:
    """``hydra.searchpath=[...]`` for the plug-ins' conf folders, unless the arguments set it already."""
    dirs = conf_dirs()
    if not dirs or any(a.lstrip("+").startswith("hydra.searchpath") for a in args):
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{d}" for d in dirs) + "]"]
