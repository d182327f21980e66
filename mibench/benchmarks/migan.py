"""MI-regularised GAN on the 25-Gaussian mixture (``benchmark=migan``; η-MINE paper §5 Fig. 3b after
Belghazi et al. 2018 §5.1): does maximising I(G(z, c); c) with an estimator's bound stop mode collapse, and
how many generator steps until all 25 modes are recovered?

Per step (one generator step, then one discriminator step; the engine's main and adversary optimizers):

* a batch of real mixture samples, noise z ~ N(0, I) and codes c (InfoGAN-style: a uniform one-hot category
  of ``code_dim`` values, or ``code_dim`` continuous U(-1, 1) values); x = G([z, c]) (G(z) when
  ``conditional=false``: the unconditional baseline);
* the critic scores every generated sample against every code of the batch,
  ``scores[i, j] = T(G(z_i, c_i), c_j)`` (joint pairs on the diagonal), and the estimator gives
  Estimate(mi, loss, joint, marginal) with y = the codes;
* main loss = the non-saturating GAN loss of G, -log sigmoid(D(x)), + est.loss, where the gradient of est.loss
  reaches G scaled by ``mi_weight`` (x enters the critic as x.detach() + mi_weight * (x - x.detach())) and the
  critic (and the estimator's own eta / EMA / baseline) at full weight: G minimises
  gan + mi_weight * est.loss, the critic maximises the bound. mi_weight = 0 (or conditional=false): the MI
  term is still estimated (a monitor) but G never sees it;
* adversary: D minimises the binary cross-entropy of real (label 1) against the detached x (label 0).

Every ``eval_every`` steps (a segment; checkpointed, so a killed run resumes there) the generator, on a fixed
set of ``eval_samples`` noise / code draws, is scored by :mod:`mibench.data.mixture25`: modes recovered and the
high-quality fraction. summary.csv has one row per evaluation; ``steps_to_all_modes`` is the first evaluation
step with every mode recovered (null: not reached); ``stop_at_all_modes`` ends the run there.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import LEARNING_RATE, Bool, Choice, ConfigError, Int, Number, check_critic
from ..data import mixture25
from ..engine import Capabilities, Optim, RunResult, Step, Task, register
from ..estimators import mlp
from ..results import atomic_write_csv, save_figure
from ..precision import full

SUMMARY_COLUMNS = ["step", "modes", "quality", "estimate_mean", "d_loss_mean", "g_loss_mean", "wall_s"]
CODES = ("categorical", "continuous")


def draw_codes(n: int, kind: str, dim: int, generator: torch.Generator) -> Tensor:
    """[n, dim] codes: one-hot of a uniform category (categorical) or U(-1, 1)^dim (continuous)."""
    if kind == "categorical":
        return full(F.one_hot(torch.randint(dim, (n,), generator=generator), dim))
    return 2 * torch.rand(n, dim, generator=generator) - 1


def grad_scaled(x: Tensor, w: float) -> Tensor:
    """x in value; in the backward pass the gradient reaching x is multiplied by ``w`` (w = 0: none)."""
    return x.detach() if w == 0 else x.detach() + w * (x - x.detach())


def mi_scores(critic: nn.Module, x: Tensor, c: Tensor, mi_weight: float) -> Tensor:
    """``scores[i, j] = T(x_i, c_j)`` with the gradient into the generated x scaled by ``mi_weight``."""
    return full(critic(grad_scaled(x, mi_weight), c))


@register("migan")
class MIGan(Task):
    needs_data = "mixture"
    columns = ("estimate", "loss", "joint", "marginal", "g_loss", "d_loss")
    caps = Capabilities(resumable=True)

    schema = {"dataset": {"grid": Int(2), "spacing": Number(0.0, lo_open=True, text="a positive number"),
                          "std": Number(0.0, lo_open=True, text="a positive number")},
              "benchmark": {"steps": Int(1), "eval_every": Int(1), "batch_size": Int(2, why=": the MI term needs "
                                                                                      ">= 2 codes per batch"),
                            "lr": LEARNING_RATE, "d_lr": LEARNING_RATE,
                            "mi_weight": Number(0.0, text="a number >= 0 (0: the unconditional baseline)"),
                            "conditional": Bool(), "code": Choice(*CODES), "code_dim": Int(1),
                            "noise_dim": Int(1), "g_hidden": Int(1), "g_layers": Int(1), "d_hidden": Int(1),
                            "d_layers": Int(1), "eval_samples": Int(1),
                            "mode_share": Number(0.0, 1.0, lo_open=True, text="0 < share <= 1"),
                            "n_sigma": Number(0.0, lo_open=True, text="a positive number"),
                            "stop_at_all_modes": Bool(), "plot": Bool()}}

    @classmethod
    def check(cls, cfg) -> None:
        b = cfg.benchmark
        if b.code == "categorical" and b.code_dim < 2:
            raise ConfigError(f"benchmark.code_dim={b.code_dim} is invalid for benchmark.code=categorical "
                              f"(valid: an integer >= 2 categories)")
        panels = b.get("panels")
        if panels is not None and not (isinstance(panels, int) and not isinstance(panels, bool) and panels >= 1):
            raise ConfigError(f"benchmark.panels={panels} is invalid (valid: an integer >= 1)")
        check_critic(cfg, 2, int(b.code_dim), f"benchmark.code_dim={b.code_dim}")

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg, b, d = self.cfg, self.cfg.benchmark, self.cfg.dataset
        self.grid, self.spacing, self.std = int(d.grid), float(d.spacing), float(d.std)
        self.mu = mixture25.centres(self.grid, self.spacing)
        self.conditional = bool(b.conditional)
        self.mi_weight = float(b.mi_weight) if self.conditional else 0.0
        self.code, self.code_dim, self.noise_dim = str(b.code), int(b.code_dim), int(b.noise_dim)
        g_in = self.noise_dim + (self.code_dim if self.conditional else 0)
        self.nets["generator"] = mlp(g_in, 2, int(b.g_hidden), int(b.g_layers))
        self.nets["critic"] = self.build_critic(2, self.code_dim)
        self.estimator = self.build_estimator(dim_y=self.code_dim)
        self.adversary = mlp(2, 1, int(b.d_hidden), int(b.d_layers))
        n = int(b.eval_samples)
        g = torch.Generator().manual_seed(int(cfg.seed) + 7919)  # the same eval noise / codes at every evaluation
        self.eval_z = torch.randn(n, self.noise_dim, generator=g).to(self.device)
        self.eval_c = draw_codes(n, self.code, self.code_dim, g).to(self.device)
        self.threshold = mixture25.min_count(n, len(self.mu), float(b.mode_share))
        self.history: list[dict[str, Any]] = []
        self.snapshots: dict[int, np.ndarray] = {}  # eval step -> a few generated samples (the figure's panels)

    def optim(self) -> Optim:
        b = self.cfg.benchmark
        return Optim("adam", float(b.lr), adversary_lr=float(b.d_lr))

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.eval_every)

    def total_steps(self) -> int:
        return int(self.cfg.benchmark.steps)

    def generate(self, z: Tensor, c: Tensor) -> Tensor:
        return self.nets["generator"](torch.cat([z, c], 1) if self.conditional else z)

    def segments(self, start: int) -> Iterator[Iterator[tuple[Tensor, Tensor, Tensor]]]:
        b = self.cfg.benchmark
        total, every = int(b.steps), int(b.eval_every)
        for seg in range(start, math.ceil(total / every)):  # segment seg's draws depend on (seed, seg) only
            yield self._batches(seg, min(every, total - seg * every))

    def _batches(self, seg: int, n: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + seg)
        bs = int(self.cfg.benchmark.batch_size)
        for _ in range(n):
            real = mixture25.sample(bs, g, self.grid, self.spacing, self.std)
            z = torch.randn(bs, self.noise_dim, generator=g)
            c = draw_codes(bs, self.code, self.code_dim, g)
            yield real.to(self.device), z.to(self.device), c.to(self.device)

    def candidates(self) -> int:
        """The batch: scores[i, j] = T(G(z_i, c_i), c_j)."""
        return int(self.cfg.benchmark.batch_size)

    def true_mi_of(self, rows: np.ndarray) -> float | None:
        """log K for a K-way categorical code: I(G(z, c); c) <= H(c) = log K; a continuous code: unknown."""
        return math.log(self.code_dim) if self.code == "categorical" else None

    # ------------------------------------------------------------------ one step
    def step(self, batch: tuple[Tensor, Tensor, Tensor]) -> Step:
        real, z, c = batch
        x = self.generate(z, c)
        disc = self.adversary
        g_loss = F.softplus(-disc(x)).mean()  # non-saturating: -log sigmoid(D(G(z, c)))
        est = self.estimator(mi_scores(self.nets["critic"], x, c, self.mi_weight), None, None, y=c)
        fake = x.detach()

        def d_loss() -> Tensor:  # BCE: real -> 1, generated -> 0
            return F.softplus(-disc(real)).mean() + F.softplus(disc(fake)).mean()

        return Step(g_loss + est.loss, [est.mi, est.loss, est.joint, est.marginal, g_loss], adversary=d_loss)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_generator(self) -> tuple[mixture25.Coverage, Tensor]:
        x = full(self.generate(self.eval_z, self.eval_c))
        return mixture25.coverage(x, self.mu, self.std, self.threshold, float(self.cfg.benchmark.n_sigma)), x

    def on_block(self, lo: int, hi: int, rows: np.ndarray) -> bool:
        cov, x = self.evaluate_generator()
        col = {c: 1 + i for i, c in enumerate(self.columns)}
        mean = (lambda c: float(np.mean(rows[:, col[c]])) if len(rows) else math.nan)
        self.history.append({"step": hi, "modes": cov.modes, "quality": cov.quality,
                             "estimate_mean": mean("estimate"), "d_loss_mean": mean("d_loss"),
                             "g_loss_mean": mean("g_loss")})
        self.snapshots[hi] = x[:1000].cpu().numpy()
        return not bool(torch.isfinite(x).all())

    def done(self) -> bool:
        return bool(self.cfg.benchmark.stop_at_all_modes) and bool(self.history) and \
            self.history[-1]["modes"] == len(self.mu)

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        if not self.history:
            return {}
        self.history[-1]["wall_s"] = wall
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", self.summary())
        h = self.history[-1]
        return {"eval/modes": float(h["modes"]), "eval/quality": float(h["quality"])}

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame(self.history, columns=SUMMARY_COLUMNS)

    def steps_to_all_modes(self) -> int | None:
        return next((int(h["step"]) for h in self.history if h["modes"] == len(self.mu)), None)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history), "snapshots": dict(self.snapshots)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.snapshots = dict(state["snapshots"])

    # ------------------------------------------------------------------ outputs
    def label(self) -> str:
        b = self.cfg.benchmark
        if not self.conditional:
            return "unconditional GAN"
        if self.mi_weight == 0:
            return f"conditional GAN, mi_weight=0 ({self.cfg.estimator.name} as a monitor)"
        return f"MI-GAN, {self.cfg.estimator.name}, mi_weight={self.mi_weight:g}, {b.code} code ({b.code_dim})"

    def finish(self, result: RunResult) -> None:
        cfg, b = self.cfg, self.cfg.benchmark
        summary = self.summary()
        k = len(self.mu)
        reached = self.steps_to_all_modes()
        final = self.history[-1] if self.history else {"modes": 0, "quality": math.nan, "step": 0}
        stopped = result.diverged_step is None and result.steps_done < int(b.steps)
        result.summary = summary
        result.metrics.update({
            "steps_to_all_modes": reached, "all_modes_reached": reached is not None,
            "final_modes": int(final["modes"]), "final_quality": float(final["quality"]),
            "best_modes": int(summary["modes"].max()) if len(summary) else 0, "n_modes": k,
            "evaluations": len(summary), "eval_samples": int(b.eval_samples), "mode_threshold": self.threshold,
            "mi_weight": self.mi_weight, "conditional": self.conditional, "stopped_early": stopped,
            "train_wall_s": result.extra.get("train_wall_s")})
        title = f"{self.label()} | seed {cfg.seed}"
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", summary)
            if b.plot and len(summary):
                path = self.out_dir / "migan.png"
                plot_migan(summary, self.snapshots, self.mu.numpy(), self.std, path, title, k,
                           int(b.get("panels") or 5))
                result.figures.append(path)
        when = (f"all {k} modes at step {reached}" if reached is not None
                else f"all {k} modes not reached by step {result.steps_done} (best {result.metrics['best_modes']})")
        result.text = (f"{title}: {when}; final {int(final['modes'])}/{k} modes, high-quality fraction "
                       f"{float(final['quality']):.3f} after {result.steps_done} steps"
                       f"{' (stopped at all modes)' if stopped else ''}")
        result.objective = float(reached) if reached is not None else float(result.steps_done + k - final["modes"])
        result.extra["evaluations"] = summary


def panel_steps(steps: list[int], n: int) -> list[int]:
    """Up to ``n`` evaluation steps spread over the run, always the first and the last."""
    if len(steps) <= n:
        return list(steps)
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, n)).astype(int))
    return [steps[i] for i in idx]


def plot_migan(summary: pd.DataFrame, snapshots: dict[int, np.ndarray], mu: np.ndarray, std: float, path,
               title: str, n_modes: int, panels: int = 5) -> None:
    """Fig. 3b-style row of sample scatters (mode means as red crosses) at chosen evaluations, and the curve
    of modes recovered (and the high-quality fraction) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = panel_steps([s for s in summary["step"].astype(int) if s in snapshots], panels)
    ncol = max(len(shown), 1)
    fig = plt.figure(figsize=(2.4 * ncol + 0.4, 5.6), dpi=110)
    gs = fig.add_gridspec(2, ncol, height_ratios=[1.0, 0.8])
    lim = float(np.abs(mu).max()) + 2.0
    modes = dict(zip(summary["step"].astype(int), summary["modes"].astype(int)))
    for i, s in enumerate(shown):
        ax = fig.add_subplot(gs[0, i])
        x = snapshots[s]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, color="tab:blue", rasterized=True)
        ax.scatter(mu[:, 0], mu[:, 1], marker="x", s=18, color="tab:red", lw=1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"step {s}: {modes.get(s, 0)}/{n_modes}", fontsize=8)
    ax = fig.add_subplot(gs[1, :])
    ax.plot(summary["step"], summary["modes"], color="tab:blue", marker="o", ms=3, lw=1.4, label="modes recovered")
    ax.axhline(n_modes, color="gray", ls="--", lw=1)
    ax.set_ylim(0, n_modes + 1)
    ax.set_xlabel("generator step")
    ax.set_ylabel("modes recovered", color="tab:blue")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(summary["step"], summary["quality"], color="tab:orange", lw=1.2, label="high-quality fraction")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("high-quality fraction", color="tab:orange")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
