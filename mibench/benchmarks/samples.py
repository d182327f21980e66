"""Any paired samples (``dataset=samples``: a sample file; ``dataset=bmi``: a Beyond-Normal task), with the
Beyond-Normal protocol (Czyż et al., NeurIPS 2023; the defaults of the ``benchmark-mi`` package's neural
estimators) as the default:

* inputs standardised (each column, over all samples, before the split), then a random train / test
  split (50 / 50);
* the critic (a concat MLP with hidden layers 16 and 8) trained with Adam (lr 0.1) on batches of 256
  training pairs drawn without replacement, for up to 10,000 steps;
* every 250 steps the estimator's own function on the whole test split (one [n_test, n_test] score
  matrix: :mod:`mibench.engine.heldout`); training stops early once the best test estimate is
  ``patience`` (2) evaluations old;
* reported: the **best** test estimate over evaluation points (the protocol's number) and the **final**
  one (the last evaluation), side by side; the curve of both in curve.csv and the run's figure.

Segment = one evaluation block, so a killed run resumes from its last evaluation.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import Tensor

from ..checks import LEARNING_RATE, SEED_MAX, Bool, ConfigError, Int, Maybe, Name, Number, Numbers, check_critic
from ..data.dataset import DATASETS
from ..data.batches import IndexStream
from ..data.samples import Samples, inputs, load_samples, split, split_sizes
from ..engine import Capabilities, RunResult, Scores, Task, data_error, register
from ..engine.heldout import heldout_estimate
from ..estimators import REGISTRY as ESTIMATORS
from ..results import atomic_write_csv
from ..precision import full

CURVE_COLUMNS = ["step", "test_estimate", "best_test_estimate", "train_estimate", "true_mi"]
FRACTION = Number(0.0, 1.0, lo_open=True, hi_open=True, text="a fraction 0 < f < 1")
SEED = Maybe(Int(0, SEED_MAX), "null for the run's seed")
COLUMNS = Maybe(Numbers(Name(), "CSV column names"), "null for a .npz / .pt file")


def source(cfg: Any) -> tuple[Path, str]:
    """The sample file of ``cfg.dataset`` (a Beyond-Normal task's is drawn and cached on first use) and its label:
    the dataset's own answer (its kind is ``pairs``)."""
    return DATASETS[cfg.dataset.name].source(cfg)


def read(cfg: Any) -> Samples:
    path, _ = source(cfg)
    d = cfg.dataset
    xs, ys = d.get("x"), d.get("y")
    return load_samples(path, list(xs) if xs is not None else None, list(ys) if ys is not None else None,
                        d.get("true_mi"))


@register("samples")
class SampleTask(Task):
    needs_data = "pairs"
    caps = Capabilities(resumable=True, vectorized=True)

    schema = {"dataset": {"train_fraction": FRACTION, "standardize": Bool(),
                          "split_seed": SEED, "sample_seed": SEED, "x": COLUMNS, "y": COLUMNS},
              "benchmark": {"lr": LEARNING_RATE, "batch_size": Int(2, why=": a batch needs >= 2 samples to form "
                                                                       "product-of-marginals pairs"),
                            "steps": Int(1), "eval_every": Int(1), "early_stopping": Bool(), "patience": Int(1),
                            "eval_block": Maybe(Int(2), "null for the whole test split")}}

    @classmethod
    def check(cls, cfg) -> None:
        d, b = cfg.dataset, cfg.benchmark
        tf = d.get("test_fraction")
        if tf is not None and not (FRACTION.ok(tf) and tf + d.train_fraction <= 1.0):
            raise ConfigError(f"dataset.test_fraction={tf} is invalid (valid: null for the rest, or a fraction "
                              f"<= 1 - dataset.train_fraction = {1 - d.train_fraction:g})")
        s, _ = cls.prepared(cfg)
        n_train, n_test = split_sizes(s.n, float(d.train_fraction), d.get("test_fraction"))
        where = f"the {n_train} training pairs (dataset.train_fraction={d.train_fraction} of {s.n})"
        if b.batch_size > n_train:
            raise ConfigError(f"benchmark.batch_size={b.batch_size} is invalid (valid: <= {where})")
        if n_test < 2:
            raise ConfigError(f"the test split has {n_test} pair(s) of {s.n} (valid: >= 2; raise "
                              f"dataset.test_fraction or provide more samples)")
        if b.get("eval_block") is not None and b.eval_block > n_test:
            raise ConfigError(f"benchmark.eval_block={b.eval_block} is invalid (valid: <= the {n_test} test pairs)")
        check_critic(cfg, s.x.shape[1], s.y.shape[1], f"the columns of x and y in {s.name}")

    @classmethod
    def prepared(cls, cfg) -> tuple[Samples, tuple[np.ndarray, np.ndarray, list[str]]]:
        """The checked sample file and the float32 x, y a run trains on, with notes (one-line ConfigError)."""
        try:
            s = read(cfg)
            return s, inputs(s, bool(cfg.dataset.standardize))
        except ValueError as e:
            raise data_error(e) from None
        except MemoryError:
            what = DATASETS[cfg.dataset.name].described(cfg)
            raise ConfigError(f"{what} do not fit in this machine's memory (valid: fewer samples)") from None

    @classmethod
    def notes(cls, cfg) -> list[str]:
        """What the run does with the data that the user may not expect (constant columns)."""
        return cls.prepared(cfg)[1][2]

    def setup(self) -> None:
        cfg, d = self.cfg, self.cfg.dataset
        s, (x, y, _) = self.prepared(cfg)
        self.label = source(cfg)[1]
        self.true_mi = s.true_mi
        split_seed = int(d.split_seed) if d.get("split_seed") is not None else int(cfg.seed)
        tr, te = split(s.n, float(d.train_fraction), d.get("test_fraction"), split_seed)
        dev = self.device
        self.x_tr, self.y_tr = full(torch.from_numpy(x[tr]).to(dev)), full(torch.from_numpy(y[tr]).to(dev))
        self.x_te, self.y_te = full(torch.from_numpy(x[te]).to(dev)), full(torch.from_numpy(y[te]).to(dev))
        self.dims = (s.x.shape[1], s.y.shape[1])
        self.nets["critic"] = self.build_critic(*self.dims)
        self.estimator = self.build_estimator(dim_y=self.dims[1])
        spec = ESTIMATORS[cfg.estimator.name]
        self.per_block = spec.layout == "paired" or spec.needs_y(OmegaConf.to_container(cfg.estimator, resolve=True))
        self.curve: list[tuple[int, float, float, float, float]] = []
        self.best, self.best_step, self.since_best = -math.inf, -1, 0

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.eval_every)

    def true_mi_of(self, rows: np.ndarray) -> float | None:
        return self.true_mi

    def candidates(self) -> int:
        return int(self.cfg.benchmark.batch_size)

    def total_steps(self) -> int:
        return int(self.cfg.benchmark.steps)

    def data_bytes(self) -> int:
        return 4 * (self.x_tr.numel() + self.y_tr.numel() + self.x_te.numel() + self.y_te.numel())

    def segments(self, start: int):
        b = self.cfg.benchmark
        stream = IndexStream(self.x_tr.shape[0], int(b.batch_size), int(b.steps), self.block, int(self.cfg.seed))
        for i, chunk in enumerate(stream):  # drawn even when skipped: a resumed run sees the same batches
            if i >= start:  # a batch carries its pairs (each run of a vectorised group has its own sample)
                yield ((self.x_tr[idx], self.y_tr[idx]) for idx in chunk.to(self.device))

    def score(self, batch: tuple[Tensor, Tensor]) -> Scores:
        x, y = batch
        return Scores(full(self.nets["critic"](x, y)), y=y)

    def test_estimate(self) -> float:
        b = self.cfg.benchmark
        block = int(b.eval_block) if b.get("eval_block") is not None else None
        return float(heldout_estimate(self.nets["critic"], self.estimator, self.x_te, self.y_te, block, self.per_block))

    def on_block(self, lo: int, hi: int, rows: np.ndarray) -> bool:
        test = self.test_estimate()
        train = float(rows[:, 1].astype(np.float32).mean(dtype=np.float32))
        if test > self.best:
            self.best, self.best_step, self.since_best = test, hi, 0
        else:
            self.since_best += 1
        true_mi = self.true_mi if self.true_mi is not None else math.nan
        self.curve.append((hi, test, self.best, train, true_mi))
        return not (math.isfinite(test) and math.isfinite(train))

    def done(self) -> bool:
        b = self.cfg.benchmark
        return bool(b.early_stopping) and self.since_best >= int(b.patience)

    def state_dict(self) -> dict[str, Any]:
        return {"curve": list(self.curve), "best": self.best, "best_step": self.best_step, "since_best": self.since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = [tuple(r) for r in state["curve"]]
        self.best, self.best_step, self.since_best = state["best"], state["best_step"], state["since_best"]

    def finish(self, result: RunResult) -> None:
        cfg, name = self.cfg, self.cfg.estimator.name
        curve = pd.DataFrame(self.curve, columns=CURVE_COLUMNS)
        final = float(curve["test_estimate"].iloc[-1]) if len(curve) else math.nan
        best = self.best if len(curve) and math.isfinite(self.best) else math.nan
        true_mi = self.true_mi
        stopped = result.diverged_step is None and result.steps_done < int(cfg.benchmark.steps)
        err = (lambda v: v - true_mi if true_mi is not None else None)
        result.metrics.update({
            "true_mi": true_mi, "best_test_estimate": best, "test_estimate": final, "best_step": self.best_step,
            "error": err(best), "final_error": err(final), "stopped_early": stopped, "evaluations": len(curve),
            "n_train": int(self.x_tr.shape[0]), "n_test": int(self.x_te.shape[0]),
            "dim_x": self.dims[0], "dim_y": self.dims[1], "train_wall_s": result.extra.get("train_wall_s")})
        result.summary = summary = pd.DataFrame([{
            "task": self.label, "estimator": name, "critic": cfg.critic.name, "seed": int(cfg.seed),
            "true_mi": true_mi if true_mi is not None else math.nan, "best_test_estimate": best,
            "test_estimate": final, "best_step": self.best_step, "steps": result.steps_done, "stopped_early": stopped}])
        title = f"{name} / {cfg.critic.name} critic / {self.label} (d_x={self.dims[0]}, d_y={self.dims[1]})"
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "curve.csv", curve)
            atomic_write_csv(self.out_dir / "summary.csv", summary)
            if cfg.benchmark.plot and len(curve):
                from ..figures.samples import plot_run

                path = self.out_dir / "samples.png"
                plot_run(curve, path, title, true_mi)
                result.figures.append(path)
        truth = f"true MI {true_mi:.4f}" if true_mi is not None else "true MI unknown"
        result.text = (f"{title}: {truth}\n  best test estimate  {best:.4f} (step {self.best_step}; "
                       f"the Beyond-Normal protocol's number)\n  final test estimate {final:.4f} "
                       f"(after {result.steps_done} steps{', stopped early' if stopped else ''})")
        if true_mi is not None and math.isfinite(best):
            result.objective = abs(best - true_mi)
        elif math.isfinite(best):
            result.objective = -best
        result.extra["curve"] = curve
