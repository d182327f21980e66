"""The Gaussian staircase benchmark (Poole et al. Fig. 2; Choi & Lee Fig. 7) as a LightningModule.

Each step: critic builds the full N x N score matrix in one batched pass, the estimator turns it
into an Estimate, the optimizer minimises ``loss``. Per-step values go into a preallocated device
buffer (no host sync); the buffer is copied to the host once per MI level, when that level's rows
are appended to ``steps.csv`` and its bias/variance/MSE are logged.
"""
from __future__ import annotations

import math
import os
import signal
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ..estimators import Estimator
from ..results import STEP_COLUMNS, atomic_write_csv, level_summary, write_steps

N_REC = 4  # estimate, loss, joint, marginal
CHECKPOINT = "checkpoint.pt"


class StaircaseModule(L.LightningModule):
    def __init__(self, critic: nn.Module, estimator: Estimator, mi_levels: Sequence[float], steps_per_level: int,
                 lr: float = 5e-4, out_dir: str | Path | None = None, stop_on_divergence: bool = True,
                 checkpoint: bool = False, resume_state: dict[str, Any] | None = None):
        super().__init__()
        self.critic, self.estimator = critic, estimator
        self.mi_levels = [float(m) for m in mi_levels]
        self.steps_per_level, self.lr = int(steps_per_level), float(lr)
        self.total_steps = self.steps_per_level * len(self.mi_levels)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.stop_on_divergence = stop_on_divergence
        self.automatic_optimization = False  # one backward + step per batch; fewer hooks on the hot path
        self.register_buffer("record", torch.zeros(self.total_steps, N_REC), persistent=False)
        self.rows: list[np.ndarray] = []
        self.level_summaries: list[pd.DataFrame] = []
        self.steps_df: pd.DataFrame | None = None
        self.summary: pd.DataFrame | None = None
        self.diverged_step: int | None = None
        self._t = 0
        self._direct = False
        self.checkpoint = checkpoint and self.out_dir is not None
        self._resume_state = resume_state
        if resume_state is not None:
            self.critic.load_state_dict(resume_state["critic"])
            self.estimator.load_state_dict(resume_state["estimator"])
            self._t = int(resume_state["t"])
            self.diverged_step = resume_state["diverged_step"]
            rows = resume_state["rows"].numpy()
            for level in range(self._t // self.steps_per_level):
                self._append(rows[rows[:, 1] == level])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.critic.parameters()), "lr": self.lr}]
        groups += self.estimator.param_groups(self.lr)
        return torch.optim.Adam(groups, lr=self.lr)

    def training_step(self, batch: tuple[Tensor, Tensor, Any], batch_idx: int) -> None:
        """One optimizer step per batch in the chunk (x, y: [chunk, batch, dim]); see StaircaseStream."""
        xs, ys, _ = batch
        direct = self._direct
        opt = self.trainer.optimizers[0] if direct else self.optimizers()
        for x, y in zip(xs, ys):
            scores = self.critic(x, y)
            # the critic may run in bf16 (hardware=gpu); the bound is computed in fp32: at scores ~10
            # bf16 resolves only ~0.06 nats, the size of the effects being measured
            est = self.estimator(scores.float(), y=y)
            opt.zero_grad(set_to_none=True)
            if direct:
                est.loss.backward()
            else:
                self.manual_backward(est.loss)
            opt.step()
            t = self._t
            self.record[t] = torch.stack((est.mi, est.loss, est.joint, est.marginal)).detach().float()
            self._t = t + 1
            if self._t % self.steps_per_level == 0:
                self._flush_level(self._t // self.steps_per_level - 1)
                if self.trainer.should_stop:
                    break

    def on_train_start(self) -> None:
        self._direct = self._can_step_directly()
        if self._resume_state is not None:
            self.trainer.optimizers[0].load_state_dict(self._resume_state["optimizer"])
            self._resume_state = None

    def _save_checkpoint(self) -> None:
        """Everything a resumed run needs to end with the same numbers, saved atomically at a level's end."""
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, len(STEP_COLUMNS)))
        state = {"critic": self.critic.state_dict(), "estimator": self.estimator.state_dict(),
                 "optimizer": self.trainer.optimizers[0].state_dict(), "t": self._t,
                 "diverged_step": self.diverged_step, "rows": torch.from_numpy(rows)}
        path = self.out_dir / CHECKPOINT
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        kill_after = os.environ.get("MIBENCH_KILL_AFTER_LEVEL")  # fault injection for the resume test
        if kill_after is not None and self._t // self.steps_per_level == int(kill_after) + 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def _can_step_directly(self) -> bool:
        """True when Lightning's manual_backward / LightningOptimizer.step would add nothing but hooks.

        On one device without a gradient scaler (32-true, bf16-mixed) they reduce to
        ``loss.backward()`` and ``optimizer.step()``, but cost ~0.3 ms of hook dispatch per step,
        which is 15-25% of a CPU staircase step. DDP, fp16 scaling or other strategies take
        Lightning's path. (The trainer's global_step then stays 0: progress is counted in steps
        recorded, ``self._t``.)
        """
        from lightning.pytorch.strategies import SingleDeviceStrategy

        strategy = self.trainer.strategy
        return type(strategy) is SingleDeviceStrategy and getattr(strategy.precision_plugin, "scaler", None) is None

    def _record_block(self, lo: int, hi: int, level: int) -> None:
        """Copy steps [lo, hi) of ``level`` to the host (one sync), note any divergence, stream them out."""
        rec = self.record[lo:hi].cpu().numpy().astype(np.float64)
        steps = np.arange(lo, hi, dtype=np.float64)
        bad = ~np.isfinite(rec[:, 0])
        if bad.any() and self.diverged_step is None:
            self.diverged_step = int(steps[bad.argmax()])
        self._append(np.column_stack([steps, np.full_like(steps, level), np.full_like(steps, self.mi_levels[level]), rec]))

    def _flush_level(self, level: int) -> None:
        lo, hi = level * self.steps_per_level, (level + 1) * self.steps_per_level
        self._record_block(lo, hi, level)
        s = self.summary.iloc[level]
        if self.logger is not None and type(self.logger).__name__ == "WandbLogger":
            self._stream_steps(self.rows[-1])
        if self.logger is not None:
            self.logger.log_metrics({f"level/{k}": float(s[k]) for k in ("true_mi", "mean", "bias", "variance", "mse")},
                                    step=hi)
        if self.diverged_step is not None and self.stop_on_divergence:
            self.trainer.should_stop = True
        if self.checkpoint and hi < self.total_steps:
            self._save_checkpoint()

    def _stream_steps(self, block: np.ndarray) -> None:
        """W&B gets the per-step curve too (the CSV logger need not: steps.csv holds it)."""
        names = STEP_COLUMNS[2:]
        for row in block:
            self.logger.log_metrics({f"step/{k}": float(v) for k, v in zip(names, row[2:])}, step=int(row[0]))

    def _append(self, block: np.ndarray) -> None:
        """Stream a level's rows to steps.csv.partial and rewrite summary.csv (atomically)."""
        self.rows.append(block)
        df = pd.DataFrame(block, columns=STEP_COLUMNS).astype({"step": int, "level": int})
        self.level_summaries.append(level_summary(df))
        if self.out_dir is not None:
            partial = self.out_dir / "steps.csv.partial"
            df.to_csv(partial, mode="a" if len(self.rows) > 1 else "w", header=len(self.rows) == 1,
                      index=False, float_format="%.9g")
        self.summary = self._summary()
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", self.summary)

    def _finish(self) -> pd.DataFrame:
        """steps.csv appears only complete: the streamed partial file is renamed over it at the end."""
        rows = np.concatenate(self.rows) if self.rows else np.zeros((0, len(STEP_COLUMNS)))
        df = pd.DataFrame(rows, columns=STEP_COLUMNS).astype({"step": int, "level": int})
        if self.out_dir is not None:
            partial = self.out_dir / "steps.csv.partial"
            if partial.exists():
                os.replace(partial, self.out_dir / "steps.csv")
            else:
                write_steps(self.out_dir / "steps.csv", rows)
            atomic_write_csv(self.out_dir / "summary.csv", self._summary())
            (self.out_dir / CHECKPOINT).unlink(missing_ok=True)
        return df

    def _summary(self) -> pd.DataFrame:
        summary = pd.concat(self.level_summaries, ignore_index=True) if self.level_summaries else pd.DataFrame()
        done = set(summary["level"]) if len(summary) else set()
        missing = [{"level": i, "true_mi": m, "steps": 0, "mean": math.nan, "bias": math.nan, "variance": math.nan,
                    "mse": math.nan, "nonfinite": 0} for i, m in enumerate(self.mi_levels) if i not in done]
        if missing:
            summary = pd.concat([summary, pd.DataFrame(missing)], ignore_index=True)
        summary["diverged"] = self.diverged_step is not None
        summary["diverged_step"] = self.diverged_step if self.diverged_step is not None else -1
        return summary

    def on_train_end(self) -> None:
        done = self._t // self.steps_per_level
        if self._t % self.steps_per_level:  # interrupted mid-level: keep the partial level too
            self._record_block(done * self.steps_per_level, self._t, done)
        self.steps_df = self._finish()


