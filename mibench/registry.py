"""The registries, complete whenever they are read: every built-in benchmark, dataset, estimator and critic,
and what each installed plug-in registers (mibench.plugins).

Read them from here (``from mibench.registry import TASKS``): importing this module imports every benchmark
module, every dataset module and every plug-in, so no reader depends on another module having imported them
first.
"""
from __future__ import annotations

import importlib
import pkgutil

from . import benchmarks as _benchmarks  # noqa: F401 -- registers every built-in benchmark (one module each)
from . import data as _data
from . import plugins
from .critics import REGISTRY as CRITICS
from .data.dataset import DATASETS, Dataset, providing
from .engine.task import TASKS, Task
from .estimators import REGISTRY as ESTIMATORS

for _mod in sorted(m.name for m in pkgutil.iter_modules(_data.__path__)):  # each dataset module registers its own
    importlib.import_module(f"{_data.__name__}.{_mod}")
plugins.load()  # installed plug-ins register their estimators, benchmarks and datasets

__all__ = ["CRITICS", "DATASETS", "Dataset", "ESTIMATORS", "TASKS", "Task", "providing"]
