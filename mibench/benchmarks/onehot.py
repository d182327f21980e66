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
or a per-y learned baseline do not apply and are refused by :func:`validate_onehot`.

The two symptoms are summarised as numbers (Choi & Lee §3):
  drift      least-squares slope of the joint term E_P[T] over the second half of training
             (nats per 1,000 steps; MINE's free constant C makes both terms drift in parallel,
             ReMINE pins the marginal term at C*)
  explosion  the first step at which a recorded value is non-finite, or max |T| over the N x N
             table or |estimate| exceeds ``benchmark.explode_threshold`` (NWJ at batch 32)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..estimators import Estimator

STEP_COLUMNS = ["step", "true_mi", "estimate", "loss", "joint", "marginal", "reg",
                "t_support", "t_off_support", "t_off_min", "t_abs_max"]
N_REC = len(STEP_COLUMNS) - 2  # everything but step and true_mi lives in the device buffer

# Bounds whose terms are plain masked reductions over the whole score tensor, so they apply to
# independently drawn joint / marginal pairs. tuba / retuba only with the constant baseline a(y) = 1.
SUPPORTED = ("dv", "mine", "nwj", "js", "smile", "smile_js", "tuba", "eta_mine",
             "remine", "renwj", "resmile", "retuba", "rejs")


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
    from ..estimators import REGISTRY, bounds

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


class OneHotModule(L.LightningModule):
    """Trains ``critic`` with ``estimator`` on the one-hot problem; records per-step terms and critic outputs."""

    def __init__(self, critic: nn.Module, estimator: Estimator, n_classes: int, batch_size: int, steps: int,
                 lr: float = 0.1, optimizer: str = "sgd", explode_threshold: float = 88.0,
                 stop_on_divergence: bool = True):
        super().__init__()
        self.critic, self.estimator = critic, estimator
        self.n_classes, self.batch_size, self.total_steps = int(n_classes), int(batch_size), int(steps)
        self.lr, self.optimizer_name = float(lr), optimizer
        self.explode_threshold, self.stop_on_divergence = float(explode_threshold), stop_on_divergence
        self.true_mi = math.log(self.n_classes)
        self.automatic_optimization = False
        self.register_buffer("eye", torch.eye(self.n_classes), persistent=False)
        self.register_buffer("diag", torch.eye(self.n_classes, dtype=torch.bool), persistent=False)
        col = torch.arange(2) == 0
        self.register_buffer("joint_mask", col.expand(self.batch_size, 2).clone(), persistent=False)
        self.register_buffer("marginal_mask", (~col).expand(self.batch_size, 2).clone(), persistent=False)
        self.register_buffer("record", torch.full((self.total_steps, N_REC), math.nan), persistent=False)
        self.blocks: list[np.ndarray] = []
        self.explosion_step: int | None = None
        self.nonfinite_step: int | None = None
        self.steps_df: pd.DataFrame | None = None
        self._t = 0
        self._flushed = 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.critic.parameters()), "lr": self.lr}]
        groups += self.estimator.param_groups(self.lr)
        if self.optimizer_name == "adam":
            return torch.optim.Adam(groups, lr=self.lr)
        return torch.optim.SGD(groups, lr=self.lr)  # Choi & Lee's code: plain SGD, lr 0.1

    def table(self) -> Tensor:
        """``table[a, b] = T(e_a, e_b)`` for all N x N one-hot combinations, in fp32."""
        return self.critic(self.eye, self.eye).float()

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        """One optimizer step per batch in the chunk (index tensors [chunk, B]; see OneHotStream)."""
        joints, mxs, mys = batch
        opt = self.optimizers()
        nan = torch.full((), math.nan, device=self.eye.device)
        n = self.n_classes
        for j, mx, my in zip(joints, mxs, mys):
            tab = self.table()
            scores = torch.stack((tab[j, j], tab[mx, my]), dim=1)  # [B, 2]: joint | marginal
            est = self.estimator(scores, joint=self.joint_mask, marginal=self.marginal_mask)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(est.loss)
            opt.step()
            t_ = tab.detach()
            trace = torch.diagonal(t_).sum()  # masked reductions, not boolean indexing: no host sync
            self.record[self._t] = torch.stack((
                est.mi, est.loss, est.joint, est.marginal, est.extras.get("reg", nan),
                trace / n, (t_.sum() - trace) / (n * n - n), t_.masked_fill(self.diag, math.inf).min(),
                t_.abs().max(),
            )).detach().float()
            self._t += 1
        self._flush()
        if self.nonfinite_step is not None and self.stop_on_divergence:
            self.trainer.should_stop = True  # parameters are non-finite: nothing left to learn

    def _flush(self) -> None:
        """Copy the steps recorded since the last flush to the host (one sync per chunk), check for explosion."""
        lo, hi = self._flushed, self._t
        if hi <= lo:
            return
        rec = self.record[lo:hi].cpu().numpy().astype(np.float64)
        hit = first_explosion(rec, self.explode_threshold)
        if hit is not None and self.explosion_step is None:
            self.explosion_step = lo + hit
        bad = ~np.isfinite(np.delete(rec, STEP_COLUMNS[2:].index("reg"), axis=1)).all(axis=1)
        if bad.any() and self.nonfinite_step is None:
            self.nonfinite_step = lo + int(bad.argmax())
        steps = np.arange(lo, hi, dtype=np.float64)
        self.blocks.append(np.column_stack([steps, np.full_like(steps, self.true_mi), rec]))
        self._flushed = hi

    def on_train_end(self) -> None:
        self._flush()
        rows = np.concatenate(self.blocks) if self.blocks else np.zeros((0, len(STEP_COLUMNS)))
        self.steps_df = pd.DataFrame(rows, columns=STEP_COLUMNS).astype({"step": int})


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


