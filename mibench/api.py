"""The Python API: one call from arrays to an MI estimate, on the same engine, registry and records as the CLI.

    from mibench import estimate
    r = estimate(x, y, estimator="infonce", critic="concat", steps=2000)
    r.best_test_estimate, r.test_estimate, r.curve, r.record

No Hydra in sight: the call composes the config the CLI would run for ``dataset=samples`` (the
Beyond-Normal protocol: standardised inputs, 50/50 split, early stopping; docs/benchmarks/samples.md)
with the arrays saved as the run's sample file, and any other setting as a ``key=value`` override.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .app import run
from .checks import Int, check_dir, check_seed
from .cli import groups
from .compose import compose_config, composition_error, override_key
from .data.samples import _true_mi, save_samples


@dataclass
class Estimation:
    """What :func:`estimate` returns.

    best_test_estimate: the best held-out estimate over evaluation points (the Beyond-Normal protocol's number)
    test_estimate:      the last evaluation's held-out estimate
    curve:              per evaluation: step, test_estimate, best_test_estimate, train_estimate, true_mi
    record:             the run's result.json (status, metrics, versions, config hash, ...)
    out_dir:            where the run's files are (None when they were written to a temporary folder)
    """

    best_test_estimate: float
    test_estimate: float
    true_mi: float | None
    status: str
    steps: int
    curve: pd.DataFrame = field(repr=False)
    record: dict[str, Any] = field(repr=False)
    out_dir: Path | None = None

    def __float__(self) -> float:
        return float(self.best_test_estimate)


# the dataset=samples keys an override may set (the others say which arrays and file the run reads)
DATASET_KEYS = ("standardize", "train_fraction", "test_fraction", "split_seed")
VALID_ARRAY = "valid: real numbers as a numpy array, a torch tensor or a nested list"


def _array(a: Any, name: str) -> np.ndarray:
    if getattr(a, "is_meta", False):
        raise ValueError(f"{name} is a meta tensor, which holds no values ({VALID_ARRAY})")
    try:
        if hasattr(a, "detach"):  # a torch tensor, on any device
            a = a.detach().cpu().numpy()
        arr = np.asarray(a)
    except Exception as e:  # noqa: BLE001 -- a ragged list, a tensor numpy cannot take: one line
        why = (str(e).splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{name} cannot be read as an array of numbers: {why} ({VALID_ARRAY})") from None
    if arr.dtype.kind not in "biuf":
        what = "complex numbers" if arr.dtype.kind == "c" else f"dtype {arr.dtype}"
        raise ValueError(f"{name} holds {what} (got {type(a).__name__}; {VALID_ARRAY})")
    return arr.astype(np.float64)


# the keys estimate()'s own arguments set: an override of one would silently win over, or break, the argument
OWNED = {"estimator": "estimator", "critic": "critic", "seed": "seed", "benchmark.steps": "steps",
         "dataset.true_mi": "true_mi", "runs_root": "out_dir", "out_dir": "out_dir",
         "trainer.enable_progress_bar": "progress"}


def _check_arguments(overrides: Any, given: dict[str, Any]) -> list[str]:
    """One-line ValueErrors for bad arguments and for overrides of what an argument sets; the overrides as a list."""
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"overrides={overrides!r} is invalid (valid: a list of 'key=value' strings, e.g. "
                         f"['benchmark.lr=1e-3'])")
    for o in overrides:
        key = override_key(o)
        if key == "dataset" or (key.startswith("dataset.") and key not in OWNED
                                and key.split(".", 1)[1] not in DATASET_KEYS):
            raise ValueError(f"overrides: {o!r} conflicts with estimate()'s data: it runs dataset=samples on x and y "
                             f"(valid: {', '.join(f'dataset.{k}' for k in DATASET_KEYS)}, and the other groups' keys)")
        if key in OWNED:
            arg = OWNED[key]
            raise ValueError(f"overrides: {o!r} conflicts with estimate()'s argument {arg}={given[arg]!r} "
                             f"(valid: estimate(..., {arg}=...) instead)")
    if given["steps"] is not None and not Int(1).ok(given["steps"]):
        raise ValueError(f"steps={given['steps']!r} is invalid (valid: an integer >= 1, or None for the protocol's "
                         f"10,000)")
    check_seed(given["seed"])
    _true_mi(given["true_mi"], "estimate()")
    return list(overrides)


def estimate(x: Any, y: Any, estimator: str = "infonce", critic: str = "concat", steps: int | None = None, *,
             true_mi: float | None = None, seed: int = 0, overrides: Sequence[str] = (),
             out_dir: str | Path | None = None, progress: bool | None = None) -> Estimation:
    """Estimate I(X; Y) from paired samples ``x`` [n] or [n, d_x] and ``y`` [n] or [n, d_y] (numpy or torch).

    estimator / critic: a registry name (``mibench.estimators.REGISTRY``, ``mibench.critics.REGISTRY``)
    steps:     the most training steps (default: the protocol's 10,000; early stopping usually ends sooner)
    true_mi:   the known MI, if any (recorded beside the estimate)
    overrides: further settings as on the command line, e.g. ``["benchmark.lr=1e-3", "critic.hidden=[64,64]"]``
    out_dir:   keep the run's files (config.yaml, result.json, steps.csv, curve.csv, figure) there;
               default: a temporary folder, removed afterwards
    progress:  a progress bar (default: when stderr is a terminal)

    Bad input raises ``ValueError`` with one line naming it, before any training: arrays that are not real
    numbers, an ``out_dir`` where no directory can be written, overrides that are not a list of
    ``key=value`` strings or that set what an argument sets (``estimator=``, ``dataset=``, ``seed=``, ...).
    """
    known = groups()
    for group, choice in (("estimator", estimator), ("critic", critic)):
        if choice not in known[group]:
            raise ValueError(f"unknown {group} {choice!r} (valid: {', '.join(known[group])})")
    overrides = _check_arguments(overrides, {"estimator": estimator, "critic": critic, "seed": seed, "steps": steps,
                                             "true_mi": true_mi, "out_dir": out_dir, "progress": progress})
    xa, ya = _array(x, "x"), _array(y, "y")
    keep = out_dir is not None
    if keep:
        check_dir(out_dir, f"out_dir={out_dir}")
    out = Path(out_dir) if keep else Path(tempfile.mkdtemp(prefix="mibench-"))
    try:
        path = save_samples(out / "samples.npz", xa, ya, true_mi)
        args = ["dataset=samples", f"dataset.path={path}", f"estimator={estimator}", f"critic={critic}",
                f"seed={seed}", "runs_root=null", "logger=none" if not keep else "logger=csv"]
        if steps is not None:
            args.append(f"benchmark.steps={steps}")
        if progress is None:
            progress = sys.stderr.isatty()
        args.append(f"trainer.enable_progress_bar={str(bool(progress)).lower()}")
        try:
            cfg = compose_config([*args, *overrides], out_dir=out)
        except Exception as e:  # Hydra's errors for an unknown key or a malformed override
            raise ValueError(composition_error(e, [*args, *overrides], lambda o: compose_config(o, hydra=True))) from None
        result = run(cfg, out, echo=False)
        record = json.loads((out / "result.json").read_text())
        m = result.metrics
        return Estimation(best_test_estimate=float(m["best_test_estimate"]), test_estimate=float(m["test_estimate"]),
                          true_mi=m.get("true_mi"), status=result.status, steps=result.steps_done,
                          curve=result.extra["curve"], record=record, out_dir=out if keep else None)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)


__all__ = ["Estimation", "estimate"]
