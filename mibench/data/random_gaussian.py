"""Gaussians with a random mean and covariance (η-MINE paper, ICLR-2020 submission §5, Fig. 3a).

The joint vector z = (x, y) is ``dim``-dimensional (2, 10 or 20 in the paper: "sampled from 2-, 10-
and 20-dimensional Gaussian distributions"), x its first dim // 2 coordinates and y the rest. The
paper gives no recipe for the random covariance; here Sigma = A A^T / dim + 0.05 I with
A ~ N(0, 1)^{dim x dim} (a Wishart draw plus a ridge that keeps it well conditioned) and
mean ~ N(0, I), both from ``data_seed`` so every training seed sees the same distribution
(data_seed 0: MI = 1.39, 2.03, 3.78 nats for dim 2, 10, 20). The true MI is
I(X; Y) = 1/2 (log det Sigma_xx + log det Sigma_yy - log det Sigma).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from ..precision import full
from .dataset import Dataset, register_dataset


@dataclass
class RandomGaussian:
    mean: Tensor  # [dim]
    cov: Tensor  # [dim, dim]
    dim_x: int

    @property
    def dim_y(self) -> int:
        return self.mean.shape[0] - self.dim_x

    @property
    def mi(self) -> float:
        """1/2 (log det Sigma_xx + log det Sigma_yy - log det Sigma), in nats (float64)."""
        c, dx = self.cov.double(), self.dim_x
        return 0.5 * float(torch.logdet(c[:dx, :dx]) + torch.logdet(c[dx:, dx:]) - torch.logdet(c))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` joint samples (x [n, dim_x], y [n, dim_y]) via the Cholesky factor."""
        L = torch.linalg.cholesky(self.cov.double())
        z = torch.randn(n, self.mean.shape[0], generator=generator, dtype=torch.float64) @ L.t() + self.mean.double()
        z = full(z)
        return z[:, : self.dim_x], z[:, self.dim_x :]


def random_gaussian(dim: int, seed: int = 0) -> RandomGaussian:
    """A ``dim``-D Gaussian with random mean and covariance (see the module docstring)."""
    if dim < 2:
        raise ValueError(f"dim={dim} is too small (valid: >= 2, split into x and y)")
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    cov = a @ a.t() / dim + 0.05 * torch.eye(dim, dtype=torch.float64)
    mean = torch.randn(dim, generator=g, dtype=torch.float64)
    return RandomGaussian(mean=mean, cov=cov, dim_x=dim // 2)


@register_dataset("random_gaussian")
class RandomGaussianData(Dataset):
    """Pairs of a Gaussian with a random covariance and closed-form MI (eta-MINE Fig. 3a, Table 3)."""

    provides = ("random_gaussian",)

