"""The engine under every benchmark: :func:`run_task` builds the task, trains it, evaluates it.

A benchmark is a :class:`Task` (it trains) or an :class:`Analysis` (it trains nothing), in
``mibench/benchmarks/<name>.py``, registered with :func:`register`; see ``docs/engine.md`` for the contract.
"""
from __future__ import annotations

from .backend import Backend, make_backend
from .logging import Logger, make_logger
from .context import Fit, RunContext
from .loop import CHECKPOINT, Engine, make_optimizer, seed_everything
from .result import RunResult
from .task import TASKS, Analysis, Benchmark, Capabilities, Optim, Scores, Step, Task, data_error, register
from .run import NoWorkError, conclude, cpu_threads, make_engine, run_task, setup_task, train_group

__all__ = ["Analysis", "Backend", "Benchmark", "CHECKPOINT", "Capabilities", "Logger", "make_logger", "cpu_threads", "Engine",
           "Fit", "NoWorkError", "Optim", "RunContext", "RunResult", "Scores", "Step", "TASKS", "Task",
           "conclude", "data_error", "make_backend", "make_engine", "make_optimizer", "register", "run_task",
           "seed_everything", "setup_task", "train_group"]
