"""The Gaussian staircase (Poole et al. Fig. 2; Choi & Lee Fig. 7): the true MI steps through
``dataset.mi_levels``, ``dataset.steps_per_level`` steps each; segment = level, block = level.

Each step the critic builds the full N x N score matrix in one batched pass and the estimator turns
it into an Estimate (bound in fp32 even when the critic runs in bf16: at scores ~10 bf16 resolves
only ~0.06 nats, the size of the effects being measured). Per level: bias, variance, MSE
(summary.csv, rewritten atomically at each level's end) and the level/* metrics.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from ..checks import LEARNING_RATE, Choice, ConfigError, Int, Number, Numbers, check_critic
from ..data.gaussian import TRANSFORMS, StaircaseStream, rho_from_mi
from ..engine import Capabilities, RunResult, Scores, Task, register
from ..results import STEP_COLUMNS, atomic_write_csv, format_summary, level_summary, plot_staircase
from ..precision import full


@register("staircase")
class Staircase(Task):
    needs_data = "staircase"
    context_columns = ("level", "true_mi")
    int_columns = ("level",)
    finite_columns = ("estimate",)
    segment_unit = "level"
    caps = Capabilities(resumable=True, vectorized=True, known_encoder=True)  # (the known encoder: critic=conditional)

    schema = {"dataset": {"batch_size": Int(2, why=": a batch needs >= 2 samples to form product-of-marginals pairs"),
                          "dim": Int(1), "mi_levels": Numbers(Number(0.0), "MI values in nats"),
                          "steps_per_level": Int(1), "transform": Choice(*TRANSFORMS)},
              "benchmark": {"lr": LEARNING_RATE, "steps_per_batch": Int(1),
                            "ema_span": Number(1.0, text="a smoothing span >= 1 step")}}

    @classmethod
    def check(cls, cfg) -> None:
        check_critic(cfg, int(cfg.dataset.dim), int(cfg.dataset.dim), f"dataset.dim={cfg.dataset.dim}")
        if cls.capabilities(cfg).conditional and cfg.dataset.transform != "none":
            raise ConfigError(f"critic=conditional is the Gaussian log p(y|x), which dataset.transform="
                              f"{cfg.dataset.transform} changes (valid: dataset.transform=none)")

    @classmethod
    def capabilities(cls, cfg) -> Capabilities:
        """critic=conditional: the known encoder's log p(y|x) as the scores (Poole §2.5), one run per process."""
        known = (cfg.get("critic") or {}).get("name") == "conditional"
        return replace(super().capabilities(cfg), conditional=known, vectorized=not known)

    def setup(self) -> None:
        d = self.cfg.dataset
        self.stream = StaircaseStream(int(d.dim), int(d.batch_size), list(d.mi_levels), int(d.steps_per_level),
                                      int(self.cfg.seed), d.transform)
        self.mi_levels, self.spl = self.stream.mi_levels, int(d.steps_per_level)
        self.nets["critic"] = self.build_critic(int(d.dim), int(d.dim))
        self.estimator = self.build_estimator(dim_y=int(d.dim))
        self.level_summaries: list[pd.DataFrame] = []

    @property
    def block(self) -> int:
        return self.spl

    def candidates(self) -> int:
        return int(self.cfg.dataset.batch_size)

    def data_bytes(self) -> int:
        d = self.cfg.dataset  # x and y of one level (and the next one's, while it is drawn)
        return 2 * 2 * int(d.steps_per_level) * int(d.batch_size) * int(d.dim) * 4

    def total_steps(self) -> int:
        return self.spl * len(self.mi_levels)

    def segment_count(self) -> int:
        return len(self.mi_levels)

    def segments(self, start: int) -> Iterator[Iterable[Any]]:
        g = torch.Generator().manual_seed(self.stream.seed)
        for level in range(len(self.mi_levels)):
            xs, ys = self.stream.level_data(level, g)  # drawn even when skipped: advances the generator
            if level >= start:
                if hasattr(self.nets["critic"], "set_rho"):  # critic=conditional: this level's encoder
                    self.nets["critic"].set_rho(rho_from_mi(self.mi_levels[level], int(self.cfg.dataset.dim)))
                yield zip(xs.to(self.device), ys.to(self.device))

    def score(self, batch) -> Scores:
        x, y = batch
        return Scores(full(self.nets["critic"](x, y)), y=y)

    def context(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        level = np.arange(lo, hi) // self.spl
        return {"level": level, "true_mi": np.asarray(self.mi_levels)[level]}

    def progress(self, lo: int, hi: int, rows: np.ndarray, shown: np.ndarray | None = None) -> dict[str, Any]:
        """The level of the last of ``rows`` (the level being trained), its true MI, and the estimate smoothed as
        in staircase.png: pandas' ``ewm(span=ema_span)`` (adjust=True; inf and NaN left out) over every step up to
        ``hi``, however the calls fall (every block, a look inside one, none for a while, a resumed run)."""
        num, den = self._ema_through(rows)
        level = int(rows[-1, 1]) if len(rows) else (hi - 1) // self.spl
        return {"level": f"{level + 1}/{len(self.mi_levels)}", "true MI": float(self.mi_levels[level]),
                "est": num / den if den > 0 else "nan"}

    def _ema_through(self, rows: np.ndarray) -> tuple[float, float]:
        """The EMA's (numerator, denominator) after the last of ``rows``, folding in once each step not folded
        yet: those before ``rows`` from the engine's records, then the new ones of ``rows``."""
        span = float(self.cfg.benchmark.get("ema_span", 200))
        decay = 1.0 - 2.0 / (span + 1.0)
        num, den, upto = getattr(self, "_ema", (0.0, 0.0, 0))  # upto: the first step not folded yet
        fit = getattr(getattr(self, "engine", None), "fit", None)
        first = int(rows[0, 0]) if len(rows) else upto
        if first > upto and fit is not None:  # steps no call has seen (a resumed run, calls only now and then)
            rows = np.concatenate([*[b[b[:, 0] < first] for b in fit.rows if len(b) and b[-1, 0] >= upto], rows])
        rows = rows[rows[:, 0] >= upto] if len(rows) else rows
        if not len(rows):
            return num, den
        x = rows[:, 1 + len(self.context_columns) + self.columns.index("estimate")]
        ok = np.isfinite(x)
        w = decay ** np.arange(len(x) - 1, -1, -1, dtype=np.float64)
        scale = decay ** len(x)
        num = scale * num + float((w * np.where(ok, x, 0.0)).sum())
        den = scale * den + float((w * ok).sum())
        self._ema = (num, den, int(rows[-1, 0]) + 1)
        return num, den

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        df = pd.DataFrame(rows, columns=STEP_COLUMNS).astype({"step": int, "level": int})
        self.level_summaries.append(level_summary(df))
        summary = self.summary()
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", summary)
        s = summary.iloc[index]
        return {f"level/{k}": float(s[k]) for k in ("true_mi", "mean", "bias", "variance", "mse")}

    def summary(self) -> pd.DataFrame:
        """Per level (levels not reached: NaN moments), with the run's divergence."""
        summary = pd.concat(self.level_summaries, ignore_index=True) if self.level_summaries else pd.DataFrame()
        done = set(summary["level"]) if len(summary) else set()
        missing = [{"level": i, "true_mi": m, "steps": 0, "mean": math.nan, "bias": math.nan, "variance": math.nan,
                    "mse": math.nan, "nonfinite": 0} for i, m in enumerate(self.mi_levels) if i not in done]
        if missing:
            summary = pd.concat([summary, pd.DataFrame(missing)], ignore_index=True)
        step = self.ctx.diverged_step
        summary["diverged"] = step is not None
        summary["diverged_step"] = step if step is not None else -1
        return summary

    def state_dict(self) -> dict[str, Any]:
        return {"level_summaries": [s.to_dict(orient="list") for s in self.level_summaries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level_summaries = [pd.DataFrame(s) for s in state["level_summaries"]]

    def finish(self, result: RunResult) -> None:
        d = self.cfg.dataset
        result.summary = summary = self.summary()
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "summary.csv", summary)
        title = f"{self.cfg.estimator.name} / {self.cfg.critic.name} critic / {d.name} d={d.dim} batch={d.batch_size}"
        if self.cfg.benchmark.plot and self.out_dir is not None and result.steps is not None and len(result.steps):
            path = self.out_dir / "staircase.png"
            plot_staircase(result.steps, path, title, self.cfg.benchmark.ema_span, d.batch_size)
            result.figures.append(path)
        result.text = format_summary(summary, title)
        result.objective = float(summary["mse"].mean()) if len(summary) else None
