"""Estimator registry. Adding an estimator = a function in ``bounds.py``, a YAML in
``conf/estimator/`` and one line in ``REGISTRY`` below (see README, "Adding an estimator")."""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..checks import MAX_LAYERS, WIDTHS, Bool, Choice, ConfigError, Int, Maybe, Number, Rule
from . import bounds
from .base import Estimate, masked_logmeanexp, masked_mean, resolve_masks
from .modules import EmaDV, Estimator, EtaDV, LearnedBaseline, LearnedDensity, mlp
from .regularized import DISTANCES, REG_TERMS, regularize, regularizer


REG_KEYS = ("lam", "c_star", "distance", "reg_term")
LAYOUTS = ("any", "rows", "paired")  # what a bound needs of the score matrix, weakest first


# what each parameter may hold, in the one validation vocabulary (mibench.checks): the config's checks, a
# preset's per_estimator table and build_estimator all read these
RANGES: dict[str, Rule] = {
    "lam": Number(0.0, text="lambda >= 0, e.g. 0.1, 0.01, 0.001"),
    "c_star": Number(text="a finite number (log scale)"),
    "clip": Maybe(Number(0.0, lo_open=True), text="a positive tau, or null for no clipping"),
    "alpha": Number(0.0, 1.0, lo_open=True, text="0 < alpha <= 1"),
    "ema_rate": Number(0.0, 1.0, lo_open=True, text="0 < ema_rate <= 1"),
    "eta_lr": Maybe(Number(0.0, lo_open=True), text="a positive learning rate"),
    "clip_joint": Bool("true (clamp the joint term too, Choi & Lee's code) or false"),
    "value": Choice(*bounds.JS_VALUES, text=" | ".join(bounds.JS_VALUES)),
    "reg_term": Choice(*REG_TERMS, text=" | ".join(REG_TERMS)),
    "distance": Choice(*DISTANCES),
    # the learned parts' sizes and starting values
    "baseline": Choice("constant", "learned", text="constant | learned"),
    "baseline_hidden": WIDTHS,
    "baseline_layers": Maybe(Int(0, MAX_LAYERS), "null for 2 (or one per width of a list)"),
    "components": Int(1),
    "eta_init": Number(text="a finite number (eta's starting value)"),
    "ema": Bool(),
}
# bounds whose ``marginal`` is a log-partition, so that ``reg_term: bound`` regularises it
LOG_PARTITION_BOUNDS = (bounds.dv, bounds.infonce, bounds.smile)

# Divergence (docs/estimators.md#divergence): where an estimate may be in a run that has not diverged
STREAK = 10  # steps in a row beyond a practical limit that make divergence (single-sample bounds spike for 1 step)
LOG_K_SLACK = 1e-3  # nats above log K still taken for rounding (the bound is computed in float32)


@dataclass(frozen=True)
class Side:
    """One side of an estimate's valid range: values beyond ``limit`` (above it when ``upper``, one per step or
    one for all) for ``steps`` steps in a row are divergence; ``text`` says what the limit is (``{limit}``: its
    value at the step)."""

    limit: Any
    upper: bool
    steps: int
    text: str