def run_staircase(cfg, out_dir: Path, resume: Path | None = None) -> dict[str, Any]:
    """Build data, critic, estimator and trainer from ``cfg``; train; write CSVs and the figure.

    ``resume``: a checkpoint of this config's interrupted run (written at each level's end when
    ``benchmark.checkpoint``); training continues at the next level with the same numbers.
    """
    import time

    from omegaconf import OmegaConf

    from ..critics import build_critic
    from ..data.gaussian import GaussianDataModule
    from ..estimators import build_estimator
    from ..results import format_summary, plot_staircase
    from ..train import build_trainer

    d = cfg.dataset
    dm = GaussianDataModule(dim=d.dim, batch_size=d.batch_size, mi_levels=list(d.mi_levels),
                            steps_per_level=d.steps_per_level, transform=d.transform, seed=cfg.seed, name=d.name,
                            chunk=cfg.benchmark.steps_per_batch)
    state = torch.load(resume, weights_only=True) if resume is not None else None
    if state is not None:
        dm.stream.start_level = int(state["t"]) // dm.steps_per_level
    critic = build_critic(OmegaConf.to_container(cfg.critic, resolve=True), dm.dim_x, dm.dim_y)
    estimator = build_estimator(OmegaConf.to_container(cfg.estimator, resolve=True), dim_y=dm.dim_y)
    module = StaircaseModule(critic, estimator, dm.mi_levels, dm.steps_per_level, lr=cfg.benchmark.lr,
                             out_dir=out_dir, stop_on_divergence=cfg.benchmark.stop_on_divergence,
                             checkpoint=bool(cfg.benchmark.get("checkpoint", False)), resume_state=state)
    trainer = build_trainer(cfg, out_dir, max_steps=dm.total_steps)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    wall = time.perf_counter() - t0
    summary = module.summary
    title = f"{cfg.estimator.name} / {cfg.critic.name} critic / {d.name} d={d.dim} batch={d.batch_size}"
    if cfg.benchmark.plot and module.steps_df is not None and len(module.steps_df):
        plot_staircase(module.steps_df, out_dir / "staircase.png", title, cfg.benchmark.ema_span, d.batch_size)
    return {"summary": summary, "steps": module.steps_df, "wall_time_s": wall, "diverged_step": module.diverged_step,
            "steps_done": module._t, "title": title, "text": format_summary(summary, title)}


def validate_staircase(cfg) -> None:
    """benchmark=staircase: the Gaussian dataset's and the critic's values (raises ConfigError)."""
    from omegaconf import OmegaConf

    from ..config import ConfigError, _num, check_int, validate_critic

    data = cfg.dataset
    check_int(data, "batch_size", 2, "dataset", ": a batch needs >= 2 samples to form product-of-marginals pairs")
    check_int(data, "dim", 1, "dataset")
    levels = list(data.mi_levels) if OmegaConf.is_list(data.get("mi_levels")) else None
    if not levels or not all(_num(m) and m >= 0 for m in levels):
        raise ConfigError(f"dataset.mi_levels={data.get('mi_levels')} is invalid (valid: a non-empty list of MI values >= 0 nats)")
    check_int(data, "steps_per_level", 1, "dataset")
    if data.transform not in ("none", "cubic", "wcubic"):
        raise ConfigError(f"dataset.transform={data.transform!r} is invalid (valid: none, cubic, wcubic)")
    check_int(cfg.benchmark, "steps_per_batch", 1, "benchmark")
    validate_critic(cfg, int(data.dim), int(data.dim))
