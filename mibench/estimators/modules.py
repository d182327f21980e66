"""Estimators as small nn.Modules: the pure bounds plus whatever state a bound needs.

``Estimator.forward(scores, joint=None, marginal=None, y=None) -> Estimate``. Stateless
bounds use :class:`Estimator` itself; MINE's EMA, TUBA's learned a(y), I_alpha's q(y) and
eta-MINE's eta live in the subclasses below and still call the functions in ``bounds.py``.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from . import bounds
from .base import Estimate
from .regularized import regularize


def mlp(dim_in: int, dim_out: int, hidden: int | Sequence[int] = 256, layers: int | None = 2, activation: str = "relu",
        out_bias: bool = True) -> nn.Sequential:
    """``layers`` hidden layers of width ``hidden`` (Poole et al. / Choi & Lee critics: 2 x 256, ReLU), or one
    hidden layer per width of a list (the Beyond-Normal critic: ``hidden=[16, 8]``).

    ``out_bias=False`` drops the last layer's bias (Choi & Lee's one-hot critic).
    """
    acts = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}
    if activation not in acts:
        raise ValueError(f"unknown activation {activation!r} (valid: {', '.join(acts)})")
    if isinstance(hidden, int):
        widths = [hidden] * int(layers if layers is not None else 2)
    else:
        widths = [int(h) for h in hidden]
        if layers is not None and layers != len(widths):
            raise ValueError(f"critic.layers={layers} does not match critic.hidden={widths} "
                             f"(valid: layers={len(widths)} or null with a list of widths)")
    mods: list[nn.Module] = []
    d = dim_in
    for width in widths:
        mods += [nn.Linear(d, width), acts[activation]()]
        d = width
    mods.append(nn.Linear(d, dim_out, bias=out_bias))
    return nn.Sequential(*mods)


class Estimator(nn.Module):
    """A bound ``fn(scores, joint, marginal, **params)``, optionally wrapped by Choi & Lee's regularizer."""

    own_params: tuple[str, ...] = ()

    def __init__(self, fn: Callable[..., Estimate], params: dict[str, Any] | None = None,
                 reg: dict[str, Any] | None = None, dim_y: int | None = None):
        super().__init__()
        self.fn = fn
        params = dict(params or {})
        self.options = {k: params.pop(k) for k in self.own_params if k in params}
        accepted = [p for p in inspect.signature(fn).parameters if p not in ("scores", "joint", "marginal")]
        accepted += list(self.own_params)
        bad = [k for k in params if k not in accepted]
        if bad:
            raise ValueError(f"estimator parameter {bad[0]!r} is not known (valid: {', '.join(accepted) or 'none'})")
        self.params = params
        self.reg = reg

    def base(self, scores: Tensor, joint: Tensor | None, marginal: Tensor | None, y: Tensor | None) -> Estimate:
        return self.fn(scores, joint, marginal, **self.params)

    def forward(self, scores: Tensor, joint: Tensor | None = None, marginal: Tensor | None = None,
                y: Tensor | None = None) -> Estimate:
        est = self.base(scores, joint, marginal, y)
        if self.reg is not None:
            est = regularize(est, scores, joint, marginal, **self.reg)
        return est

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups for this estimator's own parameters (empty when it has none)."""
        ps = [p for p in self.parameters() if p.requires_grad]
        return [{"params": ps, "lr": lr}] if ps else []


class EmaDV(Estimator):
    """MINE: the DV value, optionally with the bias-corrected EMA gradient of Belghazi et al. (§3.2).

    With ``ema`` the gradient of log E_Q[e^T] is E_Q[grad T e^T] / ma, ma an exponential moving
    average of E_Q[e^T] over batches; the reported value is still the DV value. Off by default
    (Choi & Lee Table 1: "no gradient moving average").
    """

    own_params = ("ema", "ema_rate")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ema = bool(self.options.get("ema", False))
        self.rate = float(self.options.get("ema_rate", 0.01))
        self.register_buffer("log_ema", torch.zeros(()))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def base(self, scores, joint, marginal, y):
        est = bounds.dv(scores, joint, marginal)
        if not (self.ema and self.training):
            return est
        log_m = est.marginal.detach()
        mixed = torch.logaddexp(self.log_ema + math.log1p(-self.rate), log_m + math.log(self.rate))
        self.log_ema.copy_(torch.where(self.started, mixed, log_m))  # first batch initialises the average
        self.started.fill_(True)
        corrected = torch.exp(est.marginal - self.log_ema)  # gradient: E[grad T e^T] / ma
        loss = -est.joint + est.marginal.detach() + corrected - corrected.detach()
        return Estimate(mi=est.mi, loss=loss, joint=est.joint, marginal=est.marginal)


