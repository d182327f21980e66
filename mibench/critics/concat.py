"""Joint ("concat") critic T(x, y) = MLP([x, y]) over all N x M pairs in one batched pass (MINE)."""
from __future__ import annotations

from torch import Tensor, nn

from ..estimators.modules import mlp


class ConcatCritic(nn.Module):
    """One MLP on the concatenation [x_i, y_j] for every pair (``out_bias=False``: no bias on the output layer).

    The first layer is linear, so W [x; y] = W_x x + W_y y: it is applied to the N rows of x and
    the M rows of y separately and broadcast-added to [N, M, hidden], which is exactly the MLP on
    the N*M concatenated pairs without materialising them. The rest runs on the N*M pairs at once.
    """

    def __init__(self, dim_x: int, dim_y: int, hidden: int = 256, layers: int = 2, activation: str = "relu",
                 embed: int | None = None, out_bias: bool = True):
        super().__init__()
        del embed  # a joint critic outputs a scalar; accepted so critic groups share keys
        self.dim_x = dim_x
        net = mlp(dim_x + dim_y, 1, hidden, layers, activation, out_bias=out_bias)
        self.first: nn.Linear = net[0]
        self.rest = net[1:]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        w, b = self.first.weight, self.first.bias
        hx = x @ w[:, : self.dim_x].t()  # [N, H]
        hy = y @ w[:, self.dim_x :].t() + b  # [M, H]
        pre = hx.unsqueeze(1) + hy.unsqueeze(0)  # [N, M, H] == Linear([x_i, y_j])
        return self.rest(pre).squeeze(-1)
