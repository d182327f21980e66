"""The one-hot problem of Choi & Lee (§3, Figs 1-5): X uniform on N classes, Y = X, I(X; Y) = log N.

A training step uses ``batch`` joint pairs (x_i, x_i), x_i ~ U{1..N}, and ``batch`` product-of-
marginals pairs (x'_i, x''_i) with x'_i, x''_i ~ U{1..N} drawn independently of each other and of
the joint pairs (as in the authors' code). Samples are carried as class indices; ``one_hot`` turns
them into the one-hot vectors the critic sees.
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from .dataset import Dataset, register_dataset


def true_mi(n_classes: int) -> float:
    """I(X; X) = H(X) = log N for X uniform on N classes (Choi & Lee §3, "One-hot Dataset")."""
    return math.log(n_classes)


def sample_pairs(n_classes: int, batch: int, generator: torch.Generator | None = None,
                 shape: Sequence[int] = ()) -> tuple[Tensor, Tensor, Tensor]:
    """Class indices, each [*shape, batch]: ``joint`` (the pairs (j, j)), and ``mx``, ``my`` (the pairs (mx, my)).

    All three are independent and uniform on {0..N-1}; joint pairs lie on the diagonal (x = y),
    marginal pairs on the whole N x N grid (on the diagonal with probability 1/N).
    """
    draw = torch.randint(n_classes, (3, *shape, batch), generator=generator)
    return draw[0], draw[1], draw[2]


def one_hot(idx: Tensor, n_classes: int) -> Tensor:
    """Float one-hot vectors [..., N] of class indices."""
    return torch.nn.functional.one_hot(idx, n_classes).to(torch.get_default_dtype())


class OneHotStream(IterableDataset):
    """Yields ``(joint, mx, my)`` index tensors of shape [chunk, batch]: ``chunk`` training steps per item.

    All ``steps`` batches are drawn up front from a generator seeded with ``seed`` (reproducible; the
    chunk size changes neither the data nor the result, see StaircaseStream).
    """

    def __init__(self, n_classes: int, batch_size: int, steps: int, seed: int, chunk: int = 100):
        super().__init__()
        self.n_classes, self.batch_size, self.steps = int(n_classes), int(batch_size), int(steps)
        self.seed, self.chunk = int(seed), max(1, int(chunk))

    def __len__(self) -> int:
        return math.ceil(self.steps / self.chunk)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        joint, mx, my = sample_pairs(self.n_classes, self.batch_size, g, shape=(self.steps,))
        for t in range(0, self.steps, self.chunk):
            yield joint[t:t + self.chunk], mx[t:t + self.chunk], my[t:t + self.chunk]


@register_dataset("onehot")
class OneHot(Dataset):
    """One-hot pairs x = y over N classes, I = log N (Choi & Lee's one-hot study)."""

    provides = ("onehot",)

