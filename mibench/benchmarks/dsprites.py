"""Decoder-free InfoMax on dSprites (Poole et al. 2019, §3.1, Fig. 5): ``benchmark=dsprites``.

A stochastic convolutional encoder p(y|x) = N(mu(x), diag sigma(x)^2) (:mod:`mibench.models.dsprites`)
is trained to solve Poole et al.'s constrained problem

    maximise I(X; Y)   subject to   TC(Y) <= delta,   E_{x, eps} KL(p(y|x) || p(y|x + eps)) <= gamma,

with every information term a bound that uses the known encoder (§2.5):

* **I(X; Y)**: the ``estimator`` group's bound on the scores ``scores[i, j] = log p(y_j | x_i)`` of a batch
  (y_j ~ p(y|x_j), reparameterised so gradients reach the encoder). The default, ``struct_js``, is the
  paper's: I_JS with the critic T = log p(y|x) - log q(y), q an unnormalised 2-hidden-layer MLP on y learned
  by the estimator, trained with the f-GAN JS objective and reported as NWJ(T + 1). Any estimator that
  ``mibench.config.check_estimator_fits`` accepts runs (tnce, struct_nwj, struct_alpha, infonce, ...); its
  ``loss`` is what is minimised, so an upper bound (``rate``) would be *minimised* (the run says so).
* **TC(Y)** = sum_k I(X; Y_k) - I(X; Y) <= sum_k LOO_k - I_lower (:func:`mibench.estimators.bounds.tc_upper`):
  the leave-one-out upper bound (eq. 13) per latent dimension on ``dim_scores[k, i, j] = log p(y_jk | x_i)``,
  minus the estimator's value (a lower bound on I(X; Y) for every lower-bound estimator).
* **Smoothness** R = E KL(p(y|x) || p(y|x + eps)), eps ~ N(0, noise_std^2) per pixel, closed-form KL
  between diagonal Gaussians, both encodings differentiated. The paper writes eps ~ N(0, 0.5), which does
  not say whether 0.5 is the variance or the standard deviation; ``benchmark.noise_std`` (default 0.5) is
  the standard deviation.

**The constrained problem as a loss** (our choice; the paper does not say how it was optimised)::

    loss = estimator loss + tc_weight * relu(TC_upper - tc_max) + smooth_weight * relu(R - smooth_max)

an exact-penalty (hinge) relaxation with fixed weights: a constraint costs nothing while it holds and
pulls back linearly when it is violated; with weights larger than the optimal Lagrange multipliers its
minimisers solve the constrained problem, and it needs no dual variables (a Lagrangian with learned
multipliers adds a second optimisation and its own step size). ``tc_max = smooth_max = 0`` gives the
plain Lagrangian I - lambda_TC TC - lambda_R R with fixed multipliers (TC and R are >= 0 in expectation,
so the hinge is then almost always active). The defaults, delta = 1 nat, gamma = 2 nats and weights 1, are
ours: with delta = gamma = 0 the CPU runs here lost all information (docs/benchmarks/dsprites.md).

Steps: ``benchmark.steps`` (the key every benchmark shares), in segments of ``benchmark.eval_every``
steps (checkpoints at segment ends; ``resume=true`` continues from one). Each segment's batches come from
its own seeded generator, so a resumed run sees the same images. Record per step: estimate (the
estimator's value), loss, joint, marginal, tc (the TC upper bound), smooth (the KL penalty).

**Evaluation** (after training): a fixed set of ``benchmark.eval_size`` images with known factors (the
generator, or a random subset of the official file drawn without replacement; fixed by
``benchmark.eval_seed``, the same for every run seed) is encoded. A latent k is **active** when the
variance of its posterior mean across inputs is above ``benchmark.active_threshold`` times its mean
posterior variance, Var_x[mu_k(x)] / E_x[sigma_k(x)^2] > threshold (a signal-to-noise ratio: a latent
whose mean moves less than its own noise carries little information, about 0.5 log(1 + ratio) nats for a
Gaussian channel). For every latent and factor f in (shape, scale, orientation, posX, posY) the
**correlation ratio** eta^2 = Var(E[mu_k | f]) / Var(mu_k) is the fraction of the mean's variance that f
explains; an active latent **tracks** the factor with the largest eta^2 when it is at least
``benchmark.factor_threshold``, else it is "mixed".

Outputs: factors.csv, summary.csv (per segment), dsprites.png (Fig. 5's layout), metrics and the text
table; see docs/benchmarks/dsprites.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..checks import LEARNING_RATE, Bool, ConfigError, Int, Number
from ..data.dataset import DATASETS
from ..data.dsprites import FACTORS, SIZES, FactorSource
from ..engine import Capabilities, RunResult, Step, Task, data_error, register
from ..estimators.base import Estimate
from ..estimators.bounds import tc_upper
from ..models.dsprites import DSpritesEncoder, dim_log_density, gaussian_kl
from ..results import atomic_write_csv
from ..precision import full

SUMMARY_COLUMNS = ["segment", "step", "steps", "estimate", "tc", "smooth", "loss", "wall_s"]
EVAL_SEED_BASE = 1 << 60  # evaluation generators live far from the training ones (seed << 20 | segment)


@dataclass
class Terms:
    """One batch's objective: the estimate, the TC upper bound, the smoothness KL and the total loss."""

    est: Estimate
    tc: Tensor
    smooth: Tensor
    loss: Tensor


