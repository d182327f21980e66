"""The 25-Gaussian mixture of the MI-regularised GAN (Belghazi et al. 2018 §5.1; η-MINE paper Fig. 3b) and its
mode-coverage metrics.

The mixture: ``grid`` x ``grid`` isotropic 2-D Gaussians of standard deviation ``std`` with equal weights, the
means on the square grid ``{-(grid-1)/2, ..., (grid-1)/2} * spacing`` in each coordinate (5 x 5, spacing 2,
std 0.05: means at {-4, -2, 0, 2, 4}^2, the "2D-grid" of Dumoulin et al. (ALI), VEEGAN and PacGAN, which
neither Belghazi et al. nor the η-MINE paper restate).

The metrics (VEEGAN / PacGAN): a sample is **high quality** when its Euclidean distance to the nearest mean
is at most ``n_sigma`` (3) standard deviations; a mode is **recovered** when at least ``min_count`` high-quality
samples fall on it (nearest mean). Everything is vectorised over samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .dataset import Dataset, register_dataset


def centres(grid: int = 5, spacing: float = 2.0) -> Tensor:
    """The ``grid**2`` means, row-major: ``centres[i * grid + j] = ((i - h) * spacing, (j - h) * spacing)``."""
    ticks = (torch.arange(grid, dtype=torch.float32) - (grid - 1) / 2) * spacing
    a, b = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], dim=1)


def sample(n: int, generator: torch.Generator, grid: int = 5, spacing: float = 2.0, std: float = 0.05) -> Tensor:
    """``n`` draws of the mixture (equal weights) from ``generator``: [n, 2] float32."""
    mu = centres(grid, spacing)
    idx = torch.randint(len(mu), (n,), generator=generator)
    return mu[idx] + std * torch.randn(n, 2, generator=generator)


def nearest_mode(x: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
    """(index of the nearest mean, Euclidean distance to it) of every row of ``x`` [n, 2]."""
    d = torch.cdist(x.float(), mu.to(x.device).float())  # [n, K]
    dist, idx = d.min(dim=1)
    return idx, dist


def min_count(n: int, n_modes: int, share: float) -> int:
    """High-quality samples a mode needs to count as recovered: ``share`` of its fair share ``n / n_modes``
    (rounded up), at least 1 (2,500 samples, share 0.1: 10 of the 100 a mode gets on average)."""
    return max(1, math.ceil(share * n / n_modes - 1e-9))


@dataclass
class Coverage:
    modes: int  # modes with >= min_count high-quality samples
    quality: float  # fraction of samples within n_sigma * std of their nearest mean
    counts: Tensor  # [K] high-quality samples per mode
    threshold: int  # the min_count used


def coverage(x: Tensor, mu: Tensor, std: float, threshold: int, n_sigma: float = 3.0) -> Coverage:
    """Modes recovered and high-quality fraction of the samples ``x`` [n, 2] (non-finite rows count as low quality)."""
    idx, dist = nearest_mode(x, mu)
    good = torch.isfinite(dist) & (dist <= n_sigma * std)
    counts = torch.bincount(idx[good], minlength=len(mu))
    quality = float(good.float().mean()) if len(x) else math.nan
    return Coverage(int((counts >= threshold).sum()), quality, counts.cpu(), int(threshold))



@register_dataset("mixture25")
class Mixture25(Dataset):
    """The 25-Gaussian grid of the MI-GAN experiments (eta-MINE Fig. 3b)."""

    provides = ("mixture",)


__all__ = ["centres", "sample", "nearest_mode", "min_count", "coverage", "Coverage"]
