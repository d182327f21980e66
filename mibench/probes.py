"""Frozen-feature probes (linear evaluation): classifiers trained on precomputed features by the engine.

DIM Table 1 protocol: the encoder is frozen (eval mode, no grad), its features are computed once for
the train and test sets (:func:`extract_features`), and one probe per (kind, layer) is trained with
cross-entropy (:class:`Probes`, a :class:`~mibench.engine.Task` run by the engine with nothing
written); test top-1 per probe.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .engine import Backend, Engine, Optim, RunContext, Step, Task
from .models.dim import LAYERS, make_probe
from .precision import full

PROBES = ("mlp", "linear")


@torch.no_grad()
def extract_features(encoder: nn.Module, x_uint8: Tensor, normalise, device: torch.device | str = "cpu",
                     batch_size: int = 500, layers: tuple[str, ...] = LAYERS) -> dict[str, Tensor]:
    """The frozen encoder's ``layers`` features (its output dict's keys; default DIM's conv / fc / Y), eval
    mode, no augmentation, for all of ``x_uint8``."""
    was = encoder.training
    encoder.eval()
    dev = torch.device(device)
    parts: dict[str, list[Tensor]] = {k: [] for k in layers}
    for i in range(0, x_uint8.shape[0], batch_size):
        out = encoder(normalise(x_uint8[i: i + batch_size].to(dev), False))
        for k in layers:
            parts[k].append(full(out[k].flatten(1)))
    encoder.train(was)
    return {k: torch.cat(v) for k, v in parts.items()}


class Probes(Task):
    """One probe per (kind, layer) on precomputed frozen features, trained with cross-entropy by the engine.

    All probes see the same shuffled minibatches; each has its own parameters, so one Adam over all
    of them equals one Adam per probe (Adam is per-parameter). MultiStepLR(0.1) at ``milestones``.
    """

    name = "dim_probes"
    columns = ("loss",)
    steps_file = None

    def __init__(self, ctx: RunContext, train_f: dict[str, Tensor], train_y: Tensor, num_classes: int,
                 kinds: tuple[str, ...] = PROBES, epochs: int = 20, lr: float = 1e-3, batch_size: int = 256,
                 milestones: tuple[int, ...] = (), hidden: int = 200, dropout: float = 0.1, seed: int = 0):
        super().__init__(None, None, ctx)
        self.train_f, self.train_y, self.num_classes = train_f, train_y, num_classes
        self.kinds, self.epochs, self.lr, self.batch_size = kinds, epochs, lr, batch_size
        self.milestones, self.hidden, self.dropout, self.seed = milestones, hidden, dropout, seed

    def setup(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        for k in self.kinds:
            for layer in self.train_f:  # every layer given (DIM: conv / fc / Y)
                self.nets[f"{k}_{layer}"] = make_probe(k, self.train_f[layer].shape[1], self.num_classes,
                                                       self.hidden, self.dropout)

    @property
    def shown_columns(self) -> tuple[str, ...]:  # each probe's training-batch accuracy, for the progress bar
        return tuple(self.nets)

    def total_steps(self) -> int:
        return self.epochs * self.block

    def optim(self) -> Optim:
        return Optim("adam", self.lr, milestones=tuple(self.milestones))

    @property
    def block(self) -> int:
        return max(1, self.train_y.shape[0] // self.batch_size)  # one host copy per epoch

    def segments(self, start: int):
        n, dev = self.train_y.shape[0], self.train_y.device
        nb = max(1, n // self.batch_size)
        for _ in range(start, self.epochs):
            perm = torch.randperm(n, generator=self.gen)
            yield perm[: nb * self.batch_size].view(nb, -1).to(dev) if n >= self.batch_size else perm.view(1, -1).to(dev)

    def step(self, idx: Tensor) -> Step:
        yb = self.train_y[idx]
        logits = [p(self.train_f[name.split("_", 1)[1]][idx]) for name, p in self.nets.items()]
        loss = sum(F.cross_entropy(out, yb) for out in logits)
        with torch.no_grad():
            acc = [(out.argmax(dim=1) == yb).float().mean() for out in logits]
        return Step(loss, [loss], shown=acc)

    def progress(self, lo: int, hi: int, rows: np.ndarray, shown: np.ndarray | None = None) -> dict[str, Any]:
        """Probe epoch e/E and each probe's mean training-batch accuracy over the block (``linear/fc=0.412``)."""
        fields: dict[str, Any] = {"epoch": f"{self.ctx.segment + 1}/{self.epochs}"}
        if shown is not None and len(shown):
            fields.update({name.replace("_", "/", 1): float(v) for name, v in zip(self.shown_columns, shown.mean(0))})
        return fields

    @torch.no_grad()
    def accuracy(self, test_f: dict[str, Tensor], test_y: Tensor) -> dict[tuple[str, str], float]:
        """Test top-1 (%) per (kind, layer), probes in eval mode."""
        self.nets.eval()
        out: dict[tuple[str, str], float] = {}
        for name, p in self.nets.items():
            kind, layer = name.split("_", 1)
            pred = torch.cat([p(test_f[layer][i: i + 4096]).argmax(1) for i in range(0, test_y.shape[0], 4096)])
            out[(kind, layer)] = 100.0 * float((pred == test_y).float().mean())
        return out


def train_probes(train_f: dict[str, Tensor], train_y: Tensor, test_f: dict[str, Tensor], test_y: Tensor,
                 num_classes: int, kinds: tuple[str, ...] = PROBES, epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 256, milestones: tuple[int, ...] = (), hidden: int = 200, dropout: float = 0.1,
                 seed: int = 0, backend: Any = None, progress: bool = False) -> dict[tuple[str, str], float]:
    """Train the probes through the engine (nothing written) and return test top-1 (%) per (kind, layer)
    (``progress``: a bar with each probe's training accuracy, on a terminal)."""
    be = backend or Backend("cuda" if train_y.device.type == "cuda" else "cpu")
    task = Probes(RunContext(be), train_f, train_y, num_classes, kinds, epochs, lr, batch_size, milestones, hidden,
                  dropout, seed)
    task.setup()
    engine = Engine(task, be, progress=progress, stop_on_divergence=False, total_steps=task.total_steps())
    engine.train()
    return task.accuracy(test_f, test_y)
