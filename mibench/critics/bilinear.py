"""Bilinear critic T(x, y) = h(x)^T W g(y)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..estimators.modules import mlp


class BilinearCritic(nn.Module):
    def __init__(self, dim_x: int, dim_y: int, hidden: int = 256, layers: int = 2, embed: int = 32,
                 activation: str = "relu"):
        super().__init__()
        self.h = mlp(dim_x, embed, hidden, layers, activation)
        self.g = mlp(dim_y, embed, hidden, layers, activation)
        self.W = nn.Parameter(torch.eye(embed))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """scores[i, j] = h(x_i)^T W g(y_j)"""
        return (self.h(x) @ self.W) @ self.g(y).t()