def smoothness(encoder: DSpritesEncoder, x: Tensor, noise_std: float, mu: Tensor | None = None,
               logvar: Tensor | None = None) -> Tensor:
    """[N]: KL(p(y|x) || p(y|x + eps)), eps ~ N(0, noise_std^2) per pixel (global generator)."""
    if mu is None or logvar is None:
        mu, logvar = encoder(x)
    mu2, lv2 = encoder(x + noise_std * torch.randn_like(x))
    return gaussian_kl(mu, logvar, mu2, lv2)


def correlation_ratios(values: Tensor, factors: Tensor) -> Tensor:
    """[latent, 5]: eta^2 = Var(E[v_k | f]) / Var(v_k) of each column of ``values`` [n, latent] for each
    factor column of ``factors`` [n, 5] (class indices); grouped sums, no loop over samples."""
    v = values.double()
    mean = v.mean(0)
    total = ((v - mean) ** 2).sum(0)
    out = []
    for k, size in enumerate(SIZES):
        c = factors[:, k].long()
        counts = torch.bincount(c, minlength=size).double()
        sums = torch.zeros(size, v.shape[1], dtype=v.dtype).index_add_(0, c, v)
        means = sums / counts.clamp_min(1).unsqueeze(1)
        between = (counts.unsqueeze(1) * (means - mean) ** 2).sum(0)
        out.append(between / total)
    eta = torch.stack(out, 1)
    return full(torch.where(total.unsqueeze(1) > 0, eta, torch.zeros_like(eta)))


def group_means(values: Tensor, index: Tensor, size: int) -> Tensor:
    """[size, latent]: the mean of ``values`` [n, latent] over the rows with each ``index`` (NaN where none)."""
    counts = torch.bincount(index, minlength=size).double()
    sums = torch.zeros(size, values.shape[1], dtype=torch.float64).index_add_(0, index, values.double())
    return (sums / counts.unsqueeze(1)).float()  # 0 / 0 = NaN for an empty cell