@dataclass(frozen=True)
class Spec:
    """One estimator: its bound, its state and what it needs of a benchmark.

    layout: what the score matrix must be: ``any`` (masked reductions over joint / marginal entries,
            independently drawn pairs will do), ``rows`` (a row-wise partition: row i pairs x_i with its
            positives and negatives, e.g. InfoNCE) or ``paired`` (a square matrix of paired samples with
            the joint pairs on the diagonal, e.g. I_alpha, the leave-one-out bound)
    learns: what the estimator learns besides the critic (``ema``, ``baseline`` (a(y) / q(y), from y when
            ``baseline: learned``), ``eta``, ``density`` (a normalised q(y), from y)), or None
    ceiling: ``log_k`` when the estimate cannot exceed log K, K the candidates of a row's partition (InfoNCE:
            each row's log-mean-exp includes its joint score), else ``none``; see :meth:`valid`
    conditional: True when the scores must be the known encoder's log p(y_j | x_i) (Poole §2.5's structured
            bounds): only a benchmark with a tractable encoder gives them (``Capabilities.conditional``)
    """

    fn: Callable[..., Estimate]
    module: type[Estimator] = Estimator
    regularized: bool = False
    shift: float = 0.0  # log Z = log E_Q[e^T] - shift for this bound's partition term (log-Euclidean distance)
    defaults: tuple[tuple[str, Any], ...] = ()  # Table 1 settings, used when the config leaves them out
    trainable: bool = True  # False: a bound that needs the true critic (evaluation only, e.g. loo_upper)
    layout: str = "any"
    learns: str | None = None
    conditional: bool = False
    ceiling: str = "none"

    def params(self) -> tuple[str, ...]:
        """The parameters its YAML may set."""
        sig = [p for p in inspect.signature(self.fn).parameters if p not in ("scores", "joint", "marginal",
                                                                             "log_baseline", "eta", "log_q")]
        return tuple(sig) + self.module.own_params + (REG_KEYS if self.regularized else ())

    def valid(self, k: int | None, true_mi: Any, above: float | None) -> list[Side]:
        """The sides of this bound's valid range (the one place the divergence rule is written; the table is in
        docs/estimators.md): its own ceiling, log K (one step above it is impossible, so divergence), and, where
        the true MI is known (a number or one per step), +/- ``above`` x max(true MI, 1 nat) for every bound
        (STREAK steps in a row beyond it). ``above`` None: no practical limit."""
        sides = []
        if self.ceiling == "log_k" and k:
            sides.append(Side(math.log(k) + LOG_K_SLACK, True, 1, f"log K = log {k} = {math.log(k):.3g} nats, "
                                                                    f"the bound's ceiling"))
        if above is not None and true_mi is not None:
            scale = above * np.maximum(np.asarray(true_mi, dtype=np.float64), 1.0)
            text = f"{above:g} x max(true MI, 1 nat) = {{limit:.3g}} nats"
            sides += [Side(scale, True, STREAK, text), Side(-scale, False, STREAK, f"-{text}")]
        return sides

    def needs_y(self, cfg: Mapping[str, Any]) -> bool:
        """True when it learns a per-y baseline, i.e. needs the y of every score column."""
        if self.learns == "density":
            return True
        return self.learns == "baseline" and {**dict(self.defaults), **cfg}.get("baseline") == "learned"


REGISTRY: dict[str, Spec] = {
    "dv": Spec(bounds.dv),
    "mine": Spec(bounds.dv, EmaDV, learns="ema"),
    "nwj": Spec(bounds.nwj, shift=1.0),
    "tuba": Spec(bounds.tuba, LearnedBaseline, learns="baseline"),
    "infonce": Spec(bounds.infonce, layout="rows", ceiling="log_k"),
    "js": Spec(bounds.js, shift=1.0),
    "smile": Spec(bounds.smile),
    "smile_js": Spec(bounds.smile_js),
    "alpha": Spec(bounds.interpolated, LearnedBaseline, defaults=(("alpha", 0.01), ("baseline", "learned")),
                  layout="paired", learns="baseline"),
    "eta_mine": Spec(bounds.eta_dv, EtaDV, defaults=(("eta_lr", 0.01),), learns="eta"),
    # Poole §2.5, structured bounds: the scores are the known encoder's log p(y|x) (a tractable conditional)
    "loo_upper": Spec(bounds.loo, trainable=False, layout="paired", conditional=True),  # eq. 13 (+ any c(y))
    "tnce": Spec(bounds.tnce, layout="paired", conditional=True,
                 ceiling="log_k"),  # eq. 12: InfoNCE with f = log p(y|x)
    "rate": Spec(bounds.rate, LearnedDensity, defaults=(("components", 1),), learns="density",
                 conditional=True),  # eq. 1, upper bound, learned normalised q(y)
    "struct_nwj": Spec(bounds.tuba, LearnedBaseline, defaults=(("baseline", "learned"),), learns="baseline",
                       conditional=True),  # eq. 14: f = 1 + log p(y|x)/q(y), unnormalised q
    "struct_alpha": Spec(bounds.interpolated, LearnedBaseline, defaults=(("alpha", 0.01), ("baseline", "learned")),
                         layout="paired", learns="baseline", conditional=True),  # I_alpha, f = log p(y|x)
    "struct_js": Spec(bounds.js, LearnedBaseline, defaults=(("baseline", "learned"), ("value", "nwj_shifted")),
                      learns="baseline", conditional=True),  # I_JS, f = log p(y|x) - log q(y) (§3.1)
    # Choi & Lee Table 1: distance, C* and tau per regularized estimator
    "remine": Spec(bounds.dv, regularized=True, defaults=(("distance", "euclidean"), ("c_star", 0.0))),
    "renwj": Spec(bounds.nwj, regularized=True, shift=1.0,
                  defaults=(("distance", "log_euclidean"), ("c_star", 0.0), ("clip", 10.0))),
    "reinfonce": Spec(bounds.infonce, regularized=True, defaults=(("distance", "euclidean"), ("c_star", 0.0)),
                      layout="rows", ceiling="log_k"),
    "resmile": Spec(bounds.smile, regularized=True, defaults=(("distance", "euclidean"), ("c_star", 0.0), ("clip", 10.0))),
    "retuba": Spec(bounds.tuba, LearnedBaseline, regularized=True,
                   defaults=(("distance", "log_euclidean"), ("c_star", 0.0), ("clip", 10.0)), learns="baseline"),
    "rejs": Spec(bounds.js, regularized=True, shift=1.0, defaults=(("distance", "euclidean"), ("c_star", 1.0))),
}