def plot_onehot(steps: pd.DataFrame, path: str | Path, title: str, true_mi: float, target: float = math.nan,
                explosion_step: int | None = None) -> None:
    """Per-run figure: estimate vs log N; joint / marginal terms (regularizer target dotted); critic outputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..figures.onehot import draw_estimate, draw_outputs, draw_terms, save

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


def run_onehot(cfg, out_dir: Path) -> dict[str, Any]:
    """Build data, critic, estimator and trainer from ``cfg``; train; write steps.csv, summary.csv, onehot.png."""
    import time

    from omegaconf import OmegaConf

    from ..critics import build_critic
    from ..data.onehot import OneHotDataModule
    from ..estimators import build_estimator
    from ..results import atomic_write_csv
    from ..train import build_trainer

    d, b = cfg.dataset, cfg.benchmark
    dm = OneHotDataModule(n_classes=d.n_classes, batch_size=d.batch_size, steps=b.steps, seed=cfg.seed,
                          chunk=b.steps_per_batch, name=d.name)
    critic = build_critic(OmegaConf.to_container(cfg.critic, resolve=True), dm.dim_x, dm.dim_y)
    est_cfg = OmegaConf.to_container(cfg.estimator, resolve=True)
    estimator = build_estimator(est_cfg, dim_y=dm.dim_y)
    module = OneHotModule(critic, estimator, dm.n_classes, dm.batch_size, b.steps, lr=b.lr, optimizer=b.optimizer,
                          explode_threshold=b.explode_threshold, stop_on_divergence=b.stop_on_divergence)
    # manual optimization: max_steps counts optimizer steps; nothing is self.log-ged, so log_every_n_steps=1 is free
    trainer = build_trainer(cfg, out_dir, max_steps=int(b.steps), log_every_n_steps=1)
    # The ops are tiny (an N x N table through a 64-wide layer): intra-op threads only add overhead,
    # and on a shared/loaded CPU they slow a run down ~15x (measured 23 s vs 1.5 s for 1,000 steps).
    threads = torch.get_num_threads()
    if cfg.hardware.accelerator == "cpu":
        torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm)
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    steps = module.steps_df
    atomic_write_csv(out_dir / "steps.csv", steps)
    row = summarize(steps, float(b.explode_threshold), est_cfg, dm.n_classes, dm.batch_size, int(b.steps),
                    float(b.tail_frac))
    summary = pd.DataFrame([row])
    atomic_write_csv(out_dir / "summary.csv", summary)
    explosion = row["explosion_step"] if row["explosion_step"] != "none" else None
    title = (f"{est_cfg['name']}" + (f" C*={row['c_star']:g}" if not math.isnan(row["c_star"]) else "")
             + f" / one-hot N={dm.n_classes} batch={dm.batch_size} / {b.optimizer} lr={b.lr:g}")
    if b.plot and len(steps):
        plot_onehot(steps, out_dir / "onehot.png", title, dm.true_mi, row["marginal_target"], explosion)
    metrics = {k: v for k, v in row.items() if k not in ("estimator",)}
    text = title + "\n" + "\n".join(f"  {k:22s} {v:.4g}" if isinstance(v, float) else f"  {k:22s} {v}"
                                    for k, v in row.items() if k not in ("estimator", "n_classes", "batch_size"))
    return {"summary": summary, "steps": steps, "metrics": metrics, "wall_time_s": wall,
            "diverged_step": module.nonfinite_step, "steps_done": module._t, "title": title, "text": text,
            "objective": abs(row["drift_slope_per_1k"]) if math.isfinite(row["drift_slope_per_1k"]) else None}


def validate_onehot(cfg) -> None:
    """benchmark=onehot: dataset, benchmark and critic values, and an estimator this layout supports."""
    from ..config import ConfigError, _num, check_int, check_positive, validate_critic

    data, b, est = cfg.dataset, cfg.benchmark, cfg.estimator
    check_int(data, "n_classes", 2, "dataset", ": the one-hot problem needs >= 2 classes (I = log N)")
    check_int(data, "batch_size", 2, "dataset")
    check_int(b, "steps", 2, "benchmark", ": the drift slope needs a second half of training")
    check_int(b, "steps_per_batch", 1, "benchmark")
    if b.optimizer not in ("sgd", "adam"):
        raise ConfigError(f"benchmark.optimizer={b.optimizer!r} is invalid (valid: sgd, adam)")
    check_positive(b, "explode_threshold", "benchmark")
    tf = b.get("tail_frac")
    if not (_num(tf) and 0 < tf <= 0.5):
        raise ConfigError(f"benchmark.tail_frac={tf} is invalid (valid: 0 < tail_frac <= 0.5)")
    if est.name not in SUPPORTED:
        raise ConfigError(f"estimator={est.name} does not apply to benchmark=onehot: joint and marginal pairs are drawn "
                          f"independently, with no row-wise partition (valid: {', '.join(SUPPORTED)})")
    if est.get("baseline", "constant") != "constant":
        raise ConfigError(f"estimator.baseline={est.baseline} is invalid for benchmark=onehot "
                          "(valid: constant; a learned a(y) needs paired columns)")
    validate_critic(cfg, int(data.n_classes), int(data.n_classes))
