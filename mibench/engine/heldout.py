"""Estimates on held-out pairs: the estimator's own function on a score matrix of test pairs.

The test pairs are cut into blocks of ``block`` samples (None: one block of all of them, as the
Beyond-Normal protocol does). Row i of the score matrix holds T(x_i, y_j) for the y_j of x_i's block;
the joint mask marks (x_i, y_i), the marginal mask the other members of the block, so DV / NWJ
average over n (block - 1) product-of-marginals pairs and InfoNCE is a ``block``-sample bound.
Bounds that need a square paired matrix (I_alpha) or the y of every column (a learned baseline) get one
block x block matrix per block, with its y, and the estimate is the mean over blocks.

Rows are scored a chunk at a time so that a joint critic's [rows, block, hidden] activations stay
small; the estimator runs in eval mode (no moving average is updated by a test set).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from ..precision import full

ROW_BUDGET = 2**20  # score entries computed per critic call


def block_masks(n: int, block: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Joint / marginal masks of the [n, block] test score matrix: (i, i mod block) is the joint pair."""
    joint = torch.zeros(n, block, dtype=torch.bool, device=device)
    joint[torch.arange(n, device=device), torch.arange(n, device=device) % block] = True
    return joint, ~joint


def block_scores(score_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, block: int) -> Tensor:
    """[n, block] with row i = T(x_i, y_j) for the y_j in x_i's block (n = len(x) cut to a multiple of block)."""
    n = (x.shape[0] // block) * block
    rows = max(1, ROW_BUDGET // block)
    return torch.cat([score_fn(x[r:min(r + rows, lo + block)], y[lo:lo + block])
                      for lo in range(0, n, block) for r in range(lo, lo + block, rows)])


@torch.no_grad()
def heldout_estimate(critic: Callable[[Tensor, Tensor], Tensor], estimator: nn.Module, x: Tensor, y: Tensor,
                     block: int | None = None, per_block: bool = False) -> Tensor:
    """The estimator's value on the held-out pairs (x, y) in blocks of ``block`` (module docstring).

    ``per_block``: the estimator needs a square paired matrix or the y of every column.
    """
    block = x.shape[0] if block is None else block
    was = estimator.training
    estimator.eval()
    try:
        if per_block:
            n = (x.shape[0] // block) * block
            return torch.stack([estimator(full(block_scores(critic, x[lo:lo + block], y[lo:lo + block], block)),
                                          y=y[lo:lo + block]).mi for lo in range(0, n, block)]).mean()
        s = full(block_scores(critic, x, y, block))
        joint, marginal = block_masks(s.shape[0], block, s.device)
        return estimator(s, joint, marginal).mi
    finally:
        estimator.train(was)