class LearnedBaseline(Estimator):
    """Bounds with a per-y baseline: TUBA's log a(y) (Poole eq. 6) or I_alpha's log q(y) (eq. 11).

    ``baseline: constant`` means log a(y) = 0; ``baseline: learned`` is an MLP on y.
    """

    own_params = ("baseline", "baseline_hidden", "baseline_layers")

    def __init__(self, *args: Any, dim_y: int | None = None, **kwargs: Any):
        super().__init__(*args, dim_y=dim_y, **kwargs)
        kind = self.options.get("baseline", "constant")
        if kind not in ("constant", "learned"):
            raise ValueError(f"unknown baseline {kind!r} (valid: constant, learned)")
        self.net: nn.Module | None = None
        if kind == "learned":
            if dim_y is None:
                raise ValueError("a learned baseline needs the dimension of y")
            self.net = mlp(dim_y, 1, self.options.get("baseline_hidden", 256), self.options.get("baseline_layers", 2))

    def log_baseline(self, scores: Tensor, y: Tensor | None) -> Tensor:
        if self.net is None:
            return torch.zeros(scores.shape[1], dtype=scores.dtype, device=scores.device)
        if y is None:
            raise ValueError("a learned baseline needs y")
        return self.net(y.reshape(y.shape[0], -1)).squeeze(-1)

    def base(self, scores, joint, marginal, y):
        if self.fn is bounds.interpolated:
            return bounds.interpolated(scores, self.log_baseline(scores, y), **self.params)
        if self.net is None:
            return self.fn(scores, joint, marginal, **self.params)
        log_b = self.log_baseline(scores, y)
        if "log_baseline" in inspect.signature(self.fn).parameters:
            return self.fn(scores, joint, marginal, log_baseline=log_b, **self.params)
        # a bound without a baseline argument: the critic is T(x, y) - log q(y) (Poole §2.5's structured critics)
        return self.fn(scores - log_b.reshape(1, -1), joint, marginal, **self.params)


class LearnedDensity(Estimator):
    """A normalised q(y) for the rate (Poole eq. 1): a mixture of ``components`` diagonal Gaussians.

    log q(y) = logsumexp_c [log pi_c + sum_k log N(y_k; mu_ck, sigma_ck^2)], exact (normalised),
    so that E[log p(y|x) - log q(y)] stays an upper bound for every parameter value.
    """

    own_params = ("components",)

    def __init__(self, *args: Any, dim_y: int | None = None, **kwargs: Any):
        super().__init__(*args, dim_y=dim_y, **kwargs)
        if dim_y is None:
            raise ValueError("a learned q(y) needs the dimension of y")
        c = int(self.options.get("components", 1))
        if c < 1:
            raise ValueError(f"components={c} is invalid (valid: an integer >= 1)")
        g = torch.Generator().manual_seed(0)  # the component means start spread, not on top of each other
        self.mean = nn.Parameter(0.1 * torch.randn(c, dim_y, generator=g) if c > 1 else torch.zeros(c, dim_y))
        self.log_std = nn.Parameter(torch.zeros(c, dim_y))
        self.logits = nn.Parameter(torch.zeros(c))

    def log_q(self, y: Tensor) -> Tensor:
        y = y.reshape(y.shape[0], 1, -1)
        z = (y - self.mean) / self.log_std.exp()
        comp = (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)  # [N, C]
        return torch.logsumexp(comp + torch.log_softmax(self.logits, 0), dim=1)

    def base(self, scores, joint, marginal, y):
        if y is None:
            raise ValueError("a learned q(y) needs y")
        return self.fn(scores, joint, marginal, log_q=self.log_q(y).to(scores.dtype), **self.params)


class EtaDV(Estimator):
    """eta-MINE: the eta-DV bound with a scalar learnable eta on its own learning rate (ICLR-2020 Alg. 1)."""

    own_params = ("eta_init", "eta_lr")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.eta = nn.Parameter(torch.tensor(float(self.options.get("eta_init", 0.0))))
        self.eta_lr = self.options.get("eta_lr")

    def base(self, scores, joint, marginal, y):
        return bounds.eta_dv(scores, self.eta.to(scores.dtype), joint, marginal)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [self.eta], "lr": float(self.eta_lr) if self.eta_lr is not None else lr}]