@register("dsprites")
class DSpritesInfoMax(Task):
    needs_data = "factor_images"
    columns = ("estimate", "loss", "joint", "marginal", "tc", "smooth")
    # the scores are always the encoder's log p(y_j | x_i), a square batch matrix with the pairs (x_i, y_i) on the
    # diagonal; the critic is the encoder's own log p(y|x) - log q(y), never the critic group
    caps = Capabilities(resumable=True, conditional=True, known_encoder=True, layout="paired", gives_y=True,
                        uses_critic=False)

    schema = {"benchmark": {"steps": Int(1), "eval_every": Int(1), "lr": LEARNING_RATE,
                            "batch_size": Int(2, why=": the bounds need >= 2 samples per batch"),
                            "latent": Int(1), "hidden": Int(1), "noise_std": Number(0.0),
                            "tc_max": Number(0.0), "smooth_max": Number(0.0),
                            "tc_weight": Number(0.0), "smooth_weight": Number(0.0),
                            "eval_size": Int(2), "eval_batch": Int(1), "eval_seed": Int(0),
                            "active_threshold": Number(0.0),
                            "factor_threshold": Number(0.0, 1.0, text="0 <= x <= 1"),
                            "plot": Bool(), "checkpoint": Bool()}}

    @classmethod
    def check(cls, cfg) -> None:
        data, b = DATASETS[cfg.dataset.name], cfg.benchmark
        try:
            n = data.images(cfg)
        except ValueError as e:  # an unreadable file
            raise data_error(e) from None
        if n is not None and b.eval_size > n:
            raise ConfigError(f"benchmark.eval_size={b.eval_size} is invalid (valid: <= the {n} images "
                              f"of {data.described(cfg)})")

    # ------------------------------------------------------------------ set-up
    def generated_data(self) -> str | None:
        """dataset=dsprites_generated: dSprites-style images drawn by mibench, not the official file."""
        return self.source.label if self.source.generated else None

    def setup(self) -> None:
        b = self.cfg.benchmark
        try:
            self.source: FactorSource = DATASETS[self.cfg.dataset.name].source(self.cfg)
        except ValueError as e:  # a missing or unreadable file
            raise data_error(e) from None
        self.encoder = DSpritesEncoder(int(b.latent), int(b.hidden))
        self.nets["encoder"] = self.encoder
        self.estimator = self.build_estimator(dim_y=int(b.latent))
        self.history: list[dict[str, Any]] = []
        self.tables: dict[str, Any] = {}

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.eval_every)

    def total_steps(self) -> int:
        return int(self.cfg.benchmark.steps)

    def data_bytes(self) -> int:
        return 2 * int(self.cfg.benchmark.batch_size) * 64 * 64 * 4  # a batch and its noisy copy

    def segments(self, start: int) -> Iterator[Iterator[Tensor]]:
        b = self.cfg.benchmark
        steps, every = int(b.steps), int(b.eval_every)
        for seg in range(start, math.ceil(steps / every)):
            yield self._batches(seg, min(every, steps - seg * every))

    def _batches(self, seg: int, k: int) -> Iterator[Tensor]:
        gen = torch.Generator().manual_seed((int(self.cfg.seed) << 20) + seg)  # this segment's images
        bs = int(self.cfg.benchmark.batch_size)
        for _ in range(k):
            yield self.source.sample(bs, gen)[0].to(self.device)

    # ------------------------------------------------------------------ the objective
    def objective(self, x: Tensor) -> Terms:
        """The batch's estimate, TC upper bound, smoothness KL and the penalised loss."""
        b = self.cfg.benchmark
        noise = float(b.noise_std)
        n = x.shape[0]
        if noise > 0:  # one forward for the batch and its noisy copy
            mu_all, lv_all = self.encoder(torch.cat([x, x + noise * torch.randn_like(x)]))
            mu, lv, mu2, lv2 = mu_all[:n], lv_all[:n], mu_all[n:], lv_all[n:]
        else:
            mu, lv = self.encoder(x)
            mu2, lv2 = mu, lv
        y = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)  # y_i ~ p(y | x_i), reparameterised
        dim_scores = dim_log_density(mu, lv, y)  # [latent, N, N]
        est = self.estimator(dim_scores.sum(0), None, None, y=y)
        tc = tc_upper(dim_scores, est.mi)
        smooth = gaussian_kl(mu, lv, mu2, lv2).mean()
        loss = (est.loss + float(b.tc_weight) * torch.relu(tc - float(b.tc_max))
                + float(b.smooth_weight) * torch.relu(smooth - float(b.smooth_max)))
        return Terms(est, tc, smooth, loss)

    def step(self, batch: Tensor) -> Step:
        t = self.objective(batch)
        return Step(t.loss, [t.est.mi, t.loss, t.est.joint, t.est.marginal, t.tc, t.smooth])

    def candidates(self) -> int:
        """The batch: a square matrix of the batch's images and their noisy copies."""
        return int(self.cfg.benchmark.batch_size)

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        col = {c: 1 + k for k, c in enumerate(self.columns)}
        mean = (lambda c: float(rows[:, col[c]].mean()) if len(rows) else math.nan)
        row = {"segment": index, "step": self.ctx.step, "steps": len(rows), "estimate": mean("estimate"),
               "tc": mean("tc"), "smooth": mean("smooth"), "loss": mean("loss"), "wall_s": wall}
        self.history.append(row)
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", pd.DataFrame(self.history, columns=SUMMARY_COLUMNS))
        return {f"segment/{k}": float(row[k]) for k in ("estimate", "tc", "smooth", "loss")}

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state["history"]]

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def encode_eval_set(self) -> tuple[Tensor, Tensor, Tensor]:
        """(mu, logvar, factors) of the fixed evaluation set, encoded ``eval_batch`` images at a time."""
        b = self.cfg.benchmark
        gen = torch.Generator().manual_seed(EVAL_SEED_BASE + int(b.eval_seed))
        mus, lvs, fs = [], [], []
        self.encoder.eval()
        for x, f in self.source.eval_chunks(int(b.eval_size), gen, int(b.eval_batch)):
            mu, lv = self.encoder(x.to(self.device))
            mus.append(mu.float().cpu())
            lvs.append(lv.float().cpu())
            fs.append(f)
        return torch.cat(mus), torch.cat(lvs), torch.cat(fs)

    def evaluate(self) -> dict[str, Any]:
        b = self.cfg.benchmark
        mu, lv, f = self.encode_eval_set()
        latent = mu.shape[1]
        finite = bool(torch.isfinite(mu).all() and torch.isfinite(lv).all())
        spread = mu.double().var(0, unbiased=False)
        noise = lv.double().exp().mean(0)
        snr = (spread / noise).float() if finite else torch.full((latent,), math.nan)
        active = snr > float(b.active_threshold)
        eta = correlation_ratios(mu, f) if finite else torch.full((latent, len(FACTORS)), math.nan)
        tracked = []
        for k in range(latent):
            best = int(eta[k].argmax()) if finite else 0
            if not bool(active[k]):
                tracked.append("inactive")
            elif float(eta[k, best]) >= float(b.factor_threshold):
                tracked.append(FACTORS[best])
            else:
                tracked.append("mixed")
        table = pd.DataFrame({"latent": np.arange(latent), "active": active.numpy(), "snr": snr.numpy(),
                              "mean_std": spread.sqrt().float().numpy(), "posterior_std": noise.sqrt().float().numpy()})
        for j, name in enumerate(FACTORS):
            table[f"eta2_{name}"] = eta[:, j].numpy()
        table["tracked"] = tracked
        act = [k for k in range(latent) if bool(active[k])]
        shape, scale, orient, px, py = (f[:, j].long() for j in range(5))
        self.tables = {
            "factors": table, "active": act,
            "position": group_means(mu, py * SIZES[3] + px, SIZES[3] * SIZES[4]).reshape(SIZES[4], SIZES[3], latent),
            "scale": group_means(mu, shape * SIZES[1] + scale, SIZES[0] * SIZES[1]).reshape(SIZES[0], SIZES[1], latent),
            "orientation": group_means(mu, shape * SIZES[2] + orient, SIZES[0] * SIZES[2]).reshape(SIZES[0], SIZES[2], latent),
            "mean": mu.mean(0)}
        found = sorted({t for k, t in enumerate(tracked) if k in act and t in FACTORS}, key=FACTORS.index)
        last = self.history[-1] if self.history else {}
        return {"estimate": last.get("estimate", math.nan), "tc": last.get("tc", math.nan),
                "smooth": last.get("smooth", math.nan), "active_latents": len(act), "tracked_factors": found,
                **{f"tracks_{name}": name in found for name in FACTORS},
                "data": "generated" if self.source.generated else "official", "data_label": self.source.label,
                "eval_size": int(b.eval_size), "latent": latent}

    def title(self) -> str:
        b, d = self.cfg.benchmark, self.cfg.dataset
        what = "GENERATED dSprites-style images, not the official file" if self.source.generated else "dSprites (official file)"
        return (f"dsprites InfoMax / {self.cfg.estimator.name} / {what} (dataset={d.name}); latent {b.latent}, "
                f"batch {b.batch_size}, noise_std {b.noise_std}, tc_weight {b.tc_weight}, smooth_weight {b.smooth_weight}")

    def finish(self, result: RunResult) -> None:
        from ..estimators import REGISTRY as ESTIMATORS
        from ..estimators import bounds

        b = self.cfg.benchmark
        summary = pd.DataFrame(self.history, columns=SUMMARY_COLUMNS)
        result.summary = summary
        table = self.tables.get("factors")
        title = self.title()
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", summary)
            if table is not None:
                atomic_write_csv(self.out_dir / "factors.csv", table)
            if b.plot and table is not None:
                from ..figures.dsprites import plot_selectivity

                path = self.out_dir / "dsprites.png"
                plot_selectivity(self.tables, path, title, self.tables["factors"]["tracked"].tolist())
                result.figures.append(path)
        m = result.metrics
        spec = ESTIMATORS[self.cfg.estimator.name]
        upper = spec.fn in (bounds.rate, bounds.loo)  # upper bounds: their loss is the bound itself
        lines = [title,
                 f"  {result.steps_done} steps; last segment: estimate {m['estimate']:.4f} nats"
                 f"{' (an UPPER bound, minimised by this run: not InfoMax)' if upper else ''}, "
                 f"TC upper bound {m['tc']:.4f}, smoothness KL {m['smooth']:.4f}",
                 f"  active latents (Var mu / E sigma^2 > {b.active_threshold}): {m['active_latents']} of "
                 f"{m['latent']}; tracked factors (eta^2 >= {b.factor_threshold}): "
                 f"{', '.join(m['tracked_factors']) or 'none'} (evaluated on {m['eval_size']} "
                 f"{'generated' if self.source.generated else 'official'} images)"]
        if table is not None:
            shown = table.drop(columns=["mean_std", "posterior_std"])
            lines.append(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        result.text = "\n".join(lines)
        est = m["estimate"]
        result.objective = -est if isinstance(est, float) and math.isfinite(est) else None
