"""The known encoder as a critic: T(x, y) = log p(y|x) of the correlated Gaussian (Poole §2.5).

Not learned: its scores are the normalised log N(y_j; rho x_i, (1 - rho^2) I), which the structured
bounds (``tnce``, ``rate``, ``struct_nwj``, ``struct_alpha``, ``struct_js``, ``loo_upper``) need. The
benchmark that owns rho sets it (``set_rho``) before each level; only benchmarks that say so
(``Capabilities.conditional``) accept ``critic=conditional``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..data.gaussian import log_density_bmm


class GaussianConditional(nn.Module):
    def __init__(self, dim_x: int, dim_y: int, **kwargs: Any):
        super().__init__()
        if dim_x != dim_y:
            raise ValueError(f"critic=conditional needs x and y of one dimension, got {dim_x} and {dim_y}")
        self.register_buffer("rho", torch.zeros(()))

    def set_rho(self, rho: float) -> None:
        self.rho.fill_(float(rho))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """scores[i, j] = log p(y_j | x_i)"""
        return log_density_bmm(x, y, self.rho)
