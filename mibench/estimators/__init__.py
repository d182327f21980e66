"""Estimator registry. Adding an estimator = a function in ``bounds.py``, a YAML in
``conf/estimator/`` and one line in ``REGISTRY`` below (see README, "Adding an estimator")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import bounds
from .base import Estimate, masked_logmeanexp, masked_mean, resolve_masks
from .modules import EmaDV, Estimator, EtaDV, LearnedBaseline, mlp
from .regularized import DISTANCES, regularize, regularizer


@dataclass(frozen=True)
class Spec:
    fn: Callable[..., Estimate]
    module: type[Estimator] = Estimator
    regularized: bool = False
    shift: float = 0.0  # log Z = log E_Q[e^T] - shift for this bound's partition term (log-Euclidean distance)
    defaults: tuple[tuple[str, Any], ...] = ()  # Table 1 settings, used when the config leaves them out
    trainable: bool = True  # False: a bound that needs the true critic (evaluation only, e.g. loo_upper)


REGISTRY: dict[str, Spec] = {
    "dv": Spec(bounds.dv),
    "mine": Spec(bounds.dv, EmaDV),
    "nwj": Spec(bounds.nwj, shift=1.0),
    "tuba": Spec(bounds.tuba, LearnedBaseline),
    "infonce": Spec(bounds.infonce),
    "js": Spec(bounds.js, shift=1.0),
    "smile": Spec(bounds.smile),
    "smile_js": Spec(bounds.smile_js),
    "alpha": Spec(bounds.interpolated, LearnedBaseline, defaults=(("alpha", 0.01), ("baseline", "learned"))),
    "eta_mine": Spec(bounds.eta_dv, EtaDV, defaults=(("eta_lr", 0.01),)),
    "loo_upper": Spec(bounds.loo, trainable=False),  # Poole eq. 13, needs log p(y|x) + c(y) as scores
    # Choi & Lee Table 1: distance, C* and tau per regularized estimator
    "remine": Spec(bounds.dv, regularized=True, defaults=(("distance", "euclidean"), ("c_star", 0.0))),
    "renwj": Spec(bounds.nwj, regularized=True, shift=1.0,
                  defaults=(("distance", "log_euclidean"), ("c_star", 0.0), ("clip", 10.0))),
    "reinfonce": Spec(bounds.infonce, regularized=True, defaults=(("distance", "euclidean"), ("c_star", 0.0))),
    "resmile": Spec(bounds.smile, regularized=True, defaults=(("distance", "euclidean"), ("c_star", 0.0), ("clip", 10.0))),
    "retuba": Spec(bounds.tuba, LearnedBaseline, regularized=True,
                   defaults=(("distance", "log_euclidean"), ("c_star", 0.0), ("clip", 10.0))),
    "rejs": Spec(bounds.js, regularized=True, shift=1.0, defaults=(("distance", "euclidean"), ("c_star", 1.0))),
}

REG_KEYS = ("lam", "c_star", "distance")


def build_estimator(cfg: Mapping[str, Any], dim_y: int | None = None) -> Estimator:
    """Build the estimator named ``cfg['name']`` from its YAML parameters."""
    name = cfg["name"]
    if name not in REGISTRY:
        raise ValueError(f"unknown estimator {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    spec = REGISTRY[name]
    cfg = {**dict(spec.defaults), **cfg}
    params = {k: v for k, v in cfg.items() if k != "name" and k not in REG_KEYS}
    reg = None
    if spec.regularized:
        lam = float(cfg.get("lam", 0.1))
        if lam < 0:
            raise ValueError(f"lambda={lam} is negative (valid: lambda >= 0)")
        distance = cfg.get("distance", "euclidean")
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r} (valid: {', '.join(DISTANCES)})")
        reg = {"lam": lam, "c_star": float(cfg.get("c_star", 0.0)), "distance": distance, "shift": spec.shift}
    return spec.module(spec.fn, params, reg, dim_y=dim_y)


__all__ = ["Estimate", "Estimator", "REGISTRY", "Spec", "build_estimator", "bounds", "regularize", "regularizer",
           "masked_mean", "masked_logmeanexp", "resolve_masks", "mlp", "DISTANCES"]
