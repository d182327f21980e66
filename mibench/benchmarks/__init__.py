"""Benchmarks: one :class:`~mibench.engine.Task` per ``benchmark=<name>`` choice, registered on import.

Adding a benchmark: a module here with a ``@register("name")`` Task subclass, imported below, and
``conf/benchmark/<name>.yaml``.
"""
from __future__ import annotations

from ..engine.task import TASKS, Task, register
from . import cifar, dim, eta_gaussian, onehot, optimal, staircase  # noqa: F401  (each module registers its tasks)

__all__ = ["TASKS", "Task", "register"]
