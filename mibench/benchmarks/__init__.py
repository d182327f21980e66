"""Benchmarks: one :class:`~mibench.engine.Task` per ``benchmark=<name>`` choice, registered on import.

Adding a benchmark: a module in this package with a ``@register("name")`` Task subclass, and
``conf/benchmark/<name>.yaml``. Every module here is imported below, so nothing else changes.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..engine.task import TASKS, Task, register

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_mod}")

__all__ = ["TASKS", "Task", "register"]