def check_params(name: str, params: Mapping[str, Any], path: str = "estimator", known: bool = False) -> None:
    """Estimator ``name``'s parameters against :data:`RANGES` and the regularizer's rules that span two keys;
    raises one line naming ``<path>.<key>`` (ConfigError, a ValueError). ``known``: a key that is not a parameter
    of the estimator is an error too (a preset's per_estimator table)."""
    spec = REGISTRY[name]
    for key, v in params.items():
        if key == "name":
            continue
        if known and key not in spec.params():
            raise ConfigError(f"{path}.{key} is not a parameter of estimator={name} (valid: {', '.join(spec.params())})")
        rule = RANGES.get(key) if key in spec.params() else None
        if rule is not None and not rule.ok(v):
            raise ConfigError(f"{path}.{key}={v} is invalid (valid: {rule.text})")
    if spec.regularized:
        term, distance = params.get("reg_term", "log_partition"), params.get("distance", "euclidean")
        if term == "bound" and spec.fn not in LOG_PARTITION_BOUNDS:
            raise ConfigError(f"reg_term=bound regularises a log-partition, which {name} does not have "
                              f"(valid: log_partition or softplus)")
        if term != "log_partition" and distance != "euclidean":
            raise ConfigError(f"reg_term={term} uses the Euclidean distance (valid: distance=euclidean)")


def build_estimator(cfg: Mapping[str, Any], dim_y: int | None = None) -> Estimator:
    """Build the estimator named ``cfg['name']`` from its YAML parameters (checked: :func:`check_params`)."""
    name = cfg["name"]
    if name not in REGISTRY:
        raise ConfigError(f"unknown estimator {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    spec = REGISTRY[name]
    cfg = {**dict(spec.defaults), **cfg}
    check_params(name, cfg)
    params = {k: v for k, v in cfg.items() if k != "name" and k not in REG_KEYS}
    reg = None
    if spec.regularized:
        term = cfg.get("reg_term", "log_partition")
        reg = {"lam": float(cfg.get("lam", 0.1)), "c_star": float(cfg.get("c_star", 0.0)),
               "distance": cfg.get("distance", "euclidean"), "shift": spec.shift}
        if term != "log_partition":
            reg["term"] = term
    return spec.module(spec.fn, params, reg, dim_y=dim_y)


def usable(layout: str, gives_y: bool, trainable: bool = True, conditional: bool = False) -> list[str]:
    """Registry names whose needs a benchmark with this score ``layout`` (y per column or not, the encoder's
    log p(y|x) as scores or not) meets."""
    rank = LAYOUTS.index(layout) if layout in LAYOUTS else 0
    return sorted(n for n, s in REGISTRY.items() if LAYOUTS.index(s.layout) <= rank
                  and (gives_y or not s.needs_y({})) and (s.trainable or not trainable)
                  and (conditional or not s.conditional))


__all__ = ["Estimate", "Estimator", "LAYOUTS", "RANGES", "REG_TERMS", "REGISTRY", "Side", "Spec", "STREAK", "usable", "build_estimator", "check_params", "bounds", "regularize", "regularizer",
           "masked_mean", "masked_logmeanexp", "resolve_masks", "mlp", "DISTANCES"]
