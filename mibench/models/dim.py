"""Deep InfoMax networks (Hjelm et al., ICLR 2019): encoder, MI networks, prior discriminator, probes,
and the score layouts that hand DIM's local/global objectives to the registry estimators.

Sources: the DIM slides (../shared/papers/000_*, "Experimental setting", Fig. 1-3, 7, the combined
objective) give the DCGAN-like encoder (conv layers, one fc 1024 layer, a 64-d output Y), the
probes (one hidden layer of 200 units with dropout, on conv / fc / Y), the prior ([0, 1]^64) and
the weights alpha, beta, gamma. What the slides leave open is taken from the authors' code
(github.com/rdevon/DIM, ``basic32x32`` and ``deep_infomax.py``): kernel 4, stride 2, padding 1, BN
everywhere; Y is a plain linear layer; the local MI network is a 1x1-conv "encode and dot-product"
network with a linear shortcut and LayerNorm, the one on Y a fully-connected one (``mi_units`` wide);
the prior discriminator has hidden layers 1000-200; probes use BN and dropout 0.1.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

CONV_SHAPE = (256, 4, 4)   # the last conv layer (probe "conv")
LOCAL_SHAPE = (128, 8, 8)  # the local feature map C_psi(x) (M x M = 8 x 8 locations)
FC_DIM = 1024
LAYERS = ("conv", "fc", "y")


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU())


class DIMEncoder(nn.Module):
    """Hjelm et al.'s 32x32 encoder: conv(64,4,2,1)-BN-ReLU, conv(128)-BN-ReLU, conv(256)-BN-ReLU,
    fc 1024-BN-ReLU, linear -> Y (``global_dim`` = 64, DIM slides "Experimental setting").

    ``forward`` returns ``{"local": [B,128,8,8], "conv": [B,256,4,4], "fc": [B,1024], "y": [B,64]}``.
    """

    def __init__(self, in_channels: int = 3, global_dim: int = 64):
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels, 64)
        self.conv2 = _conv_bn_relu(64, LOCAL_SHAPE[0])
        self.conv3 = _conv_bn_relu(LOCAL_SHAPE[0], CONV_SHAPE[0])
        self.fc = nn.Sequential(nn.Linear(CONV_SHAPE[0] * 16, FC_DIM), nn.BatchNorm1d(FC_DIM), nn.ReLU())
        self.out = nn.Linear(FC_DIM, global_dim)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        local = self.conv2(self.conv1(x))
        conv = self.conv3(local)
        fc = self.fc(conv.flatten(1))
        return {"local": local, "conv": conv, "fc": fc, "y": self.out(fc)}


def _identity_like_(weight: Tensor) -> None:
    """Shortcut initialised as a noisy copy of its input (authors' code): U(-0.01, 0.01) plus identity."""
    with torch.no_grad():
        weight.uniform_(-0.01, 0.01)
        n = min(weight.shape[0], weight.shape[1])
        idx = torch.arange(n)
        weight.view(weight.shape[0], weight.shape[1], -1)[idx, idx, :] = 1.0


class LocalMINet(nn.Module):
    """1x1-conv MI network on the local map: [B, C, H, W] -> [B, units, H*W] (one vector per location).

    conv1x1 - BN - ReLU - conv1x1, plus a linear 1x1 shortcut, then LayerNorm over channels.
    """

    def __init__(self, c_in: int, units: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c_in, units, 1, bias=False), nn.BatchNorm2d(units), nn.ReLU(),
                                   nn.Conv2d(units, units, 1))
        self.shortcut = nn.Conv2d(c_in, units, 1, bias=False)
        if units >= c_in:
            _identity_like_(self.shortcut.weight)
        self.norm = nn.LayerNorm(units)

    def forward(self, x: Tensor) -> Tensor:
        h = self.block(x) + self.shortcut(x)  # [B, U, H, W]
        return self.norm(h.flatten(2).transpose(1, 2)).transpose(1, 2)  # LayerNorm over U: [B, U, HW]


class GlobalMINet(nn.Module):
    """Fully-connected MI network on Y: linear - BN - ReLU - linear, plus a linear shortcut. [B, d] -> [B, units]."""

    def __init__(self, d_in: int, units: int):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(d_in, units), nn.BatchNorm1d(units), nn.ReLU(), nn.Linear(units, units))
        self.shortcut = nn.Linear(d_in, units)
        if units >= d_in:
            _identity_like_(self.shortcut.weight)

    def forward(self, y: Tensor) -> Tensor:
        return self.block(y) + self.shortcut(y)


