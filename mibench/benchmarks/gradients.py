"""Gradient accuracy of the bounds with the analytic optimal critic (Poole et al. 2019, Fig. 4).

No training. The encoder is p_rho(y|x) = N(rho * x, diag(1 - rho^2)) with one correlation rho_k per
dimension (x ~ N(0, I_d)), reparameterised: x, eps ~ N(0, I_d), y = rho * x + sqrt(1 - rho^2) * eps
(elementwise), so a bound computed on a batch is a differentiable function of the vector rho.

* True MI and its gradient: I(rho) = -1/2 sum_k log(1 - rho_k^2), dI/drho_k = rho_k / (1 - rho_k^2).
* Critic: the structured optimal critic f*_rho(x_i, y_j) = log p_rho(y_j|x_i) - log p(y_j), with
  log p_rho(y_j|x_i) = sum_k [-(y_jk - rho_k x_ik)^2 / (2 (1 - rho_k^2)) - log(1 - rho_k^2) / 2] and
  p(y) = N(0, I), which does not depend on rho (the shared -d/2 log 2 pi cancels). It is the encoder's
  own density, so the gradient of a bound with respect to rho flows through both the samples y and
  the critic (what an InfoMax encoder with a structured critic gets, Poole §3).
* Why this is the right "optimal critic" gradient: for NWJ with the self-normalised critic f* + 1,
  E[I_NWJ(f*_rho + 1)] = E_p[f*] + 1 - E_p(x)p(y)[e^{f*}] = I(rho) for every rho (E_p(x)[p(y|x) / p(y)] = 1),
  and by the reparameterisation the expectation of the per-batch gradient is the gradient of that
  expectation: the NWJ gradient is unbiased (all its error is variance). InfoNCE's expectation is
  not I(rho) (it is <= log B and saturates when I >> log B), so its gradient is biased (and shrinks
  towards 0 once the bound saturates); I_alpha lies between.
* rho for a target MI: per-dimension shares w of the MI (``benchmark.rho_split``): ``equal`` (w_k = 1/d)
  or ``dirichlet`` (w ~ Dirichlet(1, ..., 1), drawn once from the run's seed and used for every cell,
  so that cells differ only in MI and batch size); MI_k = MI * w_k, rho_k = sqrt(1 - exp(-2 MI_k)).
  Poole et al. have "a separate correlation parameter for each dimension" and evaluate "different
  settings of the parameters rho"; the Dirichlet split gives unequal rho_k, as a learned encoder would.
* Gradient MSE of a cell: the mean over batches of the mean over the d components of (g - dI/drho)^2,
  split as mse = bias2 + variance: bias2 = mean_k (mean over batches of g_k - dI/drho_k)^2, variance =
  mean_k of the variance over batches of g_k (ddof 0). A batch with a non-finite value or gradient
  is counted in ``nonfinite`` and left out.

The bounds and their critics are those of benchmark=optimal (:func:`mibench.benchmarks.optimal.estimator_fns`):
nwj gets f* + 1 (``Spec.shift``), dv and infonce f*, tuba f* with a(y) = 1 (numerically NWJ: a check),
alpha f* with log q = 0, i.e. q(y) = p(y) (Poole's stated optimal choice), once per ``benchmark.alphas``.
Fig. 4 right: the best alpha of a cell is the argmin of gradient MSE over {0} and ``alphas``, where
alpha = 0 stands for NWJ: the alpha -> 0 limit of I_alpha with q = p(y) is exactly I_NWJ(f* + 1).

Vectorised as benchmark=optimal: per chunk of batches, x and eps are [k, B, d], the score matrices
[k, B, B] are built in batched matmuls, and each bound's per-batch gradients come from
``torch.func.vmap(torch.func.grad_and_value(fn), in_dims=(None, 0, 0))`` with rho an explicit input.
Python loops run over cells, chunks and bounds only; each cell's gradients go to the host in one copy.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from ..checks import Choice
from ..data.gaussian import optimal_scores_per_dim
from ..engine import Analysis, RunResult, register
from ..figures.gradients import plot_gradients
from ..figures.optimal import label
from ..results import atomic_write_csv
from .optimal import Optimal, batches_per_cell, estimator_fns

COLUMNS = ["estimator", "alpha", "true_mi", "batch_size", "mse", "bias2", "variance", "mse_se", "mi_mean",
           "true_grad2", "n_batches", "nonfinite"]
BEST_COLUMNS = ["true_mi", "batch_size", "best_alpha", "best_mse", "nwj_mse", "infonce_mse"]
SPLITS = ("equal", "dirichlet")


def shares(dim: int, split: str, seed: int) -> np.ndarray:
    """Per-dimension shares w of the MI (sum 1): equal, or one Dirichlet(1) draw from ``seed``."""
    if split == "equal":
        return np.full(dim, 1.0 / dim)
    if split == "dirichlet":
        return np.random.default_rng(int(seed)).dirichlet(np.ones(dim))
    raise ValueError(f"unknown rho_split {split!r} (valid: {', '.join(SPLITS)})")


def rho_for(mi: float, w: np.ndarray) -> np.ndarray:
    """rho_k = sqrt(1 - exp(-2 MI w_k)), so that -1/2 sum_k log(1 - rho_k^2) = MI."""
    return np.sqrt(-np.expm1(-2.0 * float(mi) * np.asarray(w, dtype=np.float64)))


def true_mi(rho: Tensor | np.ndarray) -> float:
    """I(rho) = -1/2 sum_k log(1 - rho_k^2)."""
    r = torch.as_tensor(rho, dtype=torch.float64)
    return float(-0.5 * torch.log1p(-r**2).sum())


def true_gradient(rho: Tensor | np.ndarray) -> Tensor:
    """dI/drho_k = rho_k / (1 - rho_k^2) (float64)."""
    r = torch.as_tensor(rho, dtype=torch.float64)
    return r / (1.0 - r**2)


def sample_y(rho: Tensor, x: Tensor, eps: Tensor) -> Tensor:
    """The reparameterised encoder sample y = rho * x + sqrt(1 - rho^2) * eps (differentiable in rho)."""
    return rho * x + torch.sqrt(1.0 - rho**2) * eps


def gradient_fns(fns: list[tuple[str, float, Callable[[Tensor], Tensor]]]) -> list[tuple[str, float, Callable]]:
    """(name, alpha, g) per estimator fn: g(rho [d], x [k, B, d], eps [k, B, d]) -> (gradients [k, d], values [k]),
    the bound's gradient with respect to rho on each of the k batches (``vmap`` of ``grad_and_value``)."""
    out = []
    for name, alpha, fn in fns:
        def value(rho: Tensor, x: Tensor, eps: Tensor, fn=fn) -> Tensor:
            return fn(optimal_scores_per_dim(x, sample_y(rho, x, eps), rho))
        out.append((name, alpha, vmap(grad_and_value(value), in_dims=(None, 0, 0))))
    return out


