"""Critic registry: nn.Modules mapping (x [N, dx], y [M, dy]) to scores [N, M]."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from .bilinear import BilinearCritic
from .concat import ConcatCritic
from .conditional import GaussianConditional
from .separable import SeparableCritic

REGISTRY: dict[str, type[nn.Module]] = {
    "separable": SeparableCritic,
    "concat": ConcatCritic,
    "bilinear": BilinearCritic,
    "conditional": GaussianConditional,  # the known log p(y|x), for the structured bounds (not learned)
}


def build_critic(cfg: Mapping[str, Any], dim_x: int, dim_y: int) -> nn.Module:
    name = cfg["name"]
    if name not in REGISTRY:
        raise ValueError(f"unknown critic {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    params = {k: v for k, v in cfg.items() if k != "name"}
    return REGISTRY[name](dim_x, dim_y, **params)


__all__ = ["REGISTRY", "build_critic", "SeparableCritic", "ConcatCritic", "BilinearCritic", "GaussianConditional"]