class MapMINet(nn.Module):
    """Global DIM's MI network on the whole local map: the encoder's later layers with the last one
    replaced by a linear layer of ``units`` (authors' GlobalDIM): conv(256,4,2,1)-BN-ReLU, fc 1024-BN-ReLU,
    linear. [B, 128, 8, 8] -> [B, units]."""

    def __init__(self, units: int):
        super().__init__()
        self.net = nn.Sequential(_conv_bn_relu(LOCAL_SHAPE[0], CONV_SHAPE[0]), nn.Flatten(),
                                 nn.Linear(CONV_SHAPE[0] * 16, FC_DIM), nn.BatchNorm1d(FC_DIM), nn.ReLU(),
                                 nn.Linear(FC_DIM, units))

    def forward(self, local: Tensor) -> Tensor:
        return self.net(local)


class PriorDiscriminator(nn.Module):
    """D_phi: Y -> R for prior matching (DIM slides Fig. 7): hidden layers 1000 and 200, ReLU (authors' code)."""

    def __init__(self, dim: int = 64, hidden: tuple[int, ...] = (1000, 200)):
        super().__init__()
        mods: list[nn.Module] = []
        d = dim
        for h in hidden:
            mods += [nn.Linear(d, h), nn.ReLU()]
            d = h
        mods.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


def make_probe(kind: str, d_in: int, num_classes: int, hidden: int = 200, dropout: float = 0.1) -> nn.Module:
    """``mlp``: the DIM probe, one hidden layer of 200 units with BN, dropout, ReLU (DIM slides, Table 1
    note; BN and dropout 0.1 from the authors' code); ``linear``: a linear classifier."""
    if kind == "linear":
        return nn.Linear(d_in, num_classes)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.Dropout(dropout), nn.ReLU(),
                             nn.Linear(hidden, num_classes))
    raise ValueError(f"unknown probe {kind!r} (valid: mlp, linear)")


# ---------------------------------------------------------------------------------------------
# score layouts (what the registry estimators consume)


def local_score_tensor(g: Tensor, l: Tensor) -> Tensor:
    """``s[i, j, k] = <g_i, l_j[:, k]>``: global vector of image i against location k of image j.

    g: [B, D] (MI network on Y), l: [B, D, HW] (MI network on the local map). One batched einsum.
    """
    return torch.einsum("id,jdk->ijk", g, l)


@lru_cache(maxsize=8)
def local_masks(b: int, hw: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Masks for :func:`local_scores`: joint = the columns of row i's own image, marginal = the others."""
    img = torch.arange(b, device=device).repeat_interleave(hw)
    same = torch.arange(b, device=device).unsqueeze(1) == img.unsqueeze(0)
    return same, ~same


def local_scores(s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Local DIM as one [B, B*HW] score matrix with joint / marginal masks.

    Row i: the global vector of image i; column (j, k): location k of image j; ``scores[i, (j, k)] =
    s[i, j, k]``. joint: j = i (the HW positive (image, location) pairs of row i); marginal: j != i
    (every location of every other image in the batch: the negatives of the DIM slides and the
    authors' code). An average-type bound (JS, DV, NWJ, ...) thus averages over all B*HW positive
    pairs and all B*(B-1)*HW negative pairs (the authors' ``fenchel_dual_loss``); InfoNCE, built with
    ``partition="pair"``, scores each positive pair against itself plus the (B-1)*HW negatives of its
    row (the authors' ``nce_loss``, whose self-image negatives are masked here exactly instead of by a
    -10 shift).
    """
    b, _, hw = s.shape
    joint, marginal = local_masks(b, hw, s.device)
    return s.reshape(b, b * hw), joint, marginal


def global_scores(g: Tensor, m: Tensor) -> Tensor:
    """Global DIM: ``scores[i, j] = <g_i, m_j>`` with g from Y and m from the whole local map of image j.

    A square matrix: the registry's default masks (joint = diagonal, marginal = off-diagonal) apply.
    """
    return g @ m.t()


def prior_scores(d_prior: Tensor, d_fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Prior matching as a 1 x 2B score row: prior samples first (the "joint"), encoder outputs second."""
    n = d_prior.shape[0]
    scores = torch.cat([d_prior, d_fake]).unsqueeze(0)
    real = torch.zeros_like(scores, dtype=torch.bool)
    real[:, :n] = True
    return scores, real, ~real
