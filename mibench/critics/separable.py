"""Separable critic T(x, y) = h(x)^T g(y) (van den Oord et al.; Poole et al. §3): 2N network passes."""
from __future__ import annotations

from torch import Tensor, nn

from ..estimators.modules import mlp


class SeparableCritic(nn.Module):
    def __init__(self, dim_x: int, dim_y: int, hidden: int = 256, layers: int = 2, embed: int = 32,
                 activation: str = "relu"):
        super().__init__()
        self.h = mlp(dim_x, embed, hidden, layers, activation)
        self.g = mlp(dim_y, embed, hidden, layers, activation)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """scores[i, j] = h(x_i) . g(y_j)"""
        return self.h(x) @ self.g(y).t()
