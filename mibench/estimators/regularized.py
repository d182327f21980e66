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
Choi & Lee's code regularises ReNWJ with (L - C*)^2 instead (no shift): ``distance: euclidean``.

What is regularised (``reg_term``):
  log_partition  L = log E_Q[e^T] over the marginal mask (default; the paper's eq. 10-15)
  softplus       S = E_Q[softplus(T)], the f-GAN JS marginal term: d = (S - C*)^2 (Choi & Lee's ReJS
                 code: C* = 1 on SLB/CLB, 0 on the Gaussian)
  bound          the base bound's own log-partition, ``base.marginal`` (ReInfoNCE in Choi & Lee's code:
                 InfoNCE's mean over rows of the row's log-mean-exp); DV-type bounds only
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import Estimate, masked_logmeanexp, masked_mean, resolve_masks

DISTANCES = ("euclidean", "log_euclidean")
REG_TERMS = ("log_partition", "softplus", "bound")


def regularizer(
    scores: Tensor,
    marginal_mask: Tensor,
    c_star: float,
    distance: str = "euclidean",
    shift: float = 0.0,
    term: str = "log_partition",
    base_marginal: Tensor | None = None,
) -> Tensor:
    """d(log-partition of the marginal scores, C*) — Choi & Lee eq. 10-11 without lambda.

    ``term`` picks the regularised quantity (module docstring); ``softplus`` and ``bound`` use the
    Euclidean distance (v - C*)^2, ``bound`` the bound's own ``base_marginal``.
    """
    if term == "softplus":
        return (masked_mean(F.softplus(scores), marginal_mask) - c_star) ** 2
    if term == "bound":
        if base_marginal is None:
            raise ValueError("reg_term=bound needs the base bound's marginal term")
        return (base_marginal - c_star) ** 2
    if term != "log_partition":
        raise ValueError(f"unknown reg_term {term!r} (valid: {', '.join(REG_TERMS)})")
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
    term: str = "log_partition",
) -> Estimate:
    """Wrap a base :class:`Estimate` with Choi & Lee's regularizer (loss only)."""
    _, mm = resolve_masks(scores, joint, marginal)
    reg = regularizer(scores, mm, c_star, distance, shift, term, base.marginal)
    extras = dict(base.extras)
    extras["reg"] = reg
    return Estimate(mi=base.mi, loss=base.loss + lam * reg, joint=base.joint, marginal=base.marginal, extras=extras)
