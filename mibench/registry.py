"""The registries, complete whenever they are read: every built-in benchmark, estimator and critic, and what
each installed plug-in registers (mibench.plugins).

Read them from here (``from mibench.registry import TASKS``): importing this module imports every benchmark
module and every plug-in, so no reader depends on another module having imported them first.
"""
from __future__ import annotations

from . import benchmarks as _benchmarks  # noqa: F401 -- registers every built-in benchmark (one module each)
from . import plugins
from .critics import REGISTRY as CRITICS
from .engine.task import TASKS, Task
from .estimators import REGISTRY as ESTIMATORS

plugins.load()  # installed plug-ins register their estimators and benchmarks

__all__ = ["CRITICS", "ESTIMATORS", "TASKS", "Task"]
