"""The correlated-Gaussian staircase of Poole et al. (Fig. 2) and its cubic variant.

x, eps ~ N(0, I_d), y = rho x + sqrt(1 - rho^2) eps, so I(X; Y) = -d/2 log(1 - rho^2) and
rho = sqrt(1 - exp(-2 MI / d)) (Poole slides; Belghazi et al.). ``cubic`` applies y -> (W y)^3
with W_ij ~ N(0, 1) fixed per run (Poole Fig. 2 bottom), or the plain y^3 of Song & Ermon; an
invertible map of y leaves the MI unchanged.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from .dataset import Dataset, register_dataset

TRANSFORMS = ("none", "cubic", "wcubic")


def rho_from_mi(mi: float, dim: int) -> float:
    """Per-dimension correlation giving total MI ``mi`` nats over ``dim`` independent pairs."""
    return math.sqrt(1.0 - math.exp(-2.0 * mi / dim))


def mi_from_rho(rho: float, dim: int) -> float:
    return -0.5 * dim * math.log(1.0 - rho**2)


def sample_correlated(n: int, dim: int, rho: float, generator: torch.Generator | None = None,
                      shape: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """``n`` joint samples (x, y) of the correlated Gaussian (leading ``shape`` for many batches)."""
    x = torch.randn(*shape, n, dim, generator=generator)
    eps = torch.randn(*shape, n, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho**2) * eps


def optimal_scores(x: Tensor, y: Tensor, rho: float) -> Tensor:
    """f*(x_i, y_j) = log p(y_j | x_i) - log p(y_j) for the untransformed Gaussian (batched over leading dims)."""
    s2 = 1.0 - rho**2
    diff = y.unsqueeze(-3) - rho * x.unsqueeze(-2)  # [..., N, M, d]
    log_cond = -0.5 * (diff**2).sum(-1) / s2 - 0.5 * x.shape[-1] * math.log(s2)
    return log_cond + 0.5 * (y**2).sum(-1).unsqueeze(-2)


def log_conditional(x: Tensor, y: Tensor, rho: float) -> Tensor:
    """log p(y_j | x_i) (up to the shared -d/2 log 2 pi, which cancels in MI bounds)."""
    s2 = 1.0 - rho**2
    diff = y.unsqueeze(-3) - rho * x.unsqueeze(-2)
    return -0.5 * (diff**2).sum(-1) / s2 - 0.5 * x.shape[-1] * math.log(s2)


class StaircaseStream(IterableDataset):
    """Yields ``(x, y, level)`` with x, y of shape [chunk, batch, dim]: ``chunk`` consecutive training
    batches at a time, ``steps_per_level`` batches at each MI level in turn.

    A level's batches are drawn in one vectorised call from a generator seeded by ``seed``, so a
    run is reproducible and the sampling costs almost nothing per step. Handing the Trainer
    ``chunk`` steps per item amortises Lightning's per-item loop overhead (~0.2 ms on CPU, about
    a fifth of a staircase step); the chunk size does not change the data or the result.
    """

    def __init__(self, dim: int, batch_size: int, mi_levels: Sequence[float], steps_per_level: int, seed: int,
                 transform: str = "none", chunk: int = 1):
        super().__init__()
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r} (valid: {', '.join(TRANSFORMS)})")
        self.dim, self.batch_size, self.steps, self.chunk = dim, batch_size, steps_per_level, max(1, int(chunk))
        self.mi_levels = [float(m) for m in mi_levels]
        self.seed, self.transform = seed, transform
        self.start_level = 0  # > 0 when resuming: earlier levels are drawn (to advance the generator) but not yielded
        g = torch.Generator().manual_seed(seed + 1_000_003)
        self.W = torch.randn(dim, dim, generator=g) if transform == "wcubic" else None

    def __len__(self) -> int:
        return math.ceil(self.steps / self.chunk) * (len(self.mi_levels) - self.start_level)

    def apply_transform(self, y: Tensor) -> Tensor:
        if self.transform == "cubic":
            return y**3
        if self.transform == "wcubic":
            return (y @ self.W.t()) ** 3
        return y

    def level_data(self, level: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        rho = rho_from_mi(self.mi_levels[level], self.dim)
        x, y = sample_correlated(self.batch_size, self.dim, rho, generator, shape=(self.steps,))
        return x, self.apply_transform(y)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, int]]:
        g = torch.Generator().manual_seed(self.seed)
        for level in range(len(self.mi_levels)):
            xs, ys = self.level_data(level, g)
            if level < self.start_level:
                continue
            for t in range(0, self.steps, self.chunk):
                yield xs[t:t + self.chunk], ys[t:t + self.chunk], level

    def batches(self) -> Iterator[tuple[Tensor, Tensor, int]]:
        """One training batch at a time (x, y: [batch, dim]), the same data as ``__iter__``."""
        for xs, ys, level in self:
            for x, y in zip(xs, ys):
                yield x, y, level


def log_density_bmm(x: Tensor, y: Tensor, rho: float) -> Tensor:
    """The normalised log p(y_j | x_i) = log N(y_j; rho x_i, (1 - rho^2) I), 2 pi included, for many
    batches (x, y: [..., N, d]): what the structured bounds of Poole §2.5 take as scores (the rate
    compares it with a normalised log q(y), so no constant may be dropped)."""
    d = x.shape[-1]
    yy = (y**2).sum(-1).unsqueeze(-2)
    return optimal_scores_bmm(x, y, rho) - 0.5 * yy - 0.5 * d * math.log(2 * math.pi)


def optimal_scores_bmm(x: Tensor, y: Tensor, rho: float) -> Tensor:
    """:func:`optimal_scores` for many batches (x, y: [..., N, d]) without the [N, M, d] difference tensor.

    |y - rho x|^2 = |y|^2 - 2 rho x.y + rho^2 |x|^2, so f* = log p(y|x) - log p(y) costs one batched
    matmul: -(|y|^2 - 2 rho x.y + rho^2 |x|^2) / (2 s2) - d/2 log s2 + |y|^2 / 2 with s2 = 1 - rho^2.
    """
    s2 = 1.0 - rho**2
    xy = x @ y.transpose(-1, -2)  # [..., N, M]
    yy = (y**2).sum(-1).unsqueeze(-2)  # [..., 1, M]
    xx = (x**2).sum(-1).unsqueeze(-1)  # [..., N, 1]
    return (rho * xy - 0.5 * rho**2 * xx) / s2 + 0.5 * yy * (1.0 - 1.0 / s2) - 0.5 * x.shape[-1] * math.log(s2)


def optimal_scores_per_dim(x: Tensor, y: Tensor, rho: Tensor) -> Tensor:
    """f*(x_i, y_j) = log p_rho(y_j|x_i) - log p(y_j) with one correlation per dimension (a tensor, differentiable).

    ``rho``: [d] (or [..., d], batched like x and y: [..., N, d]); p(y_k|x_k) = N(rho_k x_k, 1 - rho_k^2),
    p(y) = N(0, I). As :func:`optimal_scores_bmm`, one batched matmul per score matrix:
    f* = sum_k [ (rho_k x_ik y_jk - rho_k^2 (x_ik^2 + y_jk^2) / 2) / s2_k - log(s2_k) / 2 ], s2_k = 1 - rho_k^2.
    """
    s2 = 1.0 - rho**2
    a = (rho / s2).unsqueeze(-2)  # [..., 1, d]
    c = (rho**2 / s2).unsqueeze(-1)  # [..., d, 1]
    xy = (x * a) @ y.transpose(-1, -2)  # [..., N, M]
    xx = (x**2) @ c  # [..., N, 1]
    yy = ((y**2) @ c).transpose(-1, -2)  # [..., 1, M]
    return xy - 0.5 * (xx + yy) - 0.5 * torch.log(s2).sum(-1)[..., None, None]


@register_dataset("gaussian")
class Gaussian(Dataset):
    """Correlated Gaussian pairs (Poole et al. Fig. 2): the staircase, and a closed-form optimal critic."""

    provides = ("gaussian", "staircase")


@register_dataset("cubic")
class Cubic(Dataset):
    """The Gaussian staircase with y -> (W y)^3 (Poole et al. Fig. 2 bottom): no closed-form critic."""

    provides = ("staircase",)

