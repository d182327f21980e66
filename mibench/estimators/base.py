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

    Exact in O(N M): the sum without column j is the log-add of a prefix and a suffix cumulative
    log-sum-exp, so no cancellation even when scores[i, j] dominates its row.
    """
    m = scores.shape[1]
    neg_inf = torch.full_like(scores[:, :1], float("-inf"))
    prefix = torch.cat([neg_inf, torch.logcumsumexp(scores, dim=1)[:, :-1]], dim=1)  # sum over k < j
    suffix = torch.cat([torch.logcumsumexp(scores.flip(1), dim=1).flip(1)[:, 1:], neg_inf], dim=1)  # k > j
    return torch.logaddexp(prefix, suffix) - math.log(m - 1)
