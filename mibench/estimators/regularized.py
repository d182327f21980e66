"""The regularizer of Choi & Lee (eq. 10-15, Table 1) as a wrapper around any bound.

loss = base.loss + lambda * d(log-partition, C*);  mi, joint, marginal = the base's.
The regularizer reaches the gradient only (the reported value is the unregularized
estimate) and always uses the *unclipped* log-mean-exp L = log E_Q[e^T] of the
marginal scores, even when the base bound clips (ReSMILE, ReNWJ, ReTUBA), as in the
authors' code.

Distances, with C* always on the log scale:
  euclidean      d = (L - C*)^2                     ReMINE eq. 14, ReSMILE, ReInfoNCE, ReJS
  log_euclidean  d = (log Z - C*)^2, Z = E_Q[e^(T - shift)]
                 i.e. (L - shift - C*)^2            ReNWJ eq. 15 (shift 1), ReTUBA (shift 0)
For ReNWJ, C* = 0 is the paper's "C* = 1" (Z -> 1, the NWJ optimum's self-normalisation).
"""
from __future__ import annotations

from torch import Tensor

from .base import Estimate, masked_logmeanexp, resolve_masks

DISTANCES = ("euclidean", "log_euclidean")


def regularizer(
    scores: Tensor,
    marginal_mask: Tensor,
    c_star: float,
    distance: str = "euclidean",
    shift: float = 0.0,
) -> Tensor:
    """d(log-partition of the marginal scores, C*) — Choi & Lee eq. 10-11 without lambda."""
    log_partition = masked_logmeanexp(scores, marginal_mask)
    if distance == "euclidean":
        return (log_partition - c_star) ** 2
    if distance == "log_euclidean":
        return (log_partition - shift - c_star) ** 2
    raise ValueError(f"unknown distance {distance!r} (valid: {', '.join(DISTANCES)})")


def regularize(
    base: Estimate,
    scores: Tensor,
    joint: Tensor | None,
    marginal: Tensor | None,
    lam: float,
    c_star: float,
    distance: str = "euclidean",
    shift: float = 0.0,
) -> Estimate:
    """Wrap a base :class:`Estimate` with Choi & Lee's regularizer (loss only)."""
    _, mm = resolve_masks(scores, joint, marginal)
    reg = regularizer(scores, mm, c_star, distance, shift)
    extras = dict(base.extras)
    extras["reg"] = reg
    return Estimate(mi=base.mi, loss=base.loss + lam * reg, joint=base.joint, marginal=base.marginal, extras=extras)
