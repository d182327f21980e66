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


def _array(a: Any, name: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, on any device
        a = a.detach().cpu().numpy()
    try:
        return np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers: a numpy array, a torch tensor or a nested list "
                         f"(got {type(a).__name__})") from None


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

    Bad input raises ``ValueError`` with one line naming it, before any training.
    """
    from .app import run
    from .compose import compose_config
    from .data.samples import save_samples

    from .cli import groups

    known = groups()
    for group, choice in (("estimator", estimator), ("critic", critic)):
        if choice not in known[group]:
            raise ValueError(f"unknown {group} {choice!r} (valid: {', '.join(known[group])})")
    xa, ya = _array(x, "x"), _array(y, "y")
    keep = out_dir is not None
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
        except Exception as e:  # Hydra's errors for an unknown choice or a malformed override
            raise ValueError(str(e).strip().splitlines()[0]) from None
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
