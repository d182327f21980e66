"""The estimator contract: an :class:`Estimate` computed from one score matrix.

``scores[i, j] = T(x_i, y_j)``. Two boolean masks say which entries are joint
(positive) pairs and which are product-of-marginals pairs; by default (``None``)
the joint pairs are the diagonal of a square matrix and the marginal pairs are
everything off it (Poole et al. 2019, §2.3). All reductions here are masked
reductions with static shapes, so nothing forces a host sync on an accelerator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import Tensor


@dataclass
class Estimate:
    """What every estimator returns (all 0-d tensors).

    mi:       the reported value (what tables show)
    loss:     what the optimizer minimizes (differs from -mi for JS, SMILE-JS, Re*, EMA-MINE)
    joint:    the first term, E_P[T]
    marginal: the second term (log-partition for DV-type bounds, partition for NWJ-type bounds)
    extras:   optional named terms (e.g. the regularizer value)
    """

    mi: Tensor
    loss: Tensor
    joint: Tensor
    marginal: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@lru_cache(maxsize=32)
def _diag_masks(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    eye = torch.eye(n, dtype=torch.bool, device=device)
    return eye, ~eye


def resolve_masks(scores: Tensor, joint: Tensor | None, marginal: Tensor | None) -> tuple[Tensor, Tensor]:
    """Return (joint, marginal) boolean masks, defaulting to diagonal / off-diagonal."""
    if joint is None and marginal is None:
        n, m = scores.shape
        if n != m:
            raise ValueError(f"default masks need a square score matrix, got {tuple(scores.shape)}")
        return _diag_masks(n, scores.device)
    if joint is None or marginal is None:
        raise ValueError("give both the joint and the marginal mask, or neither")
    return joint, marginal


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over the True entries of ``mask``."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / mask.sum()


def masked_logmeanexp(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """log of the mean of exp(x) over the True entries of ``mask`` (all of them, or along ``dim``)."""
    filled = x.masked_fill(~mask, float("-inf"))
    if dim is None:
        return torch.logsumexp(filled.flatten(), dim=0) - torch.log(mask.sum().to(x.dtype))
    return torch.logsumexp(filled, dim=dim) - torch.log(mask.sum(dim=dim).to(x.dtype))


def log_loo_mean_exp(scores: Tensor) -> Tensor:
    """``out[i, j] = log( 1/(M-1) * sum_{k != j} exp(scores[i, k]) )`` (leave-one-out along rows).

    Uses ``log(sum_all - e^{s_ij}) = lse_i + log(-expm1(-(lse_i - s_ij)))``, which is stable
    whether or not s_ij dominates the row (Poole et al. code, ``compute_log_loomean``).
    """
    lse = torch.logsumexp(scores, dim=1, keepdim=True)
    d = (lse - scores).clamp_min(torch.finfo(scores.dtype).tiny)
    return lse + torch.log(-torch.expm1(-d)) - math.log(scores.shape[1] - 1)
