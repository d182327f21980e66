"""The one-hot drift / explosion study of Choi & Lee (§3-4, Figs 1-5) as a LightningModule.

X uniform on N classes, Y = X, I = log N. Each step the critic is evaluated once on all N x N
one-hot combinations, ``table[a, b] = T(e_a, e_b)``; since every sample is one of these N^2
inputs, the batch's scores are entries of that table (gathering gives the same values and the
same gradients as evaluating the critic pair by pair), and the same table gives the critic
outputs on the joint support (a = b) and off it (a != b) that Figs 2, 3 and 5 plot.

The estimator sees one score tensor ``scores[i] = (T(x_i, x_i), T(x'_i, x''_i))`` of shape [B, 2]
with explicit masks: column 0 is joint (E_P[T] = mean over it), column 1 is product-of-marginals
(the partition term runs over it). Joint and marginal pairs are drawn independently (authors'
code), so bounds that need a row-wise partition over paired samples (InfoNCE, ReInfoNCE, I_alpha)
or a per-y learned baseline do not apply: the task declares ``layout = "any"`` and no y per column,
and the registry's needs decide (mibench.config.check_estimator_fits).

The two symptoms are summarised as numbers (Choi & Lee §3):
  drift      least-squares slope of the joint term E_P[T] over the second half of training
             (nats per 1,000 steps; MINE's free constant C makes both terms drift in parallel,
             ReMINE pins the marginal term at C*)
  explosion  the first step at which a recorded value is non-finite, or max |T| over the N x N
             table or |estimate| exceeds ``benchmark.explode_threshold`` (NWJ at batch 32)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ..checks import LEARNING_RATE, POSITIVE, Choice, Int, Number, check_critic
from ..data.onehot import sample_pairs, true_mi
from ..engine import Capabilities, RunResult, Scores, Task, register
from ..estimators import REGISTRY, bounds
from ..figures.onehot import plot_onehot
from ..results import atomic_write_csv
from ..precision import full

STEP_COLUMNS = ["step", "true_mi", "estimate", "loss", "joint", "marginal", "reg",
                "t_support", "t_off_support", "t_off_min", "t_abs_max"]
N_REC = len(STEP_COLUMNS) - 2  # everything but step and true_mi lives in the device buffer


def half_slope(values: np.ndarray, steps: np.ndarray | None = None) -> float:
    """Least-squares slope of ``values`` against ``steps`` over the second half, finite entries only.

    NaN when fewer than 2 finite points remain. (The drift measure of the one-hot study.)
    """
    values = np.asarray(values, dtype=float)
    steps = np.arange(len(values), dtype=float) if steps is None else np.asarray(steps, dtype=float)
    half = len(values) // 2
    y, x = values[half:], steps[half:]
    ok = np.isfinite(y)
    y, x = y[ok], x[ok]
    if len(y) < 2:
        return math.nan
    xc = x - x.mean()
    denom = float((xc * xc).sum())
    return float((xc * (y - y.mean())).sum() / denom) if denom > 0 else math.nan


def first_explosion(rec: np.ndarray, threshold: float) -> int | None:
    """Index of the first row of the step record (STEP_COLUMNS[2:]) that explodes, or None.

    A row explodes when any recorded value except ``reg`` is non-finite, or max |T| over the table
    or |estimate| exceeds ``threshold``.
    """
    cols = [STEP_COLUMNS[2:].index(c) for c in STEP_COLUMNS[2:] if c != "reg"]
    vals = rec[:, cols]
    est = rec[:, STEP_COLUMNS[2:].index("estimate")]
    tmax = rec[:, STEP_COLUMNS[2:].index("t_abs_max")]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(vals).all(axis=1) | (np.abs(est) > threshold) | (tmax > threshold)
    return int(bad.argmax()) if bad.any() else None


def marginal_target(estimator_cfg: dict[str, Any]) -> float:
    """Where Choi & Lee's regularizer pins the *reported* marginal term (NaN for unregularized bounds).

    The regularizer drives L = log E_Q[e^T] to C* (euclidean, eq. 14) or to C* + shift (log-Euclidean,
    eq. 15). The marginal term is L itself for DV-type bounds (ReMINE, ReSMILE), E_Q[e^(T-1)] = e^(L-1)
    for NWJ-type ones (ReNWJ, ReJS) and E_Q[e^T] = e^L for ReTUBA (a = 1).
    """
    spec = REGISTRY[estimator_cfg["name"]]
    if not spec.regularized:
        return math.nan
    cfg = {**dict(spec.defaults), **estimator_cfg}
    log_z = float(cfg["c_star"]) + (spec.shift if cfg.get("distance") == "log_euclidean" else 0.0)
    if spec.fn in (bounds.dv, bounds.smile):
        return log_z
    if spec.fn in (bounds.nwj, bounds.js):
        return math.exp(log_z - 1.0)
    return math.exp(log_z)  # tuba with a(y) = 1


def summarize(steps: pd.DataFrame, explode_threshold: float, estimator_cfg: dict[str, Any], n_classes: int,
              batch_size: int, planned_steps: int, tail_frac: float = 0.1) -> dict[str, Any]:
    """One summary row: drift slopes, end values (mean over the last ``tail_frac`` of steps), explosion step."""
    n = len(steps)
    rec = steps[STEP_COLUMNS[2:]].to_numpy(dtype=float) if n else np.zeros((0, N_REC))
    hit = first_explosion(rec, explode_threshold) if n else None
    bad = ~np.isfinite(np.delete(rec, STEP_COLUMNS[2:].index("reg"), axis=1)).all(axis=1) if n else np.zeros(0, bool)
    tail = steps.iloc[n - max(1, int(round(n * tail_frac))):] if n else steps

    def end(col: str) -> float:
        v = tail[col].to_numpy(dtype=float) if n else np.zeros(0)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    st = steps["step"].to_numpy(dtype=float) if n else np.zeros(0)
    finite_t = rec[:, STEP_COLUMNS[2:].index("t_abs_max")] if n else np.zeros(0)
    finite_t = finite_t[np.isfinite(finite_t)]
    est_tail = tail["estimate"].to_numpy(dtype=float) if n else np.zeros(0)
    est_tail = est_tail[np.isfinite(est_tail)]
    return {
        "estimator": estimator_cfg["name"], "n_classes": n_classes, "batch_size": batch_size,
        "steps": planned_steps, "steps_done": n, "true_mi": math.log(n_classes),
        "estimate_end": end("estimate"), "estimate_std_end": float(est_tail.std()) if est_tail.size else math.nan,
        "joint_end": end("joint"), "marginal_end": end("marginal"),
        "c_star": float(estimator_cfg["c_star"]) if "c_star" in estimator_cfg else math.nan,
        "marginal_target": marginal_target(estimator_cfg),
        "drift_slope_per_1k": 1000.0 * half_slope(steps["joint"].to_numpy(dtype=float), st) if n else math.nan,
        "marginal_slope_per_1k": 1000.0 * half_slope(steps["marginal"].to_numpy(dtype=float), st) if n else math.nan,
        "t_support_end": end("t_support"), "t_off_support_end": end("t_off_support"),
        "max_abs_t": float(finite_t.max()) if finite_t.size else math.nan,
        "explode_threshold": explode_threshold,
        "explosion_step": int(st[hit]) if hit is not None else "none",
        "nonfinite_step": int(st[bad.argmax()]) if bad.any() else "none",
    }


@register("onehot")
class OneHot(Task):
    """Trains the critic on the one-hot problem; records per-step terms and critic outputs on the N x N table."""

    needs_data = "onehot"

    columns = tuple(STEP_COLUMNS[2:])
    context_columns = ("true_mi",)
    finite_columns = tuple(c for c in STEP_COLUMNS[2:] if c != "reg")
    estimate_columns = ()  # the study measures explosions itself (explosion_step, benchmark.explode_threshold)
    # The ops are tiny (an N x N table through a 64-wide layer): intra-op threads only add overhead,
    # and on a shared/loaded CPU they slow a run down ~15x (measured 23 s vs 1.5 s for 1,000 steps).
    cpu_threads = 1
    caps = Capabilities(vectorized=True, layout="any", gives_y=False)

    schema = {"dataset": {"n_classes": Int(2, why=": the one-hot problem needs >= 2 classes (I = log N)"),
                          "batch_size": Int(2)},
              "benchmark": {"steps": Int(2, why=": the drift slope needs a second half of training"),
                            "steps_per_batch": Int(1), "optimizer": Choice("sgd", "adam"), "lr": LEARNING_RATE,
                            "explode_threshold": POSITIVE,
                            "tail_frac": Number(0.0, 0.5, lo_open=True, text="0 < tail_frac <= 0.5")}}

    @classmethod
    def check(cls, cfg) -> None:
        n = int(cfg.dataset.n_classes)
        check_critic(cfg, n, n, f"dataset.n_classes={n}")

    def setup(self) -> None:
        d, b = self.cfg.dataset, self.cfg.benchmark
        self.n, self.batch_size, self.steps = int(d.n_classes), int(d.batch_size), int(b.steps)
        self.true_mi = true_mi(self.n)
        self.nets["critic"] = self.build_critic(self.n, self.n)
        self.estimator = self.build_estimator(dim_y=self.n)
        self.eye = torch.eye(self.n, device=self.device)
        self.diag = torch.eye(self.n, dtype=torch.bool, device=self.device)
        col = torch.arange(2, device=self.device) == 0  # column 0: joint pairs, column 1: marginal pairs
        self.joint_mask = col.expand(self.batch_size, 2).clone()
        self.marginal_mask = (~col).expand(self.batch_size, 2).clone()
        self.nan = torch.full((), math.nan, device=self.device)

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.steps_per_batch)

    def total_steps(self) -> int:
        return self.steps

    def segments(self, start: int):
        g = torch.Generator().manual_seed(int(self.cfg.seed))
        joint, mx, my = (v.to(self.device) for v in sample_pairs(self.n, self.batch_size, g, shape=(self.steps,)))
        yield zip(joint, mx, my)

    def table(self) -> Tensor:
        """``table[a, b] = T(e_a, e_b)`` for all N x N one-hot combinations, in fp32."""
        return full(self.nets["critic"](self.eye, self.eye))

    def score(self, batch) -> Scores:
        j, mx, my = batch
        tab = self.table()
        scores = torch.stack((tab[j, j], tab[mx, my]), dim=1)  # [B, 2]: joint | marginal
        t_ = tab.detach()
        trace = torch.diagonal(t_).sum()  # masked reductions, not boolean indexing: no host sync
        n = self.n
        aux = {"t_support": trace / n, "t_off_support": (t_.sum() - trace) / (n * n - n),
               "t_off_min": t_.masked_fill(self.diag, math.inf).min(), "t_abs_max": t_.abs().max()}
        return Scores(scores, self.joint_mask, self.marginal_mask, aux=aux)

    def values(self, est, s: Scores) -> list[Tensor]:
        return [est.mi, est.loss, est.joint, est.marginal, est.extras.get("reg", self.nan), *s.aux.values()]

    def context(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        return {"true_mi": np.full(hi - lo, self.true_mi)}

    def finish(self, result: RunResult) -> None:
        b = self.cfg.benchmark
        steps = result.steps
        est_cfg = OmegaConf.to_container(self.cfg.estimator, resolve=True)
        row = summarize(steps, float(b.explode_threshold), est_cfg, self.n, self.batch_size, self.steps,
                        float(b.tail_frac))
        result.summary = pd.DataFrame([row])
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", result.summary)
        explosion = row["explosion_step"] if row["explosion_step"] != "none" else None
        title = (f"{est_cfg['name']}" + (f" C*={row['c_star']:g}" if not math.isnan(row["c_star"]) else "")
                 + f" / one-hot N={self.n} batch={self.batch_size} / {b.optimizer} lr={b.lr:g}")
        if b.plot and len(steps) and self.out_dir is not None:
            path = self.out_dir / "onehot.png"
            plot_onehot(steps, path, title, self.true_mi, row["marginal_target"], explosion)
            result.figures.append(path)
        result.metrics.update({k: v for k, v in row.items() if k != "estimator"})
        result.text = title + "\n" + "\n".join(f"  {k:22s} {v:.4g}" if isinstance(v, float) else f"  {k:22s} {v}"
                                               for k, v in row.items() if k not in ("estimator", "n_classes", "batch_size"))
        result.objective = abs(row["drift_slope_per_1k"]) if math.isfinite(row["drift_slope_per_1k"]) else None
