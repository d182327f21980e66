"""The stochastic encoder of ``benchmark=dsprites``: p(y|x) = N(mu(x), diag sigma(x)^2), mean-field.

Architecture of Burgess et al. (2018) / Locatello et al. (2019), as Poole et al. (2019, §3.1) use it:
Conv 32 4x4 stride 2, Conv 32 4x4 s2, Conv 64 4x4 s2, Conv 64 4x4 s2 (ReLU, padding 1: 64 -> 32 -> 16
-> 8 -> 4), flatten (64 x 4 x 4), FC 256 (ReLU), FC 2 x latent (mean, log-variance). Inputs: [B, 1, 64, 64]
in [0, 1].

It is not in ``mibench.models.REGISTRY``: those are the ``model=<name>`` backbones of the CIFAR benchmarks
(3 x 32 x 32 inputs, one head), and this one belongs to the dSprites task alone.

Also here, the encoder's densities as the structured bounds need them (Poole §2.5), batched with no loop
over samples: :func:`dim_log_density` (``[latent, N, N]``, ``[k, i, j] = log p(y_jk | x_i)``),
:func:`log_density` (their sum over k, ``[i, j] = log p(y_j | x_i)``) and :func:`gaussian_kl`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LOG_2PI = math.log(2 * math.pi)


class DSpritesEncoder(nn.Module):
    def __init__(self, latent: int = 10, hidden: int = 256):
        super().__init__()
        chans = (1, 32, 32, 64, 64)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.latent = latent

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log-variance), each [B, latent]."""
        mu, logvar = self.fc(self.conv(x)).chunk(2, dim=1)
        return mu, logvar


def dim_log_density(mu: Tensor, logvar: Tensor, y: Tensor) -> Tensor:
    """[latent, N, M]: ``[k, i, j] = log N(y_jk; mu_ik, exp(logvar_ik))``, normalised (2 pi included).

    mu, logvar: [N, latent] (encoder outputs of x_1..x_N); y: [M, latent]. One broadcast, no loop.
    """
    m, lv, yt = mu.t().unsqueeze(2), logvar.t().unsqueeze(2), y.t().unsqueeze(1)  # [k, N, 1], [k, 1, M]
    return -0.5 * ((yt - m) ** 2 * torch.exp(-lv) + lv + LOG_2PI)


def log_density(mu: Tensor, logvar: Tensor, y: Tensor) -> Tensor:
    """[N, M]: ``[i, j] = log p(y_j | x_i)`` of the mean-field encoder (the sum of :func:`dim_log_density`)."""
    return dim_log_density(mu, logvar, y).sum(0)


def gaussian_kl(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """[N]: KL(N(mu1, diag e^logvar1) || N(mu2, diag e^logvar2)), closed form, summed over the latent dims."""
    return 0.5 * (logvar2 - logvar1 + (torch.exp(logvar1) + (mu1 - mu2) ** 2) * torch.exp(-logvar2) - 1.0).sum(-1)


__all__ = ["DSpritesEncoder", "dim_log_density", "gaussian_kl", "log_density"]
