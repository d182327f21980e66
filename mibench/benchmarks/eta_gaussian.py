"""η-MINE synthetic Gaussians (ICLR-2020 submission §5, Fig. 3a) and η-MINE-convex (its Table 1, eq. 17).

A critic is trained with the chosen estimator on minibatches of a 5K-sample training set drawn from
a random-mean/covariance Gaussian (``mibench.data.random_gaussian``); every ``eval_every`` steps the
estimate is computed on the 1K-sample test set. The test estimate uses the estimator's own function
on a score matrix of shape [n_test, block]: the test set is cut into blocks of ``eval_block``
samples, row i holds T(x_i, y_j) for the y_j of its block, the joint mask marks (x_i, y_i) and the
marginal mask the other block members (so DV / NWJ / η-DV average over n_test * (block - 1)
product-of-marginals pairs, InfoNCE is a ``block``-sample bound). Training batches use the default
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
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from ..critics import ConcatCritic, SeparableCritic
from ..estimators import Estimator, bounds
from ..results import atomic_write_csv

CURVE_COLUMNS = ["step", "test_estimate", "train_estimate", "true_mi"]


def block_masks(n: int, block: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Joint / marginal masks of the [n, block] test score matrix: (i, i mod block) is the joint pair."""
    joint = torch.zeros(n, block, dtype=torch.bool, device=device)
    joint[torch.arange(n, device=device), torch.arange(n, device=device) % block] = True
    return joint, ~joint


def block_scores(score_fn, x: Tensor, y: Tensor, block: int) -> Tensor:
    """[n, block] with row i = T(x_i, y_j) for the y_j in x_i's block (n = len(x) cut to a multiple of block)."""
    n = (x.shape[0] // block) * block
    return torch.cat([score_fn(x[lo:lo + block], y[lo:lo + block]) for lo in range(0, n, block)])


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


class IndexStream(IterableDataset):
    """Yields [chunk, batch] tensors of training-set indices (each row a batch drawn without replacement)."""

    def __init__(self, n: int, batch_size: int, steps: int, chunk: int, seed: int):
        super().__init__()
        self.n, self.b, self.steps, self.chunk, self.seed = n, batch_size, steps, chunk, seed

    def __len__(self) -> int:
        return math.ceil(self.steps / self.chunk)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for lo in range(0, self.steps, self.chunk):
            k = min(self.chunk, self.steps - lo)
            yield torch.rand(k, self.n, generator=g).argsort(dim=1)[:, : self.b]


class EtaGaussianModule(L.LightningModule):
    """Manual optimisation over index chunks; one test evaluation (and one host copy) per chunk."""

    def __init__(self, critic: nn.Module, estimator: Estimator, train: tuple[Tensor, Tensor],
                 test: tuple[Tensor, Tensor], steps: int, eval_every: int, eval_block: int, lr: float):
        super().__init__()
        self.critic, self.estimator = critic, estimator
        self.automatic_optimization = False
        self.register_buffer("x_tr", train[0], persistent=False)
        self.register_buffer("y_tr", train[1], persistent=False)
        self.register_buffer("x_te", test[0], persistent=False)
        self.register_buffer("y_te", test[1], persistent=False)
        self.steps, self.eval_every, self.block, self.lr = steps, eval_every, eval_block, lr
        n_evals = math.ceil(steps / eval_every)
        self.register_buffer("train_rec", torch.zeros(steps), persistent=False)
        self.rows: list[tuple[int, float, float]] = []
        self.diverged_step: int | None = None
        self._t = 0
        self.n_evals = n_evals

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.critic.parameters()), "lr": self.lr}] + self.estimator.param_groups(self.lr)
        return torch.optim.Adam(groups, lr=self.lr)

    @torch.no_grad()
    def test_estimate(self) -> Tensor:
        s = block_scores(self.critic, self.x_te, self.y_te, self.block).float()
        joint, marginal = block_masks(s.shape[0], self.block, s.device)
        return self.estimator(s, joint, marginal).mi

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        opt = self.optimizers()
        for idx in batch:
            x, y = self.x_tr[idx], self.y_tr[idx]
            est = self.estimator(self.critic(x, y).float(), y=y)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(est.loss)
            opt.step()
            self.train_rec[self._t] = est.mi.detach()
            self._t += 1
        lo = self._t - len(batch)
        test = float(self.test_estimate())  # the one host copy of this block of steps
        train = float(self.train_rec[lo:self._t].mean())
        self.rows.append((self._t, test, train))
        if not math.isfinite(test) or not math.isfinite(train):
            self.diverged_step = self._t
            self.trainer.should_stop = True


