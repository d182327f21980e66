"""η-MINE synthetic Gaussians (ICLR-2020 submission §5, Fig. 3a) and η-MINE-convex (its Table 1, eq. 17).

A critic is trained with the chosen estimator on minibatches of a 5K-sample training set drawn from
a random-mean/covariance Gaussian (``mibench.data.random_gaussian``); every ``eval_every`` steps the
estimate is computed on the 1K-sample test set. The test estimate uses the estimator's own function
on a score matrix of shape [n_test, block]: the test set is cut into blocks of ``eval_block``
samples, row i holds T(x_i, y_j) for the y_j of its block, the joint mask marks (x_i, y_i) and the
marginal mask the other block members (so DV / NWJ / η-DV average over n_test * (block - 1)
product-of-marginals pairs, InfoNCE is a ``block``-sample bound). Bounds that need a square paired
matrix (I_α) or the y of every column (a learned baseline) get one block x block matrix per block, with
its y, and the test estimate is the mean over blocks. Training batches use the default
diagonal / off-diagonal masks (all N(N-1) shuffled pairs rather than Algorithm 1's one permutation).

η-MINE-convex (with ``estimator=eta_mine`` and ``benchmark.convex=true``): the trained network's last
hidden layer is frozen as the feature map φ(x, y) and a linear witness f = <w, φ> is fitted with η
by minimising the η-DV loss (Table 1, row η-MINE-convex; eq. 17 with Φ fixed; eq. 11's Ω(w) = λ/2 |w|²)
on the training set's joint pairs and ``convex_perms`` permutations of y for the marginal pairs.
The loss is jointly convex in (w, η) (Lemma 3), so full-batch L-BFGS finds its minimum; it starts
from the network's own last layer (w0 = its weights, η = log E_Q e^{<w0, φ>}), so its training
objective can only improve on the network's.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..checks import LEARNING_RATE, Bool, Choice, ConfigError, Int, Number, check_critic
from ..critics import ConcatCritic, SeparableCritic
from ..data.batches import IndexStream
from ..data.random_gaussian import random_gaussian
from ..engine import Capabilities, RunResult, Scores, Step, Task, register
from ..engine.heldout import block_masks, block_scores, heldout_estimate
from ..estimators import REGISTRY as ESTIMATORS
from ..estimators import bounds
from ..figures.eta import plot_curves
from ..results import atomic_write_csv
from ..precision import full

CURVE_COLUMNS = ["step", "test_estimate", "train_estimate", "true_mi"]
ETA_SCHEDULES = ("joint", "alternating")  # one Adam step on (critic, eta) | Algorithm 1's block-coordinate schedule
MARGINALS = ("pairs", "permutation")  # all off-diagonal pairs | one permutation of y per batch (Algorithm 1)


def grid_features(critic: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """φ(x_i, y_j) [N, M, H]: the last hidden layer of a concat critic, or h(x) ⊙ g(y) for a separable one."""
    if isinstance(critic, ConcatCritic):
        w, b = critic.first.weight, critic.first.bias
        pre = (x @ w[:, : critic.dim_x].t()).unsqueeze(1) + (y @ w[:, critic.dim_x:].t() + b).unsqueeze(0)
        return critic.rest[:-1](pre)
    if isinstance(critic, SeparableCritic) and type(critic) is SeparableCritic:
        return critic.h(x).unsqueeze(1) * critic.g(y).unsqueeze(0)
    raise ValueError(f"eta_mine_convex needs a concat or separable critic, got {type(critic).__name__}")


def pair_features(critic: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """φ(x_i, y_i) [N, H] for paired rows."""
    if isinstance(critic, ConcatCritic):
        w, b = critic.first.weight, critic.first.bias
        return critic.rest[:-1](x @ w[:, : critic.dim_x].t() + y @ w[:, critic.dim_x:].t() + b)
    if isinstance(critic, SeparableCritic) and type(critic) is SeparableCritic:
        return critic.h(x) * critic.g(y)
    raise ValueError(f"eta_mine_convex needs a concat or separable critic, got {type(critic).__name__}")


def initial_witness(critic: nn.Module) -> Tensor:
    """w0 with <w0, φ> = T - bias: the network's last layer (concat) or all ones (separable)."""
    if isinstance(critic, ConcatCritic):
        return critic.rest[-1].weight.detach().reshape(-1).clone()
    return torch.ones(critic.h[-1].out_features)


