"""Bias, variance and MSE of MI estimators with the analytic optimal critic (Poole et al. Fig. 3).

No training. For every (true MI, batch size) cell of the grid, ``n`` batches of the ``dataset.dim``-D
correlated Gaussian are drawn at once ([n, B, d]), the optimal-critic score matrices
f*(x_i, y_j) = log p(y_j|x_i) - log p(y_j) are built in one batched matmul ([n, B, B]), and each
registry estimator function is applied to all n matrices with ``torch.vmap``. A Python loop runs
over grid cells and over chunks of at most ``benchmark.chunk_pairs`` score entries (memory), never
over single batches.

Which critic each bound gets (its optimum, so the numbers show the estimator's own bias/variance):

* dv / mine, infonce, smile: f* (DV and InfoNCE are invariant to the constants; Poole eq. 5, 10, 12);
* nwj: f* + 1, the unique self-normalised optimum (Poole eq. 7 and the sentence after it); the
  registry's ``Spec.shift`` holds this +1;
* tuba: f* with a(y) = 1, the optimum a(y) = Z(y) = E_p(x)[e^{f*(x,y)}] = 1 (Poole eq. 6). This is
  numerically the same as f = log p(y|x) with a(y) = p(y), and (Poole footnote 1) the same as NWJ
  with f* + 1, so tuba and nwj rows coincide: a check, not a new estimator;
* alpha: f = log p(y|x) with q(y) = p(y), Poole's stated choice for I_alpha with optimal critics
  (§2.4, "we conjecture that the optimal critic ... is f(x,y) = log p(y|x) and q(y) = p(y)");
  dividing numerator and denominator by p(y) gives scores f* and log q = 0, which is what is passed;
* loo_upper: the leave-one-out upper bound (Poole eq. 13) on the same f* (any c(y) cancels);
* the structured bounds of Poole §2.5 with their optimum q(y) = p(y): tnce (eq. 12) on f* (its partition
  over x cancels any c(y)), rate (eq. 1) with log q = 0 on f*, struct_nwj (eq. 14) as tuba with a(y) = 1
  (see ``benchmark=sandwich`` for eq. 12 <= MI <= eq. 13).

Poole et al. do not list the alphas of Fig. 3 in the text; the default [0.01, 0.5, 0.99] spans
the NWJ-like, middle and InfoNCE-like ends (0.01 and 0.5 are the values of their Fig. 2).
The ``estimator`` config group is not used here: ``benchmark.estimators`` decides. Any registry
estimator whose value is a function of the scores alone applies; the regularized ones are left out
(a regularizer changes only the training loss: with f* they report their base bound's value), and
eta-MINE too (its value needs a learned eta).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..checks import Choice, ConfigError, Int, Number, Numbers, check_rules
from ..data.gaussian import optimal_scores_bmm, rho_from_mi
from ..engine import Analysis, RunResult, register
from ..estimators import REGISTRY, bounds
from ..figures.optimal import label, plot_optimal
from ..results import atomic_write_csv
COLUMNS = ["estimator", "alpha", "true_mi", "batch_size", "mean", "bias", "variance", "mse", "std_err",
           "n_batches", "nonfinite"]


def estimator_fns(names: list[str], alphas: list[float]) -> list[tuple[str, float, Callable[[Tensor], Tensor]]]:
    """(name, alpha or NaN, fn mapping ONE optimal-critic score matrix f* [B, B] to the estimate)."""
    out: list[tuple[str, float, Callable[[Tensor], Tensor]]] = []
    for name in names:
        spec = REGISTRY[name]
        if spec.fn is bounds.interpolated:
            for a in alphas:
                out.append((name, float(a), lambda s, a=float(a): bounds.interpolated(
                    s, torch.zeros(s.shape[-1], dtype=s.dtype, device=s.device), a).mi))
        elif spec.learns == "density":  # the rate with q(y) = p(y): f* = log p(y|x) - log p(y), log q = 0
            out.append((name, math.nan, lambda s, fn=spec.fn: fn(s, log_q=torch.zeros(
                s.shape[-1], dtype=s.dtype, device=s.device)).mi))
        else:
            out.append((name, math.nan, lambda s, fn=spec.fn, c=spec.shift: fn(s + c).mi))
    return out


def batches_per_cell(batch_size: int, n_batches: int, min_batches: int, pair_budget: int) -> int:
    """n_batches, cut so that a cell holds at most ``pair_budget`` score entries, but never below min_batches."""
    return int(min(n_batches, max(min_batches, pair_budget // batch_size**2)))


def sweep(dim: int, mi_values: list[float], batch_sizes: list[int], fns, n_batches: int = 1024,
          min_batches: int = 32, pair_budget: int = 1 << 22, chunk_pairs: int = 1 << 22, seed: int = 0,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """The Fig. 3 table: one row per (estimator, alpha, MI, batch size). variance has ddof=0, so mse = bias^2 + variance."""
    g = torch.Generator().manual_seed(int(seed))
    rows = []
    for b in batch_sizes:
        nb = batches_per_cell(b, n_batches, min_batches, pair_budget)
        chunk = max(1, min(nb, chunk_pairs // b**2))
        for mi in mi_values:
            rho = rho_from_mi(float(mi), dim)
            parts: list[list[Tensor]] = [[] for _ in fns]
            for lo in range(0, nb, chunk):
                k = min(chunk, nb - lo)
                x = torch.randn(k, b, dim, generator=g).to(device=device, dtype=dtype)
                eps = torch.randn(k, b, dim, generator=g).to(device=device, dtype=dtype)
                y = rho * x + math.sqrt(1.0 - rho**2) * eps
                s = optimal_scores_bmm(x, y, rho)  # [k, B, B]
                for i, (_, _, fn) in enumerate(fns):
                    parts[i].append(torch.vmap(fn)(s))
            host = torch.stack([torch.cat(p) for p in parts]).double().cpu().numpy()  # one copy per cell
            for (name, alpha, _), est in zip(fns, host):
                ok = np.isfinite(est)
                e = est[ok]
                mean = float(e.mean()) if e.size else math.nan
                var = float(e.var()) if e.size else math.nan
                rows.append({"estimator": name, "alpha": alpha, "true_mi": float(mi), "batch_size": int(b),
                             "mean": mean, "bias": mean - float(mi), "variance": var,
                             "mse": float(((e - float(mi)) ** 2).mean()) if e.size else math.nan,
                             "std_err": math.sqrt(var / e.size) if e.size else math.nan,
                             "n_batches": int(nb), "nonfinite": int((~ok).sum())})
    return pd.DataFrame(rows, columns=COLUMNS)


def format_table(df: pd.DataFrame, mi: float, batch_size: int) -> str:
    sub = df[(df["true_mi"] == mi) & (df["batch_size"] == batch_size)].copy()
    sub.insert(0, "bound", [label(r) for _, r in sub.iterrows()])
    cols = ["bound", "mean", "bias", "variance", "mse", "std_err", "n_batches"]
    return sub[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


@register("optimal")
class Optimal(Analysis):
    """No training: the bounds' bias / variance / MSE with the analytic optimal critic (never the critic group)."""

    needs_data = "gaussian"

    schema = {"dataset": {"dim": Int(1)},
              "benchmark": {"mi_values": Numbers(Number(0.0), "MI values in nats"),
                            "batch_sizes": Numbers(Int(3), "batch sizes, e.g. [16, 64, 512]"),
                            "n_batches": Int(2), "min_batches": Int(2), "pair_budget": Int(1), "chunk_pairs": Int(1),
                            "report_batch_size": Int(1), "dtype": Choice("float32", "float64")}}

    @classmethod
    def check(cls, cfg) -> None:
        b = cfg.benchmark
        names = list(b.get("estimators") or [])
        # a regularizer changes only the training loss (with f* its value is its base bound's); eta needs learning
        supported = [n for n, s in REGISTRY.items() if not s.regularized and s.learns != "eta" and n != "struct_js"]
        bad = [n for n in names if n not in supported]
        if not names or bad:
            raise ConfigError(f"benchmark.estimators has {bad[0] if bad else 'nothing'!r} "
                              f"(valid: a non-empty list of {', '.join(supported)})")
        if "alphas" in b or "alpha" in names:  # (read into a list even when no alpha runs)
            check_rules(cfg, {"benchmark": {"alphas": Numbers(Number(0.0, 1.0, lo_open=True), "alphas")}})

    def evaluate(self) -> dict[str, Any]:
        b = self.cfg.benchmark
        fns = estimator_fns(list(b.estimators), list(b.alphas))
        t0 = time.perf_counter()
        self.df = sweep(int(self.cfg.dataset.dim), list(b.mi_values), list(b.batch_sizes), fns,
                        n_batches=int(b.n_batches), min_batches=int(b.min_batches), pair_budget=int(b.pair_budget),
                        chunk_pairs=int(b.chunk_pairs), seed=int(self.cfg.seed), device=self.device,
                        dtype=torch.float64 if b.dtype == "float64" else torch.float32)
        return {"sweep_wall_s": time.perf_counter() - t0, "cells": len(b.mi_values) * len(b.batch_sizes)}

    def finish(self, result: RunResult) -> None:
        b, dim, df = self.cfg.benchmark, int(self.cfg.dataset.dim), self.df
        if not len(df):
            raise RuntimeError("benchmark=optimal evaluated no cell")
        title = f"optimal critic, {dim}-D correlated Gaussian"
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "optimal.csv", df)
            if b.plot:
                plot_optimal(df, self.out_dir / "optimal.png", title)
                result.figures.append(self.out_dir / "optimal.png")
        mi = float(max(b.mi_values))
        sizes = list(b.batch_sizes)
        bsz = int(min(sizes, key=lambda s: abs(s - int(b.report_batch_size))))
        for _, r in df[(df["true_mi"] == mi) & (df["batch_size"] == bsz)].iterrows():
            for q in ("bias", "variance", "mse"):
                result.metrics[f"{label(r)}/{q}@mi{mi:g}_b{bsz}"] = float(r[q])
        result.summary = df
        result.text = (f"{title}: {len(b.mi_values)} MI values x {len(sizes)} batch sizes, sweep "
                       f"{result.metrics['sweep_wall_s']:.1f}s\ntrue MI = {mi:g}, batch {bsz}:\n{format_table(df, mi, bsz)}")
