"""Choi & Lee Figs 1-5 (the one-hot study) from a directory of finished ``benchmark=onehot`` runs.

  Fig 1  MINE and NWJ, batch 100, 3,000 steps: MI estimate and its two terms
  Fig 2  the same runs: critic outputs on the joint support (x = y) and off it (x != y)
  Fig 3  MINE and NWJ, batch 32: estimate, terms, outputs (drift, explosion)
  Fig 4  ReMINE, lambda = 0.1, batch 100, 1,500 steps, C* in {-5, -2, 0, 2, 5}: terms, C* dotted orange
  Fig 5  ReMINE and ReNWJ, batch 32: estimate, terms, outputs

The runs come from ``python -m mibench -m experiment=onehot_study`` and ``experiment=onehot_fig4``, read by the one
loader of :mod:`mibench.reports` (:func:`mibench.reports.choi_lee.onehot_study`); this module draws.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

FIG4_C_STARS = (-5.0, -2.0, 0.0, 2.0, 5.0)
LABELS = {"mine": "MINE", "nwj": "NWJ", "remine": "ReMINE", "renwj": "ReNWJ"}


def save(fig: Any, path: str | Path) -> None:
    """Save a figure atomically (temporary file + rename) and close it (:func:`mibench.results.save_figure`)."""
    from ..results import save_figure

    save_figure(fig, path)


def _finite(s: pd.Series) -> pd.Series:
    return s.replace([np.inf, -np.inf], np.nan)


def _ylim(ax: Any, steps: pd.DataFrame, cols: Sequence[str], upto: int | None, extra: Sequence[float] = (),
          q: float = 0.5) -> None:
    """Robust y-limits from the steps before ``upto`` (an explosion would squash the rest of the curve)."""
    sel = steps if upto is None else steps[steps["step"] < upto]
    vals = np.concatenate([_finite(sel[c]).dropna().to_numpy() for c in cols] + [np.asarray(extra, float)])
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = np.percentile(vals, [q, 100 - q])
        pad = 0.08 * max(hi - lo, 1.0)
        ax.set_ylim(lo - pad, hi + pad)


def draw_estimate(ax: Any, steps: pd.DataFrame, true_mi: float, upto: int | None = None, ema_span: int = 50) -> None:
    est = _finite(steps["estimate"])
    ax.plot(steps["step"], est, color="tab:blue", alpha=0.35, lw=0.6, label="estimate")
    ax.plot(steps["step"], est.ewm(span=ema_span).mean(), color="tab:blue", lw=1.5, label="EMA")
    ax.axhline(true_mi, color="black", lw=1.1, label=f"log N = {true_mi:.2f}")
    _ylim(ax, steps, ["estimate"], upto, (0.0, true_mi), q=1.0)
    ax.set_ylabel("MI estimate")
    ax.legend(loc="lower right", fontsize=7)


def draw_terms(ax: Any, steps: pd.DataFrame, target: float = math.nan, upto: int | None = None) -> None:
    """First term E_P[T] and second term (log-partition or partition) per step; the regularizer's target dotted."""
    ax.plot(steps["step"], _finite(steps["joint"]), color="tab:green", lw=0.7, label="first term E_P[T]")
    ax.plot(steps["step"], _finite(steps["marginal"]), color="tab:purple", lw=0.7, label="second term")
    if math.isfinite(target):
        ax.axhline(target, color="tab:orange", ls=":", lw=2, label=f"target {target:g}")
    _ylim(ax, steps, ["joint", "marginal"], upto, [target] if math.isfinite(target) else [])
    ax.set_ylabel("terms")
    ax.legend(loc="best", fontsize=7)


def draw_outputs(ax: Any, steps: pd.DataFrame, upto: int | None = None) -> None:
    """Critic outputs over all N x N one-hot pairs: mean on the support (x = y), mean and min off it."""
    ax.plot(steps["step"], _finite(steps["t_support"]), color="tab:red", lw=0.8, label="T(x, x): support")
    ax.plot(steps["step"], _finite(steps["t_off_support"]), color="tab:gray", lw=0.8, label="T(x, y), x != y: mean")
    ax.plot(steps["step"], _finite(steps["t_off_min"]), color="tab:gray", ls="--", lw=0.6, label="x != y: min")
    _ylim(ax, steps, ["t_support", "t_off_support", "t_off_min"], upto, q=0.0)
    ax.set_ylabel("critic outputs")
    ax.legend(loc="best", fontsize=7)


def pick(runs: Sequence[dict[str, Any]], estimator: str, batch_size: int, steps: int | None = None,
         c_star: float | None = None) -> dict[str, Any] | None:
    """The lowest-seed run matching the given settings (None when there is none)."""
    hits = [r for r in runs if r["estimator"] == estimator and r["batch_size"] == batch_size
            and (steps is None or r["steps"] == steps)
            and (c_star is None or (r["c_star"] is not None and math.isclose(float(r["c_star"]), c_star)))]
    return min(hits, key=lambda r: (r["seed"], str(r["dir"]))) if hits else None


def _explosion(run: dict[str, Any]) -> int | None:
    e = run["summary"].get("explosion_step")
    return None if e is None or str(e) == "none" or (isinstance(e, float) and math.isnan(e)) else int(float(e))


def grid(columns: Sequence[tuple[str, dict[str, Any] | None]], rows: Sequence[str], title: str,
         path: Path) -> Path:
    """One column per run, one row per panel kind (estimate, terms, outputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.6 * len(columns), 2.6 * len(rows)), dpi=110,
                             squeeze=False)
    for c, (label, run) in enumerate(columns):
        for r, kind in enumerate(rows):
            ax = axes[r][c]
            if run is None:
                ax.text(0.5, 0.5, "no run", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            steps = pd.read_csv(run["dir"] / "steps.csv")
            s = run["summary"]
            ex = _explosion(run)
            if kind == "estimate":
                draw_estimate(ax, steps, float(s["true_mi"]), ex)
            elif kind == "terms":
                draw_terms(ax, steps, float(s.get("marginal_target", math.nan)), ex)
            else:
                draw_outputs(ax, steps, ex)
            if ex is not None:
                ax.axvline(ex, color="red", ls="--", lw=1, label="explosion (curves run off scale)")
            ax.grid(alpha=0.3)
            if r == 0:
                sub = f"drift {s['drift_slope_per_1k']:+.2f}/1k steps"
                if ex is not None:
                    sub += f", explodes at {ex}"
                ax.set_title(f"{label}\n{sub}", fontsize=9)
            if r == len(rows) - 1:
                ax.set_xlabel("step")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return path


def plot_onehot(steps: pd.DataFrame, path: str | Path, title: str, true_mi: float, target: float = math.nan,
                explosion_step: int | None = None) -> None:
    """Per-run figure: estimate vs log N; joint / marginal terms (regularizer target dotted); critic outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7, 8), dpi=110, sharex=True)
    draw_estimate(axes[0], steps, true_mi, explosion_step)
    draw_terms(axes[1], steps, target, explosion_step)
    draw_outputs(axes[2], steps, explosion_step)
    for ax in axes:
        if explosion_step is not None:
            ax.axvline(explosion_step, color="red", ls="--", lw=1)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    axes[0].set_title(title + (f"\nexplosion at step {explosion_step}" if explosion_step is not None else ""),
                      fontsize=10)
    fig.tight_layout()
    save(fig, path)