def fit_convex(f_joint: Tensor, f_marg: Tensor, w0: Tensor, l2: float = 0.0, iters: int = 200) -> tuple[Tensor, Tensor, float]:
    """min over (w, η) of the η-DV loss of f = <w, φ> (+ l2/2 |w|²): Table 1 η-MINE-convex, eq. 17 with Φ fixed.

    f_joint [n, H]: φ at joint pairs; f_marg [n, K, H]: φ at K product-of-marginals pairs per row.
    Returns (w, η, training-set η-DV value at the optimum). Full-batch L-BFGS in float64.
    """
    fj, fm = f_joint.double(), f_marg.double()
    n, k = fm.shape[0], fm.shape[1]
    joint = torch.zeros(n, 1 + k, dtype=torch.bool)
    joint[:, 0] = True  # column 0: (x_i, y_i); columns 1..K: (x_i, y_perm_k(i))
    marginal = ~joint
    w = w0.double().clone().requires_grad_(True)
    with torch.no_grad():
        eta0 = torch.logsumexp((fm @ w).flatten(), 0) - math.log(n * k)  # the optimal η for w0 (Lemma 1)
    eta = eta0.clone().requires_grad_(True)

    def scores() -> Tensor:
        return torch.cat([(fj @ w).unsqueeze(1), fm @ w], dim=1)

    opt = torch.optim.LBFGS([w, eta], lr=1.0, max_iter=int(iters), line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = bounds.eta_dv(scores(), eta, joint, marginal).loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        value = float(bounds.eta_dv(scores(), eta, joint, marginal).mi)
    return w.detach(), eta.detach(), value


@register("eta_gaussian")
class EtaGaussian(Task):
    """Trains on index batches of the train set; the test estimate every ``eval_every`` steps (one host copy)."""

    needs_data = "random_gaussian"

    caps = Capabilities(vectorized=True)

    schema = {"dataset": {"dim": Int(2, why=": x and y each need a coordinate"), "n_train": Int(2), "n_test": Int(2),
                          "data_seed": Int(0)},
              "benchmark": {"batch_size": Int(2, why=": a batch needs >= 2 samples to form product-of-marginals pairs"),
                            "lr": LEARNING_RATE, "steps": Int(1), "eval_every": Int(1), "eval_block": Int(2),
                            "convex": Bool(), "convex_perms": Int(1), "convex_iters": Int(1), "convex_l2": Number(0.0),
                            "eta_schedule": Choice(*ETA_SCHEDULES), "critic_steps": Int(1),
                            "marginals": Choice(*MARGINALS)}}

    @classmethod
    def check(cls, cfg) -> None:
        d, b = cfg.dataset, cfg.benchmark
        if b.batch_size > d.n_train:
            raise ConfigError(f"benchmark.batch_size={b.batch_size} is invalid (valid: <= dataset.n_train={d.n_train})")
        if b.eval_block > d.n_test:
            raise ConfigError(f"benchmark.eval_block={b.eval_block} is invalid "
                              f"(valid: 2 <= eval_block <= dataset.n_test={d.n_test})")
        if b.convex and cfg.estimator.name == "eta_mine" and cfg.critic.name not in ("concat", "separable"):
            raise ConfigError(f"critic={cfg.critic.name} has no fixed feature map for eta_mine_convex "
                              f"(valid: critic=concat or separable, or benchmark.convex=false)")
        if b.get("eta_schedule", "joint") == "alternating" and cfg.estimator.name != "eta_mine":
            raise ConfigError(f"benchmark.eta_schedule=alternating updates eta, which estimator={cfg.estimator.name} "
                              f"does not have (valid: estimator=eta_mine, or benchmark.eta_schedule=joint)")
        if b.get("marginals", "pairs") == "permutation" and ESTIMATORS[cfg.estimator.name].layout != "any":
            raise ConfigError(f"benchmark.marginals=permutation gives one marginal pair per row, which "
                              f"estimator={cfg.estimator.name} cannot use (valid: benchmark.marginals=pairs)")
        dim = int(d.dim)
        check_critic(cfg, dim // 2, dim - dim // 2, f"dataset.dim={dim}")

    def setup(self) -> None:
        d = self.cfg.dataset
        self.dist = dist = random_gaussian(int(d.dim), int(d.data_seed))
        g = torch.Generator().manual_seed(int(d.data_seed) + 7919)
        self.train, self.test = dist.sample(int(d.n_train), g), dist.sample(int(d.n_test), g)
        self.true_mi = dist.mi
        self.nets["critic"] = self.build_critic(dist.dim_x, dist.dim_y)
        b = self.cfg.benchmark
        self.alternating = b.get("eta_schedule", "joint") == "alternating"
        self.critic_steps, self.t_local = int(b.get("critic_steps", 1)), 0
        self.perm_gen = (torch.Generator().manual_seed(int(self.cfg.seed) + 15485863)
                         if b.get("marginals", "pairs") == "permutation" else None)
        if self.alternating:  # eta stays out of the main optimizer: its own gradient step (Algorithm 1)
            from ..estimators import build_estimator

            self.estimator = build_estimator(OmegaConf.to_container(self.cfg.estimator, resolve=True),
                                             dim_y=dist.dim_y).to(self.device)
            self.eta_lr = float(self.cfg.estimator.get("eta_lr") or b.lr)
        else:
            self.estimator = self.build_estimator(dim_y=dist.dim_y)
        spec, est_cfg = ESTIMATORS[self.cfg.estimator.name], OmegaConf.to_container(self.cfg.estimator, resolve=True)
        self.per_block = spec.layout == "paired" or spec.needs_y(est_cfg)
        self.x_tr, self.y_tr = (v.to(self.device) for v in self.train)
        self.x_te, self.y_te = (v.to(self.device) for v in self.test)
        self.curve: list[tuple[int, float, float, float]] = []

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.eval_every)

    def true_mi_of(self, rows: np.ndarray) -> float | None:
        return self.true_mi

    def candidates(self) -> int:
        return int(self.cfg.benchmark.batch_size)

    def total_steps(self) -> int:
        return int(self.cfg.benchmark.steps)

    def segments(self, start: int):
        b = self.cfg.benchmark
        stream = IndexStream(int(self.cfg.dataset.n_train), int(b.batch_size), int(b.steps), self.block,
                             int(self.cfg.seed))
        yield ((idx.to(self.device), self.permutation(idx.shape[0])) for chunk in stream for idx in chunk)

    def permutation(self, n: int) -> Tensor | None:
        """Algorithm 1's product-of-marginals pairs (x_i, y_perm(i)) of a batch, or None (all off-diagonal pairs)."""
        return None if self.perm_gen is None else torch.randperm(n, generator=self.perm_gen).to(self.device)

    @classmethod
    def capabilities(cls, cfg) -> Capabilities:
        """eta_schedule=alternating: one run per process (Algorithm 1's eta step is a second update)."""
        joint = cfg["benchmark"].get("eta_schedule", "joint") == "joint"
        return replace(super().capabilities(cfg), vectorized=joint)

    def score(self, batch) -> Scores:
        idx, perm = batch
        x, y = self.x_tr[idx], self.y_tr[idx]
        scores = full(self.nets["critic"](x, y))
        if perm is None:
            return Scores(scores, y=y)
        n = scores.shape[0]
        cols = torch.arange(n, device=scores.device)
        return Scores(scores, cols.unsqueeze(1) == cols, perm.unsqueeze(1) == cols, y=y)

    def step(self, batch) -> Step:
        if not self.alternating:
            return super().step(batch)
        s = self.score(batch)
        if self.t_local and self.t_local % self.critic_steps == 0:  # after n_c critic steps: one step on eta
            eta = self.estimator.eta
            (grad,) = torch.autograd.grad(self.estimator(s.scores.detach(), s.joint, s.marginal).loss, eta)
            with torch.no_grad():
                eta -= self.eta_lr * grad
        self.t_local += 1
        est = self.estimator(s.scores, s.joint, s.marginal, y=s.y)
        return Step(est.loss, self.values(est, s))

    def test_estimate(self) -> Tensor:
        return heldout_estimate(self.nets["critic"], self.estimator, self.x_te, self.y_te,
                                int(self.cfg.benchmark.eval_block), self.per_block)

    def on_block(self, lo: int, hi: int, rows: np.ndarray) -> bool:
        test = float(self.test_estimate())
        train = float(rows[:, 1].astype(np.float32).mean(dtype=np.float32))
        self.curve.append((hi, test, train, self.true_mi))
        return not (math.isfinite(test) and math.isfinite(train))

    def evaluate(self) -> dict[str, Any]:
        b = self.cfg.benchmark
        if not (self.cfg.estimator.name == "eta_mine" and b.convex and self.ctx.diverged_step is None):
            return {}
        cx = convex_stage(self.nets["critic"], self.train, self.test, self.true_mi, int(b.convex_perms),
                          float(b.convex_l2), int(b.convex_iters), int(b.eval_block), int(self.cfg.seed))
        return {f"convex_{k}": v for k, v in cx.items()}

    def finish(self, result: RunResult) -> None:
        d, b, name = self.cfg.dataset, self.cfg.benchmark, self.cfg.estimator.name
        curve = pd.DataFrame(self.curve, columns=CURVE_COLUMNS)
        final = float(curve["test_estimate"].iloc[-1]) if len(curve) else math.nan
        true_mi, seed, steps = self.true_mi, int(self.cfg.seed), result.steps_done
        result.metrics.update({"true_mi": true_mi, "test_estimate": final, "error": final - true_mi,
                               "train_wall_s": result.extra.get("train_wall_s")})
        rows = [{"estimator": name, "dim": int(d.dim), "seed": seed, "true_mi": true_mi, "test_estimate": final,
                 "error": final - true_mi, "steps": steps}]
        if "convex_test_estimate" in result.metrics:
            cx = result.metrics["convex_test_estimate"]
            rows.append({"estimator": "eta_mine_convex", "dim": int(d.dim), "seed": seed, "true_mi": true_mi,
                         "test_estimate": cx, "error": cx - true_mi, "steps": steps})
        result.summary = summary = pd.DataFrame(rows)
        title = f"{name} / {self.cfg.critic.name} critic / random Gaussian d={d.dim}"
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "curve.csv", curve)
            atomic_write_csv(self.out_dir / "summary.csv", summary)
            if b.plot and len(curve):
                path = self.out_dir / "eta_gaussian.png"
                plot_curves({name: curve}, path, title, true_mi, convex=result.metrics.get("convex_test_estimate"))
                result.figures.append(path)
        result.text = f"{title}: true MI {true_mi:.4f}\n" + summary.to_string(index=False, float_format=lambda v: f"{v:.4f}")
        result.objective = abs(final - true_mi) if math.isfinite(final) else None
        result.extra["curve"] = curve


def convex_stage(critic: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], true_mi: float,
                 perms: int, l2: float, iters: int, block: int, seed: int) -> dict[str, float]:
    """η-MINE-convex on the frozen feature map of a trained critic; test estimate like the network's."""
    x, y = train
    g = torch.Generator().manual_seed(seed + 104729)
    with torch.no_grad():
        fj = pair_features(critic, x, y)
        fm = torch.stack([pair_features(critic, x, y[torch.randperm(len(y), generator=g)]) for _ in range(perms)], 1)
    w0 = initial_witness(critic).to(fj)
    w, eta, train_value = fit_convex(fj, fm, w0, l2, iters)
    with torch.no_grad():
        s = block_scores(lambda a, c: grid_features(critic, a, c).double() @ w, test[0], test[1], block)
        joint, marginal = block_masks(s.shape[0], block)
        test_value = float(bounds.eta_dv(s, eta, joint, marginal).mi)
    return {"test_estimate": test_value, "train_value": train_value, "eta": float(eta)}
