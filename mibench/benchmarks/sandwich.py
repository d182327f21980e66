"""The structured sandwich (Poole et al. §2.5): with a known encoder p(y|x), InfoNCE with the tractable
conditional (eq. 12) is a lower bound and the leave-one-out bound (eq. 13) an upper bound, neither with
a learned parameter: E[eq. 12] <= I(X; Y) <= E[eq. 13]. No training.

The encoder is the correlated Gaussian of the staircase, p(y|x) = N(rho x, (1 - rho^2) I) with
x ~ N(0, I_d), at each MI of ``benchmark.mi_values``; each batch size of ``benchmark.batch_sizes`` gets
many batches at once, exactly as :mod:`mibench.benchmarks.optimal` draws them (same sweep, same chunks).
Eq. 12 and 13 only differ in whether p(y_i|x_i) is in the denominator's mixture. A cell "holds" when
the lower mean is at most MI + 3 standard errors and the upper mean at least MI - 3 standard errors
(the bounds hold in expectation, and at MI = 0 both sit at 0 up to noise). Other bounds of the
``optimal`` table may be added to ``benchmark.estimators`` (e.g. ``rate`` and ``struct_nwj``, at their
optimum q(y) = p(y)); they are written to ``sandwich.csv`` and drawn in grey.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from ..checks import ConfigError
from ..engine import RunResult, register
from ..figures.sandwich import plot_sandwich
from ..results import atomic_write_csv
from .optimal import Optimal

LOWER, UPPER = "tnce", "loo_upper"
SIGMAS = 3.0


def sandwich_table(df: pd.DataFrame, sigmas: float = SIGMAS) -> pd.DataFrame:
    """One row per (true MI, batch size): eq. 12's and eq. 13's means and standard errors, and whether
    lower <= MI <= upper holds within ``sigmas`` standard errors."""
    cols = ["mean", "std_err", "variance"]
    lo = df[df["estimator"] == LOWER].set_index(["true_mi", "batch_size"])[cols].add_prefix("lower_")
    up = df[df["estimator"] == UPPER].set_index(["true_mi", "batch_size"])[cols].add_prefix("upper_")
    t = lo.join(up, how="inner").reset_index()
    t["gap"] = t["upper_mean"] - t["lower_mean"]
    t["lower_ok"] = t["lower_mean"] <= t["true_mi"] + sigmas * t["lower_std_err"]
    t["upper_ok"] = t["upper_mean"] >= t["true_mi"] - sigmas * t["upper_std_err"]
    t["holds"] = t["lower_ok"] & t["upper_ok"]
    return t


@register("sandwich")
class Sandwich(Optimal):
    """No training: eq. 12 <= true MI <= eq. 13 over MI levels and batch sizes (CSV + figure)."""

    # the scores are the known encoder's log p(y|x) (up to a c(y) the bounds ignore)
    caps = replace(Optimal.caps, conditional=True, known_encoder=True)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        names = list(cfg.benchmark.estimators)
        if LOWER not in names or UPPER not in names:
            raise ConfigError(f"benchmark.estimators={names} lacks {LOWER if LOWER not in names else UPPER!r} "
                              f"(valid: a list with both {LOWER} (eq. 12) and {UPPER} (eq. 13))")

    def finish(self, result: RunResult) -> None:
        b, dim, df = self.cfg.benchmark, int(self.cfg.dataset.dim), self.df
        if not len(df):
            raise RuntimeError("benchmark=sandwich evaluated no cell")
        table = sandwich_table(df)
        title = f"known Gaussian encoder, {dim}-D: eq. 12 <= I(X;Y) <= eq. 13"
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "sandwich.csv", df)
            atomic_write_csv(self.out_dir / "sandwich_table.csv", table)
            if b.plot:
                plot_sandwich(df, self.out_dir / "sandwich.png", title)
                result.figures.append(self.out_dir / "sandwich.png")
        result.metrics.update({"cells_holding": int(table["holds"].sum()), "cells_total": int(len(table)),
                               "lower_violations": int((~table["lower_ok"]).sum()),
                               "upper_violations": int((~table["upper_ok"]).sum())})
        result.summary = table
        show = table[["true_mi", "batch_size", "lower_mean", "upper_mean", "gap", "holds"]]
        result.text = (f"{title}\n{result.metrics['cells_holding']}/{len(table)} cells hold (within "
                       f"{SIGMAS:g} standard errors), sweep {result.metrics['sweep_wall_s']:.1f}s\n"
                       + show.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
