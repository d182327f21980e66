"""When a run has diverged: the engine's check of every block of host rows (docs/estimators.md#divergence).

A run diverges at the first step where

- a value of the task's ``finite_columns`` is NaN or infinite;
- an estimate (a column of ``Task.estimate_columns``) leaves its bound's valid range
  (:meth:`mibench.estimators.Spec.valid`: InfoNCE above log K at any step; any bound beyond
  +/- ``trainer.diverge_above`` x max(true MI, 1 nat) for STREAK steps in a row), measured against what the task
  knows (``Task.candidates``: K; ``Task.true_mi_of``: the true MI or a ceiling of it; either may be unknown);
- the loss is beyond +/- ``trainer.diverge_loss`` for STREAK steps in a row (every task with an estimate column);
- or the task's own check after a block fails (``Task.on_block``: a non-finite evaluation).

Each finding is (step, reason); the reason is the one line result.json keeps as ``diverged_reason``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import POSITIVE, Rule
from ..estimators import REGISTRY, STREAK, Side
from ..records import ADDED_DEFAULTS

Finding = tuple[int, str]  # (step, reason)


class Limit(Rule):
    """null (no such limit) or a positive number."""

    text = "null (no limit) or a positive number"

    def ok(self, v: Any) -> bool:
        return v is None or POSITIVE.ok(v)


# the trainer's divergence limits; every task validates them (Task.validate)
SCHEMA: dict[str, dict[str, Rule]] = {"trainer": {"diverge_above": Limit(), "diverge_loss": Limit()}}


def limits(cfg: Any) -> tuple[float | None, float | None]:
    """(diverge_above, diverge_loss) of a config (conf/trainer/default.yaml); their defaults (ADDED_DEFAULTS) in a
    config written before them."""
    trainer = cfg.get("trainer") or {}
    values = [trainer.get(k, ADDED_DEFAULTS["trainer", k]) for k in ("diverge_above", "diverge_loss")]
    return tuple(None if v is None else float(v) for v in values)  # type: ignore[return-value]


def streak_start(bad: np.ndarray, steps: int) -> int | None:
    """Index of the first row that begins ``steps`` True values in a row, or None."""
    if steps <= 1:
        return int(bad.argmax()) if bad.any() else None
    run = np.convolve(bad.astype(np.int64), np.ones(steps, dtype=np.int64), "valid")
    hit = np.flatnonzero(run >= steps)
    return int(hit[0]) if len(hit) else None


def tail(blocks: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The last ``n`` rows of a list of blocks (fewer when they hold fewer), as a list of blocks."""
    out: list[np.ndarray] = []
    for b in reversed(blocks):
        if n <= 0:
            break
        out.insert(0, b[-n:])
        n -= len(out[0])
    return out


class Watch:
    """The divergence checks of one task's run (one per engine)."""

    def __init__(self, task: Any):
        self.task = task
        cols = ["step", *task.context_columns, *task.columns]
        self.finite = [cols.index(c) for c in (task.finite_columns or task.columns)]
        self.names = cols
        # (the class's declaration, not this config's: jigsaw's objective=ce still checks log P - CE as before)
        estimates = [c for c in task.estimate_columns if c in task.columns] if task.caps.uses_estimator else []
        # (a probe has no cfg, and no estimate column)
        self.spec = REGISTRY.get(str(task.cfg.estimator.get("name"))) if estimates else None
        self.estimates = [(cols.index(c), c) for c in estimates] if self.spec is not None else []
        self.loss = cols.index("loss") if self.spec is not None and "loss" in task.columns else None
        self.above, self.loss_limit = limits(task.cfg) if self.spec is not None else (None, None)

    def first(self, block: np.ndarray, before: list[np.ndarray]) -> Finding | None:
        """The first divergence in ``block`` (host rows: step, context, columns); ``before``: the blocks recorded
        before it (a streak may begin there, several short blocks back)."""
        found = [f for f in (self.nonfinite(block), self.out_of_range(block, before)) if f is not None]
        return min(found, key=lambda f: f[0]) if found else None  # (on a tie: the first check listed)

    def nonfinite(self, block: np.ndarray) -> Finding | None:
        """The first NaN or infinite value of ``finite_columns`` in ``block``."""
        vals = block[:, self.finite]
        bad = ~np.isfinite(vals).all(axis=1)
        if not bad.any():
            return None
        i = int(bad.argmax())
        j = int((~np.isfinite(vals[i])).argmax())
        return int(block[i, 0]), f"{self.names[self.finite[j]]} is {vals[i, j]} at step {int(block[i, 0])}"

    def out_of_range(self, block: np.ndarray, before: list[np.ndarray]) -> Finding | None:
        """An estimate beyond a side of its valid range, or the loss beyond ``diverge_loss``."""
        if self.spec is None:
            return None
        block = np.concatenate([*tail(before, STREAK - 1), block])  # a streak across block boundaries
        true_mi = self.task.true_mi_of(block)
        sides = self.spec.valid(self.task.candidates(), true_mi, self.above)
        checks = [(col, name, side) for col, name in self.estimates for side in sides]
        if self.loss is not None and self.loss_limit is not None:
            text = f"{self.loss_limit:g} (trainer.diverge_loss)"  # (no {limit}: one number for every step)
            checks += [(self.loss, "loss", Side(self.loss_limit, True, STREAK, text)),
                       (self.loss, "loss", Side(-self.loss_limit, False, STREAK, f"-{text}"))]
        found = [f for f in (self._beyond(block, col, name, side) for col, name, side in checks) if f is not None]
        return min(found, key=lambda f: f[0]) if found else None  # (on a tie: the first check listed)

    def _beyond(self, block: np.ndarray, col: int, name: str, side: Side) -> Finding | None:
        limit = np.broadcast_to(np.asarray(side.limit, dtype=np.float64), (len(block),))
        with np.errstate(invalid="ignore"):
            bad = block[:, col] > limit if side.upper else block[:, col] < limit
        i = streak_start(bad, side.steps)
        if i is None:
            return None
        step, value = int(block[i, 0]), float(block[i, col])
        rel = ">" if side.upper else "<"
        at = f"at step {step}" if side.steps == 1 else f"for {side.steps} steps from step {step}"
        return step, f"{name} {value:.3g} {rel} {side.text.format(limit=limit[i])} {at}"
