"""Bilinear critic T(x, y) = h(x)^T W g(y): the separable critic with a learned W (initialised to I)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .separable import SeparableCritic


class BilinearCritic(SeparableCritic):
    def __init__(self, dim_x: int, dim_y: int, embed: int = 32, **kwargs: Any):
        super().__init__(dim_x, dim_y, embed=embed, **kwargs)
        self.W = nn.Parameter(torch.eye(embed))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """scores[i, j] = h(x_i)^T W g(y_j)"""
        return (self.h(x) @ self.W) @ self.g(y).t()