def cell_stats(g: np.ndarray, v: np.ndarray, g_true: np.ndarray) -> dict[str, float]:
    """Gradient MSE of one bound in one cell from its per-batch gradients g [n, d] and values v [n]."""
    ok = np.isfinite(g).all(1) & np.isfinite(v)
    g, v, n = g[ok], v[ok], int(ok.sum())
    if not n:
        return {"mse": math.nan, "bias2": math.nan, "variance": math.nan, "mse_se": math.nan, "mi_mean": math.nan,
                "nonfinite": int((~ok).sum())}
    per_batch = ((g - g_true) ** 2).mean(1)  # [n]
    return {"mse": float(per_batch.mean()), "bias2": float(((g.mean(0) - g_true) ** 2).mean()),
            "variance": float(g.var(0).mean()), "mse_se": float(per_batch.std() / math.sqrt(n)),
            "mi_mean": float(v.mean()), "nonfinite": int((~ok).sum())}


def sweep(dim: int, mi_values: list[float], batch_sizes: list[int], fns, rho_split: str = "dirichlet",
          n_batches: int = 1024, min_batches: int = 32, pair_budget: int = 1 << 20, chunk_pairs: int = 1 << 20,
          seed: int = 0, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> pd.DataFrame:
    """The Fig. 4 table: one row per (estimator, alpha, MI, batch size), ``fns`` from ``estimator_fns``.

    Draws as benchmark=optimal: one generator from ``seed``; per cell and memory chunk of k batches,
    x then eps ([k, B, d]). The MI shares come from ``shares(dim, rho_split, seed)``, the same in every cell.
    """
    gfns = gradient_fns(fns)
    w = shares(dim, rho_split, seed)
    g = torch.Generator().manual_seed(int(seed))
    rows = []
    for b in batch_sizes:
        nb = batches_per_cell(b, n_batches, min_batches, pair_budget)
        chunk = max(1, min(nb, chunk_pairs // b**2))
        for mi in mi_values:
            rho64 = torch.from_numpy(rho_for(mi, w))
            g_true = true_gradient(rho64).numpy()
            rho = rho64.to(device=device, dtype=dtype)
            grads: list[list[Tensor]] = [[] for _ in gfns]
            for lo in range(0, nb, chunk):
                k = min(chunk, nb - lo)
                x = torch.randn(k, b, dim, generator=g).to(device=device, dtype=dtype)
                eps = torch.randn(k, b, dim, generator=g).to(device=device, dtype=dtype)
                for i, (_, _, gfn) in enumerate(gfns):
                    gr, val = gfn(rho, x, eps)
                    grads[i].append(torch.cat([gr, val.unsqueeze(-1)], -1))  # [k, d + 1]
            host = torch.stack([torch.cat(p) for p in grads]).double().cpu().numpy()  # one copy per cell
            for (name, alpha, _), gv in zip(fns, host):
                rows.append({"estimator": name, "alpha": alpha, "true_mi": float(mi), "batch_size": int(b),
                             **cell_stats(gv[:, :dim], gv[:, dim], g_true),
                             "true_grad2": float((g_true**2).mean()), "n_batches": int(nb)})
    return pd.DataFrame(rows, columns=COLUMNS)


def best_alpha(df: pd.DataFrame) -> pd.DataFrame:
    """Fig. 4 right: per (MI, batch size) the alpha with the smallest gradient MSE over {0 (= nwj)} and the alphas."""
    rows = []
    for (mi, b), cell in df.groupby(["true_mi", "batch_size"], sort=True):
        cand = cell[cell["estimator"] == "alpha"][["alpha", "mse"]]
        nwj = cell[cell["estimator"] == "nwj"]["mse"]
        nce = cell[cell["estimator"] == "infonce"]["mse"]
        if len(nwj):
            cand = pd.concat([pd.DataFrame({"alpha": [0.0], "mse": [float(nwj.iloc[0])]}), cand])
        cand = cand[np.isfinite(cand["mse"])]
        best = cand.iloc[int(np.argmin(cand["mse"].to_numpy()))] if len(cand) else None
        rows.append({"true_mi": float(mi), "batch_size": int(b),
                     "best_alpha": float(best["alpha"]) if best is not None else math.nan,
                     "best_mse": float(best["mse"]) if best is not None else math.nan,
                     "nwj_mse": float(nwj.iloc[0]) if len(nwj) else math.nan,
                     "infonce_mse": float(nce.iloc[0]) if len(nce) else math.nan})
    return pd.DataFrame(rows, columns=BEST_COLUMNS)


def format_best(best: pd.DataFrame) -> str:
    """The best-alpha grid as text: MI rows x batch-size columns (0 = NWJ)."""
    grid = best.pivot(index="true_mi", columns="batch_size", values="best_alpha")
    head = "MI \\ B " + "".join(f"{int(b):>7d}" for b in grid.columns)
    lines = [head] + [f"{mi:6g} " + "".join(f"{v:>7g}" for v in row) for mi, row in zip(grid.index, grid.to_numpy())]
    return "\n".join(lines)


def format_table(df: pd.DataFrame, mi: float, batch_size: int) -> str:
    sub = df[(df["true_mi"] == mi) & (df["batch_size"] == batch_size)].copy()
    sub.insert(0, "bound", [label(r) for _, r in sub.iterrows()])
    cols = ["bound", "mse", "bias2", "variance", "mse_se", "mi_mean", "n_batches"]
    return sub[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


@register("gradients")
class Gradients(Analysis):
    """No training: the MSE of each bound's gradient with respect to the encoder's rho (Poole Fig. 4), with the
    analytic optimal critic (never the critic group)."""

    needs_data = "gaussian"

    schema = {"dataset": Optimal.schema["dataset"],
              "benchmark": {**Optimal.schema["benchmark"], "rho_split": Choice(*SPLITS)}}

    @classmethod
    def check(cls, cfg) -> None:
        Optimal.check(cfg)  # the same estimators (functions of f* alone) and alphas (0 < alpha <= 1)

    def evaluate(self) -> dict[str, Any]:
        b = self.cfg.benchmark
        fns = estimator_fns(list(b.estimators), list(b.alphas))
        t0 = time.perf_counter()
        self.df = sweep(int(self.cfg.dataset.dim), list(b.mi_values), list(b.batch_sizes), fns,
                        rho_split=str(b.rho_split), n_batches=int(b.n_batches), min_batches=int(b.min_batches),
                        pair_budget=int(b.pair_budget), chunk_pairs=int(b.chunk_pairs), seed=int(self.cfg.seed),
                        device=self.device, dtype=torch.float64 if b.dtype == "float64" else torch.float32)
        self.best = best_alpha(self.df)
        return {"sweep_wall_s": time.perf_counter() - t0, "cells": len(b.mi_values) * len(b.batch_sizes)}

    def finish(self, result: RunResult) -> None:
        b, dim, df, best = self.cfg.benchmark, int(self.cfg.dataset.dim), self.df, self.best
        if not len(df):
            raise RuntimeError("benchmark=gradients evaluated no cell")
        title = f"gradient MSE with the optimal critic, {dim}-D Gaussian encoder, rho_split={b.rho_split}"
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "gradients.csv", df)
            atomic_write_csv(self.out_dir / "best_alpha.csv", best)
            if b.plot:
                plot_gradients(df, best, self.out_dir / "gradients.png", title)
                result.figures.append(self.out_dir / "gradients.png")
        for _, r in best.iterrows():
            key = f"mi{r['true_mi']:g}_b{int(r['batch_size'])}"
            result.metrics[f"best_alpha@{key}"] = float(r["best_alpha"])
            result.metrics[f"best_mse@{key}"] = float(r["best_mse"])
        mi = float(max(b.mi_values))
        bsz = int(min(b.batch_sizes, key=lambda s: abs(s - int(b.report_batch_size))))
        for _, r in df[(df["true_mi"] == mi) & (df["batch_size"] == bsz)].iterrows():
            for q in ("mse", "bias2", "variance"):
                result.metrics[f"{label(r)}/grad_{q}@mi{mi:g}_b{bsz}"] = float(r[q])
        result.summary = df
        grid = format_best(best) if (df["estimator"] == "alpha").any() else "(no alpha in benchmark.estimators)"
        result.text = (f"{title}: {len(b.mi_values)} MI values x {len(b.batch_sizes)} batch sizes, sweep "
                       f"{result.metrics['sweep_wall_s']:.1f}s\nbest alpha by gradient MSE (0 = NWJ):\n{grid}\n"
                       f"true MI = {mi:g}, batch {bsz}:\n{format_table(df, mi, bsz)}")
