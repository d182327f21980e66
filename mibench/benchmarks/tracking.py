"""Per-step values kept on the device for epoch-based benchmarks (SLB, CLB, DIM).

Each step's values are added to a device accumulator and the first non-finite step is noted on
the device, so the hot path never syncs; the host reads the marker every ``check_every`` steps
(divergence: recorded, and the run stops cleanly when ``stop_on_divergence``) and the sums once per
epoch (the epoch means of epochs.csv).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor


class EpochTracker:
    """Mixin for a LightningModule: call :meth:`init_tracker` in ``__init__`` and :meth:`track` per step."""

    def init_tracker(self, n_values: int, check_every: int, stop_on_divergence: bool) -> None:
        self.register_buffer("sums", torch.zeros(n_values), persistent=False)
        self.register_buffer("first_bad", torch.tensor(-1, dtype=torch.long), persistent=False)
        self.register_buffer("t_dev", torch.tensor(0, dtype=torch.long), persistent=False)
        self.check_every, self.stop_on_divergence = int(check_every), bool(stop_on_divergence)
        self._t = 0
        self._epoch_steps = 0
        self._epoch_t0 = time.perf_counter()
        self.diverged_step: int | None = None

    def track(self, vals: Tensor) -> None:
        """Add one step's values (a 1-D tensor) to the epoch sums; note the step if any is NaN/Inf."""
        self.sums += vals
        bad = ~torch.isfinite(vals).all() & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(bad, self.t_dev, self.first_bad))
        self.t_dev += 1
        self._t += 1
        self._epoch_steps += 1
        if self._t % self.check_every == 0:
            self._check_divergence()

    def _check_divergence(self) -> None:
        if self.diverged_step is None:
            fb = int(self.trainer.strategy.reduce(self.first_bad.clone(), reduce_op="max"))
            if fb >= 0:
                self.diverged_step = fb
        if self.diverged_step is not None and self.stop_on_divergence:
            self.trainer.should_stop = True

    def on_train_epoch_start(self) -> None:
        self._epoch_t0 = time.perf_counter()
        self._epoch_steps = 0
        self.sums.zero_()

    def epoch_sums(self) -> tuple[np.ndarray, int]:
        """(sums over all ranks, steps over all ranks) of the epoch; checks divergence first."""
        self._check_divergence()
        sums = self.trainer.strategy.reduce(self.sums.clone(), reduce_op="sum").cpu().double().numpy()
        return sums, self._epoch_steps * self.trainer.world_size

    def epoch_wall(self) -> float:
        return time.perf_counter() - self._epoch_t0