def run_eta_gaussian(cfg, out_dir: Path) -> dict[str, Any]:
    """Train, evaluate on the test set every eval_every steps, optionally fit η-MINE-convex; write CSVs + PNG."""
    from omegaconf import OmegaConf

    from ..critics import build_critic
    from ..data.random_gaussian import random_gaussian
    from ..estimators import build_estimator
    from ..train import build_trainer

    d, b = cfg.dataset, cfg.benchmark
    dist = random_gaussian(int(d.dim), int(d.data_seed))
    g = torch.Generator().manual_seed(int(d.data_seed) + 7919)
    train, test = dist.sample(int(d.n_train), g), dist.sample(int(d.n_test), g)
    true_mi = dist.mi
    critic = build_critic(OmegaConf.to_container(cfg.critic, resolve=True), dist.dim_x, dist.dim_y)
    estimator = build_estimator(OmegaConf.to_container(cfg.estimator, resolve=True), dim_y=dist.dim_y)
    steps, every = int(b.steps), int(b.eval_every)
    module = EtaGaussianModule(critic, estimator, train, test, steps, every, int(b.eval_block), float(b.lr))
    stream = IndexStream(int(d.n_train), int(b.batch_size), steps, every, int(cfg.seed))
    trainer = build_trainer(cfg, out_dir, max_steps=steps)  # manual optimisation: one global step per opt.step()
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(stream, batch_size=None, num_workers=0))
    wall = time.perf_counter() - t0
    curve = pd.DataFrame([(s, te, tr, true_mi) for s, te, tr in module.rows], columns=CURVE_COLUMNS)
    atomic_write_csv(out_dir / "curve.csv", curve)
    name = cfg.estimator.name
    final = float(curve["test_estimate"].iloc[-1]) if len(curve) else math.nan
    metrics: dict[str, Any] = {"true_mi": true_mi, "test_estimate": final, "error": final - true_mi,
                               "train_wall_s": wall}
    rows = [{"estimator": name, "dim": int(d.dim), "seed": int(cfg.seed), "true_mi": true_mi,
             "test_estimate": final, "error": final - true_mi, "steps": module._t}]
    if name == "eta_mine" and b.convex and module.diverged_step is None:
        cx = convex_stage(critic, train, test, true_mi, int(b.convex_perms), float(b.convex_l2),
                          int(b.convex_iters), int(b.eval_block), int(cfg.seed))
        metrics.update({f"convex_{k}": v for k, v in cx.items()})
        rows.append({"estimator": "eta_mine_convex", "dim": int(d.dim), "seed": int(cfg.seed), "true_mi": true_mi,
                     "test_estimate": cx["test_estimate"], "error": cx["test_estimate"] - true_mi, "steps": module._t})
    summary = pd.DataFrame(rows)
    atomic_write_csv(out_dir / "summary.csv", summary)
    title = f"{name} / {cfg.critic.name} critic / random Gaussian d={d.dim}"
    if b.plot and len(curve):
        plot_curves({name: curve}, out_dir / "eta_gaussian.png", title, true_mi,
                    convex=metrics.get("convex_test_estimate"))
    text = f"{title}: true MI {true_mi:.4f}\n" + summary.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    return {"summary": summary, "metrics": metrics, "text": text, "diverged_step": module.diverged_step,
            "steps_done": module._t, "objective": abs(final - true_mi) if math.isfinite(final) else None}


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


def plot_curves(curves: dict[str, pd.DataFrame], path: str | Path, title: str, true_mi: float,
                convex: float | None = None, bands: dict[str, pd.DataFrame] | None = None) -> None:
    """Test estimate vs step per estimator (mean ± std band when ``bands`` gives std), truth in red (Fig. 3a)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for i, (name, c) in enumerate(curves.items()):
        color = plt.cm.tab10([0, 1, 2, 4, 5, 6, 8, 9][i % 8])  # no red: red is the true MI
        ax.plot(c["step"], c["test_estimate"], color=color, lw=1.5, label=name)
        if bands is not None and name in bands:
            sd = bands[name]["test_estimate"]
            ax.fill_between(c["step"], c["test_estimate"] - sd, c["test_estimate"] + sd, color=color, alpha=0.2)
    if convex is not None and math.isfinite(convex):
        ax.axhline(convex, color="black", ls="--", lw=1, label=f"eta_mine_convex {convex:.3f}")
    ax.axhline(true_mi, color="red", lw=1.2, label=f"true MI {true_mi:.3f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test-set MI estimate (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def validate_eta_gaussian(cfg) -> None:
    """benchmark=eta_gaussian: dataset sizes, steps, eval settings, critic (raises ConfigError)."""
    from ..config import ConfigError, check_int, validate_critic

    d, b = cfg.dataset, cfg.benchmark
    check_int(d, "dim", 2, "dataset", ": x and y each need a coordinate")
    check_int(d, "n_train", 2, "dataset")
    check_int(d, "n_test", 2, "dataset")
    check_int(d, "data_seed", 0, "dataset")
    check_int(b, "batch_size", 2, "benchmark", ": a batch needs >= 2 samples to form product-of-marginals pairs")
    if b.batch_size > d.n_train:
        raise ConfigError(f"benchmark.batch_size={b.batch_size} is invalid (valid: <= dataset.n_train={d.n_train})")
    check_int(b, "steps", 1, "benchmark")
    check_int(b, "eval_every", 1, "benchmark")
    check_int(b, "eval_block", 2, "benchmark")
    if b.eval_block > d.n_test:
        raise ConfigError(f"benchmark.eval_block={b.eval_block} is invalid (valid: 2 <= eval_block <= dataset.n_test={d.n_test})")
    if not isinstance(b.get("convex"), bool):
        raise ConfigError(f"benchmark.convex={b.get('convex')} is invalid (valid: true, false)")
    check_int(b, "convex_perms", 1, "benchmark")
    check_int(b, "convex_iters", 1, "benchmark")
    if not (isinstance(b.get("convex_l2"), (int, float)) and b.convex_l2 >= 0):
        raise ConfigError(f"benchmark.convex_l2={b.get('convex_l2')} is invalid (valid: a number >= 0)")
    if b.convex and cfg.estimator.name == "eta_mine" and cfg.critic.name not in ("concat", "separable"):
        raise ConfigError(f"critic={cfg.critic.name} has no fixed feature map for eta_mine_convex "
                          f"(valid: critic=concat or separable, or benchmark.convex=false)")
    dim = int(d.dim)
    validate_critic(cfg, dim // 2, dim - dim // 2)
