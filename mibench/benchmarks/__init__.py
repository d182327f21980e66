"""Benchmarks: one module per ``benchmark=<name>`` choice, each registering a validator and a runner.

A runner ``run(cfg, out_dir) -> dict`` trains/evaluates and writes its own files under ``out_dir``;
it returns at least ``text`` (printed summary). Optional keys: ``summary`` (a DataFrame, stored in
result.json), ``metrics`` (a dict of scalar outcomes stored in result.json), ``diverged_step``,
``steps_done`` and ``objective`` (the number a Hydra sweeper would minimise). A resumable
benchmark's runner also takes ``resume`` (a checkpoint path, or None).
A validator ``validate(cfg) -> None`` raises :class:`mibench.config.ConfigError` with one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .onehot import run_onehot, validate_onehot
from .eta_gaussian import run_eta_gaussian, validate_eta_gaussian
from .optimal import run_optimal, validate_optimal
from .cifar import ImageMIModule, run_image, validate_image
from .dim import DIMModule, run_dim, validate_dim
from .staircase import StaircaseModule, run_staircase, validate_staircase


@dataclass(frozen=True)
class Benchmark:
    run: Callable[..., dict[str, Any]]
    validate: Callable[..., None]
    resumable: bool = False  # run() takes resume=<checkpoint path> (resume=true)


BENCHMARKS: dict[str, Benchmark] = {
    "staircase": Benchmark(run_staircase, validate_staircase, resumable=True),
    "onehot": Benchmark(run_onehot, validate_onehot),
    "optimal": Benchmark(run_optimal, validate_optimal),
    "eta_gaussian": Benchmark(run_eta_gaussian, validate_eta_gaussian),
    "slb": Benchmark(run_image, validate_image, resumable=True),  # Choi & Lee Theorem 7, CIFAR-10/100
    "clb": Benchmark(run_image, validate_image, resumable=True),  # Choi & Lee Theorem 8, CIFAR-10/100
    "dim": Benchmark(run_dim, validate_dim),  # Deep InfoMax pretraining + probes (Hjelm et al.), CIFAR-10/100
}

__all__ = ["BENCHMARKS", "Benchmark", "ImageMIModule", "StaircaseModule", "run_image", "run_staircase"]
