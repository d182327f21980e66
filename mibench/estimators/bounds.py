"""MI bounds as pure functions of a score matrix (Poole et al. 2019 style).

Each function takes ``scores[i, j] = T(x_i, y_j)`` and optional boolean ``joint`` /
``marginal`` masks (default: diagonal / off-diagonal) and returns an :class:`Estimate`.
Regularizers (``regularized.py``) and stateful variants (``modules.py``) call these.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Estimate, log_loo_mean_exp, masked_logmeanexp, masked_mean, resolve_masks

Mask = Tensor | None


def _clip(scores: Tensor, clip: float | None) -> Tensor:
    return scores if clip is None else scores.clamp(-clip, clip)


def dv(scores: Tensor, joint: Mask = None, marginal: Mask = None) -> Estimate:
    """Donsker-Varadhan / MINE: E_P[T] - log E_Q[e^T] (Choi & Lee eq. 4; Poole eq. 5)."""
    jm, mm = resolve_masks(scores, joint, marginal)
    j = masked_mean(scores, jm)
    m = masked_logmeanexp(scores, mm)
    mi = j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def _joint(scores: Tensor, jm: Tensor, clip: float | None, clip_joint: bool) -> Tensor:
    """E_P[T], with T clamped to [-tau, tau] when ``clip_joint`` (Choi & Lee's code clips both terms)."""
    return masked_mean(_clip(scores, clip) if clip_joint else scores, jm)


def smile(scores: Tensor, joint: Mask = None, marginal: Mask = None, clip: float = 10.0,
          clip_joint: bool = False) -> Estimate:
    """SMILE: DV with the partition's e^T clipped to [e^-tau, e^tau] (Choi & Lee eq. 9).

    Trained on its own value, as in Choi & Lee's code; see ``smile_js`` for Song & Ermon's
    JS-trained variant. ``clip_joint``: clamp the joint term's T as well (Choi & Lee's SLB/CLB code).
    """
    jm, mm = resolve_masks(scores, joint, marginal)
    j = _joint(scores, jm, clip, clip_joint)
    m = masked_logmeanexp(_clip(scores, clip), mm)
    mi = j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def nwj(scores: Tensor, joint: Mask = None, marginal: Mask = None, clip: float | None = None,
        clip_joint: bool = False) -> Estimate:
    """NWJ / f-GAN KL: E_P[T] - E_Q[e^(T-1)] (Choi & Lee eq. 6; Poole eq. 7).

    ``clip`` (tau) clamps the scores inside the exponential only, as SMILE does; with ``clip_joint``
    the joint term's T is clamped too (Choi & Lee's code for ReNWJ / ReTUBA).
    """
    jm, mm = resolve_masks(scores, joint, marginal)
    j = _joint(scores, jm, clip, clip_joint)
    m = torch.exp(masked_logmeanexp(_clip(scores, clip) - 1.0, mm))
    mi = j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def tuba(
    scores: Tensor,
    joint: Mask = None,
    marginal: Mask = None,
    log_baseline: Tensor | None = None,
    clip: float | None = None,
    clip_joint: bool = False,
) -> Estimate:
    """TUBA: 1 + E_P[T - log a(y)] - E_Q[e^T / a(y)] (Poole eq. 6; Choi & Lee eq. 7).

    ``log_baseline[j] = log a(y_j)`` (one per column); None means a(y) = 1 (Choi & Lee Table 1).
    The joint term is reported with the baseline subtracted, as in Poole et al.'s code.
    ``clip`` clamps T - log a(y) inside the exponential; ``clip_joint`` in the joint term too.
    """
    jm, mm = resolve_masks(scores, joint, marginal)
    shifted = scores if log_baseline is None else scores - log_baseline.reshape(1, -1)
    j = _joint(shifted, jm, clip, clip_joint)
    m = torch.exp(masked_logmeanexp(_clip(shifted, clip), mm))
    mi = 1.0 + j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def infonce(scores: Tensor, joint: Mask = None, marginal: Mask = None, partition: str = "row") -> Estimate:
    """InfoNCE: mean over joint pairs (i, j) of T_ij - log mean_k e^{T_ik} (Poole eq. 10; Choi & Lee eq. 5).

    ``partition="row"``: row i's partition runs over its joint and marginal entries. With the default
    masks this is the usual K-sample bound (<= log K); with SLB's one-hot mask it is cross-entropy + log C.
    ``partition="pair"``: each joint pair (i, j) is scored against itself plus row i's marginal entries
    that are not joint ones, K = 1 + that count (rows with several positives, e.g. local DIM: every
    location of image i is a positive for its global vector, the other images' locations the negatives;
    Hjelm et al.'s NCE objective). Identical to "row" when every row holds one joint entry.
    """
    jm, mm = resolve_masks(scores, joint, marginal)
    j = masked_mean(scores, jm)
    if partition == "row":
        row_lme = masked_logmeanexp(scores, jm | mm, dim=1)  # [N]
        m = masked_mean(row_lme.unsqueeze(1).expand_as(scores), jm)
    elif partition == "pair":
        neg = mm & ~jm
        log_neg = torch.logsumexp(scores.masked_fill(~neg, float("-inf")), dim=1, keepdim=True)  # [N, 1]
        k = 1.0 + neg.sum(dim=1, keepdim=True).to(scores.dtype)
        m = masked_mean(torch.logaddexp(scores, log_neg) - torch.log(k), jm)
    else:
        raise ValueError(f"unknown partition {partition!r} (valid: row, pair)")
    mi = j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def tnce(scores: Tensor, joint: Mask = None, marginal: Mask = None) -> Estimate:
    """InfoNCE with a tractable conditional (Poole eq. 12): mean_i log p(y_i|x_i) / (1/K sum_j p(y_i|x_j)).

    ``scores[i, j] = log p(y_j | x_i)``. The partition of eq. 12 runs over the x's for each y (a column of
    ``scores``), where :func:`infonce`'s runs over the y's for each x: log p(y|x) is an optimal critic for
    the former (a per-y term cancels), not for the latter. A lower bound with no learned parameters.
    """
    jm, mm = resolve_masks(scores, joint, marginal)
    return infonce(scores.t(), jm.t(), mm.t())


def js_fgan(scores: Tensor, joint: Mask = None, marginal: Mask = None) -> Tensor:
    """f-GAN lower bound on the Jensen-Shannon divergence: E_P[-sp(-T)] - E_Q[sp(T)] (Nowozin et al.)."""
    jm, mm = resolve_masks(scores, joint, marginal)
    return masked_mean(-F.softplus(-scores), jm) - masked_mean(F.softplus(scores), mm)


JS_VALUES = ("nwj", "nwj_shifted", "js_fgan")


def js(scores: Tensor, joint: Mask = None, marginal: Mask = None, value: str = "nwj") -> Estimate:
    """I_JS: critic trained with the f-GAN JS objective, MI reported with NWJ (Poole §2.6).

    ``value`` is what is reported: ``nwj`` = NWJ(T) (Poole's and Choi & Lee's code; at the JS optimum
    T* = log p/q this is I - 1/e, since E_Q[e^(T*-1)] = 1/e), ``nwj_shifted`` = NWJ(T + 1) = E_P[T] + 1
    - E_Q[e^T] (= I at the JS optimum), ``js_fgan`` = the f-GAN JS value itself (what Choi & Lee's
    Gaussian script reports for JS, a divergence <= log 2, not an MI estimate).
    """
    if value == "nwj":
        est = nwj(scores, joint, marginal)
    elif value == "nwj_shifted":
        est = nwj(scores + 1.0, joint, marginal)
    elif value == "js_fgan":
        jm, mm = resolve_masks(scores, joint, marginal)
        j, m = masked_mean(-F.softplus(-scores), jm), masked_mean(F.softplus(scores), mm)
        est = Estimate(mi=j - m, loss=m - j, joint=j, marginal=m)
    else:
        raise ValueError(f"unknown value {value!r} (valid: {', '.join(JS_VALUES)})")
    return Estimate(mi=est.mi, loss=-js_fgan(scores, joint, marginal), joint=est.joint, marginal=est.marginal)


def smile_js(scores: Tensor, joint: Mask = None, marginal: Mask = None, clip: float = 10.0) -> Estimate:
    """Song & Ermon's SMILE: trained with JS, reported with the clipped DV value."""
    est = smile(scores, joint, marginal, clip)
    return Estimate(mi=est.mi, loss=-js_fgan(scores, joint, marginal), joint=est.joint, marginal=est.marginal)


def eta_dv(scores: Tensor, eta: Tensor, joint: Mask = None, marginal: Mask = None) -> Estimate:
    """eta-DV: E_P[T] - (e^-eta E_Q[e^T] + eta - 1) (ICLR-2020 submission eq. 20, Algorithm 1).

    Minimising the partition term over eta gives eta = log E_Q[e^T] and recovers DV.
    """
    jm, mm = resolve_masks(scores, joint, marginal)
    j = masked_mean(scores, jm)
    m = torch.exp(masked_logmeanexp(scores, mm) - eta) + eta - 1.0
    mi = j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def interpolated(scores: Tensor, log_baseline: Tensor, alpha: float) -> Estimate:
    """I_alpha, the interpolated bound of Poole eq. 11, with leave-one-out (Poole §2.4).

    The critic is 1 + log e^{T(x_i, y)} / (alpha m(y; x_{-j}) + (1 - alpha) q(y)), where
    m is the leave-one-out mean of e^T over the batch's other x and ``log_baseline[j] = log q(y_j)``.
    alpha = 1 recovers InfoNCE's normaliser, alpha -> 0 the TUBA/NWJ one. Paired batches only.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError("the interpolated bound needs a square score matrix of paired samples")
    jm, mm = resolve_masks(scores, None, None)
    s = scores.t()  # s[i, j] = T(x_j, y_i): rows index y, as in Poole et al.'s code
    nce_baseline = log_loo_mean_exp(s)  # [y_i, leave out x_j]
    log_q = log_baseline.reshape(-1, 1).expand_as(s)
    log_a = math.log(alpha)
    log_1ma = math.log1p(-alpha) if alpha < 1.0 else float("-inf")
    base = torch.logaddexp(log_a + nce_baseline, log_1ma + log_q)
    critic_marg = s - torch.diagonal(base).unsqueeze(1)  # y_i with x_j (j != i), baseline leaves x_i out
    m = torch.exp(masked_logmeanexp(critic_marg, mm))
    critic_joint = torch.diagonal(s).unsqueeze(1) - base  # y_i with x_i, baseline leaves x_j out
    j = masked_mean(critic_joint, mm)
    mi = 1.0 + j - m
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


def rate(scores: Tensor, joint: Mask = None, marginal: Mask = None, log_q: Tensor | None = None) -> Estimate:
    """Variational upper bound, the rate R = E_p(x)[KL(p(y|x) || q(y))] >= I(X; Y) (Poole eq. 1).

    ``scores[i, j] = log p(y_j | x_i)``, the encoder's normalised log-density; ``log_q[j] = log q(y_j)``
    for a normalised q (any constant dropped from one must be dropped from the other). The Monte Carlo
    estimate is the mean over joint pairs of log p(y|x) - log q(y); it equals I(X; Y) in expectation
    when q = p(y). The marginal entries are not used. loss = mi: q is fitted by minimising the bound.
    """
    if log_q is None:
        raise ValueError("the rate needs log q(y) for every score column")
    jm, _ = resolve_masks(scores, joint, marginal)
    j = masked_mean(scores, jm)
    m = masked_mean(log_q.reshape(1, -1).expand_as(scores), jm)
    mi = j - m
    return Estimate(mi=mi, loss=mi, joint=j, marginal=m)


def tc_upper(dim_scores: Tensor, lower: Tensor) -> Tensor:
    """Upper bound on the total correlation of a mean-field representation (Poole §2.5):
    TC(Y) = sum_k I(X; Y_k) - I(X; Y) <= sum_k LOO_k - lower.

    ``dim_scores[k, i, j] = log p(y_jk | x_i)``, the encoder's log-density of coordinate k (a
    mean-field encoder: log p(y|x) = sum_k of these); each I(X; Y_k) is bounded above by the
    leave-one-out bound (eq. 13) and ``lower`` is any lower bound on I(X; Y) (eq. 12, I_JS, ...).
    """
    n = dim_scores.shape[-1]
    if dim_scores.dim() != 3 or dim_scores.shape[-2] != n:
        raise ValueError(f"tc_upper needs [dims, K, K] log-densities, got {tuple(dim_scores.shape)}")
    eye = torch.eye(n, dtype=torch.bool, device=dim_scores.device)
    joint = torch.diagonal(dim_scores, dim1=-2, dim2=-1).mean(-1)  # [dims]
    by_y = dim_scores.transpose(-2, -1).masked_fill(eye, float("-inf"))  # [k, y_i, x_j], x_i left out
    other = (torch.logsumexp(by_y, dim=-1) - math.log(n - 1)).mean(-1)  # [dims]
    return (joint - other).sum() - lower


def loo_upper(log_cond: Tensor) -> Tensor:
    """Leave-one-out upper bound (Poole eq. 13) from ``log_cond[i, j] = log p(y_j | x_i)``.

    mean_i [ log p(y_i|x_i) - log 1/(K-1) sum_{j != i} p(y_i|x_j) ]. Needs the true conditional.
    """
    n = log_cond.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=log_cond.device)
    other = torch.logsumexp(log_cond.t().masked_fill(eye, float("-inf")), dim=1) - math.log(n - 1)
    return (torch.diagonal(log_cond) - other).mean()


def loo(scores: Tensor, joint: Mask = None, marginal: Mask = None) -> Estimate:
    """Leave-one-out upper bound (Poole eq. 13) as an estimator on a square score matrix.

    ``scores[i, j] = log p(y_j | x_i) + c(y_j)``: any per-column c(y) cancels, so the optimal
    critic f*(x, y) = log p(y|x) - log p(y) works as well as the true log-conditional. The value is
    an upper bound on MI only when the scores are such a log-conditional; with a learned critic it
    is neither bound, so the registry marks it evaluation-only. joint = mean_i scores[i, i],
    marginal = mean_i log 1/(K-1) sum_{j != i} e^{scores[j, i]}; loss = mi (an upper bound is minimised).
    """
    if joint is not None or marginal is not None:
        raise ValueError("the leave-one-out bound uses the diagonal as positives: no explicit masks")
    n = scores.shape[0]
    if scores.shape[1] != n:
        raise ValueError("the leave-one-out bound needs a square score matrix of paired samples")
    jm, mm = resolve_masks(scores, None, None)
    j = masked_mean(scores, jm)
    other = masked_logmeanexp(scores.t(), mm, dim=1)  # row i of scores.t() is y_i against every x_j
    m = other.mean()
    mi = j - m
    return Estimate(mi=mi, loss=mi, joint=j, marginal=m)
