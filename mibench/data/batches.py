"""Training batches drawn as index sets of a fixed training set."""
from __future__ import annotations

import math

import torch
from torch.utils.data import IterableDataset


class IndexStream(IterableDataset):
    """Yields [chunk, batch] tensors of training-set indices (each row a batch drawn without replacement).

    The stream is fixed by ``seed``; a resumed run iterates it from the start and skips the chunks it
    has done, so it sees the same batches as an uninterrupted one.
    """

    def __init__(self, n: int, batch_size: int, steps: int, chunk: int, seed: int):
        super().__init__()
        self.n, self.b, self.steps, self.chunk, self.seed = n, batch_size, steps, chunk, seed

    def __len__(self) -> int:
        return math.ceil(self.steps / self.chunk)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for lo in range(0, self.steps, self.chunk):
            k = min(self.chunk, self.steps - lo)
            yield torch.rand(k, self.n, generator=g).argsort(dim=1)[:, : self.b]
