"""SLB and CLB: Choi & Lee's supervised and contrastive benchmarks on CIFAR-10/100 (§5.1).

SLB (Theorem 7, I(X; Y) = H(Y) = log C): T(x, y) = f(x) . onehot(y), so the score matrix is the
B x C logit matrix; joint = the true-label logits, marginal = all B x C logits (the authors'
code). With InfoNCE the row partition runs over the C classes, i.e. cross-entropy (+ log C).
Test accuracy: argmax of the logits.

CLB (Theorem 8, I(X1; X2) = H(Y) for X2 drawn from X1's class): T(x1, x2) = f(x1) . f(x2) on
encoder features, a B x B matrix; joint = pairs of distinct samples with the same label,
marginal = the other pairs of distinct samples (``benchmark.marginal=distinct``, default: every
off-diagonal pair, i.e. independent draws of (x1, x2), joint pairs included as in SLB) or only
the different-label pairs (``negatives``). Batches without a positive pair are skipped (the
authors' code); ``benchmark.sampler=balanced`` builds batches that always hold positives.
Test accuracy: label of the training sample with the largest feature dot product.

The estimators are the registry's; this module only builds score matrices and masks.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..checks import LEARNING_RATE, Bool, Choice, ConfigError, Int, Number, check_rules
from ..data.cifar import (SPECS, CifarBatches, CifarData, CifarDataError, generated_note,
                          has_positive)
from ..engine import Capabilities, Optim, RunResult, Step, Task, data_error, register
from ..estimators import Estimator
from ..models import REGISTRY as MODELS
from ..models import SCHEMA as MODEL_SCHEMA
from ..models import build_model
from ..results import atomic_write_csv, plot_epochs
from ..precision import full

CLB_MARGINALS = ("distinct", "negatives")
NORMALISE = ("dataset", "half")  # per-dataset mean/std | mean 0.5, std 0.5 (the authors' code)
EVAL_BN = ("running", "batch")  # eval mode | BatchNorm batch statistics over test batches (no net.eval(), authors)
FEATURES = ("head", "backbone")  # CLB: a linear head to critic.embed | the pooled backbone features (--remove_fc)
SAMPLERS = ("random", "balanced")
OPTIMIZERS = ("adam", "sgd")


def slb_scores(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SLB (Choi & Lee Theorem 7): scores = the B x C logits, joint = one-hot(y), marginal = all entries."""
    joint = F.one_hot(y, logits.shape[1]).bool()
    return logits, joint, torch.ones_like(joint)


@torch.no_grad()
def batch_accuracy(scores: Tensor, y: Tensor, task: str) -> Tensor:
    """The batch's training accuracy by the benchmark's own test rule: SLB the argmax logit; CLB the label of
    the most similar other sample in the batch (nearest neighbour, the diagonal excluded)."""
    if task == "slb":
        return (scores.argmax(dim=1) == y).float().mean()
    off = scores.masked_fill(torch.eye(y.numel(), dtype=torch.bool, device=scores.device), float("-inf"))
    return (y[off.argmax(dim=1)] == y).float().mean()


def clb_scores(feats: Tensor, y: Tensor, marginal: str = "distinct") -> tuple[Tensor, Tensor, Tensor]:
    """CLB (Choi & Lee Theorem 8): scores = f f^T, joint = same label and i != j, marginal per ``marginal``."""
    scores = feats @ feats.t()
    same = y.unsqueeze(0) == y.unsqueeze(1)
    off = ~torch.eye(y.numel(), dtype=torch.bool, device=y.device)
    return scores, same & off, (off if marginal == "distinct" else ~same)


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def encode(encoder: nn.Module, x_uint8: Tensor, normalise, batch_size: int = 500, device: torch.device | str = "cpu",
           autocast: bool = False, batch_stats: bool = False) -> Tensor:
    """Encoder outputs (fp32, on ``device``) for all of ``x_uint8``, without augmentation: in eval mode, or
    with ``batch_stats`` in train mode (BatchNorm normalises each batch of ``batch_size`` by its own statistics,
    the authors' protocol; the running statistics are restored afterwards)."""
    was = encoder.training
    saved = ({k: v.clone() for k, v in encoder.state_dict().items() if "running_" in k or "num_batches" in k}
             if batch_stats else {})
    encoder.train(batch_stats)
    outs = []
    dev = torch.device(device)
    for i in range(0, x_uint8.shape[0], batch_size):
        xb = normalise(x_uint8[i: i + batch_size].to(dev, non_blocking=True), False)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            outs.append(full(encoder(xb)))
    encoder.train(was)
    if saved:
        encoder.load_state_dict(saved, strict=False)
    return torch.cat(outs)


@torch.no_grad()
def nearest_neighbour_labels(test_f: Tensor, train_f: Tensor, train_y: Tensor, chunk: int | None = None) -> Tensor:
    """Label of argmax_{x in train} f(x) . f(x_test) for every test row (Choi & Lee §5.1, CLB accuracy).

    One matmul per chunk of test rows against the whole train set (chunked to bound memory).
    """
    if chunk is None:
        chunk = max(1, (1 << 25) // max(1, train_f.shape[0]))
    idx = torch.cat([(test_f[i: i + chunk] @ train_f.t()).argmax(dim=1) for i in range(0, test_f.shape[0], chunk)])
    return train_y.to(idx.device)[idx]


@torch.no_grad()
def batched_estimate(estimator: Estimator, out: Tensor, y: Tensor, batches: Tensor, task: str,
                     marginal: str = "distinct") -> float:
    """Mean of the estimator's MI over the given index batches of precomputed outputs (eval mode)."""
    was = estimator.training
    estimator.eval()
    vals = []
    for b in batches.to(out.device):
        yb = y[b]
        scores, jm, mm = slb_scores(out[b], yb) if task == "slb" else clb_scores(out[b], yb, marginal)
        vals.append(estimator(scores, joint=jm, marginal=mm).mi)
    estimator.train(was)
    return float(torch.stack(vals).mean()) if vals else math.nan


RESULT_COLUMNS = ["benchmark", "dataset", "estimator", "lam", "c_star", "seed", "model", "batch_size", "epochs",
                  "epochs_done", "true_mi", "mi_train", "mi_train_raw", "mi_test", "mi_test_raw", "test_acc",
                  "diverged", "diverged_step", "steps", "skipped_batches", "wall_time_s", "config"]


def _clip0(v: float, diverged: bool) -> float:
    """Table 2 convention: negative estimates clipped to 0; a diverged (non-finite) run counts as 0."""
    return 0.0 if diverged or not math.isfinite(v) else max(0.0, v)


def evaluate(encoder: nn.Module, estimator: Estimator, data: CifarData, task: str, marginal: str,
             device: torch.device, autocast: bool = False, eval_bn: str = "running") -> dict[str, float]:
    """Test-set MI estimate (batches of the training size, same masks) and test accuracy.

    ``eval_bn="batch"``: every encoding (test set, and the train set for CLB's nearest neighbour) runs in train
    mode in batches of the training batch size, in order, as the authors' code (no ``net.eval()``)."""
    kw = {"batch_size": data.batch_size, "batch_stats": True} if eval_bn == "batch" else {}
    test_out = encode(encoder, data.test_x, data.normalise, device=device, autocast=autocast, **kw)
    test_y = data.test_y.to(test_out.device)
    tb = CifarBatches(data.test_x, data.test_y, data.batch_size, data.seed + 7919, data.sampler,
                      data.per_class).epoch_batches(0)
    if tb.shape[0] == 0:  # test set smaller than one training batch: estimate on all of it at once
        tb = torch.randperm(data.test_x.shape[0], generator=torch.Generator().manual_seed(data.seed)).unsqueeze(0)
    if task == "clb":
        tb = tb[has_positive(data.test_y[tb])]
        train_out = encode(encoder, data.train_x, data.normalise, device=device, autocast=autocast, **kw)
        pred = nearest_neighbour_labels(test_out, train_out, data.train_y)
    else:
        pred = test_out.argmax(dim=1)
    acc = float((pred == test_y).float().mean())
    mi = batched_estimate(estimator, test_out, test_y, tb, task, marginal)
    return {"mi_test": mi, "test_acc": acc}


# ---------------------------------------------------------------------------------------------
# the tasks


class ImageTask(Task):
    """One encoder trained by one registry estimator on SLB or CLB score matrices; segment = epoch."""

    needs_data = "cifar"

    columns = ("estimate", "loss")
    shown_columns = ("acc",)  # the progress bar's training-batch accuracy (not recorded)
    segment_unit = "epoch"
    caps = Capabilities(resumable=True, gives_y=False)
    sgd_momentum = 0.9

    schema = {"dataset": {"batch_size": Int(2, why=": a batch needs >= 2 samples"), "crop_pad": Int(0),
                          "augment": Bool(), "flip": Bool(), "download": Bool()},
              "benchmark": {"epochs": Int(1), "check_every": Int(1), "optimizer": Choice(*OPTIMIZERS),
                            "weight_decay": Number(0.0), "lr": LEARNING_RATE, "normalise": Choice(*NORMALISE),
                            "eval_bn": Choice(*EVAL_BN), "features": Choice(*FEATURES)}}

    @classmethod
    def check(cls, cfg) -> None:
        b, d, task = cfg.benchmark, cfg.dataset, cfg.benchmark.name
        if cfg.model.name not in MODELS:
            raise ConfigError(f"model={cfg.model.name} cannot encode images for benchmark={task} "
                              f"(valid: {', '.join(sorted(MODELS))})")
        check_rules(cfg, {"model": MODEL_SCHEMA}, present=True)
        if cfg.critic.name != task:
            raise ConfigError(f"critic={cfg.critic.name} does not fit benchmark={task} (valid: critic={task})")
        if task == "slb" and b.get("features", "head") != "head":
            raise ConfigError(f"benchmark.features={b.features} is invalid for benchmark=slb: its scores are the C "
                              f"logits of the head (valid: head)")
        if task == "clb":
            check_rules(cfg, {"critic": {"embed": Int(1)}, "benchmark": {
                "marginal": Choice(*CLB_MARGINALS), "sampler": Choice(*SAMPLERS), "per_class": Int(2)}})
            if b.sampler == "balanced" and d.batch_size % b.per_class:
                raise ConfigError(f"benchmark.per_class={b.per_class} does not divide dataset.batch_size="
                                  f"{d.batch_size} (valid: a divisor >= 2 of the batch size)")
        n_train = SPECS[d.name].n_train
        if d.batch_size > n_train:
            raise ConfigError(f"dataset.batch_size={d.batch_size} is larger than the {n_train} training images of "
                              f"{d.name}: no batch would ever run (valid: 2 <= batch_size <= {n_train})")

    def setup(self) -> None:
        b, d, cfg = self.cfg.benchmark, self.cfg.dataset, self.cfg
        self.data = CifarData(d.name, d.root, d.batch_size, seed=int(cfg.seed), download=bool(d.download),
                              augment=bool(d.augment), crop_pad=int(d.crop_pad), flip=bool(d.flip),
                              sampler=b.get("sampler", "random"), per_class=int(b.get("per_class", 2)),
                              require_positive=self.name == "clb",
                              num_workers=int(cfg.hardware.get("num_workers", 0)))
        try:
            self.data.setup()  # load + validate the arrays (or download) before any training
        except CifarDataError as e:
            raise data_error(e) from None
        self.data.rank = self.ctx.rank
        if self.data.train_x.shape[0] < self.data.batch_size:
            raise ConfigError(f"dataset.batch_size={d.batch_size} is larger than the {self.data.train_x.shape[0]} "
                              f"training images under {d.root}: no batch would ever run")
        if b.get("normalise", "dataset") == "half":  # the authors' transforms.Normalize((0.5,) * 3, (0.5,) * 3)
            self.data.mean, self.data.std = torch.full((3,), 0.5), torch.full((3,), 0.5)
        out_dim = (self.data.num_classes if self.name == "slb"
                   else None if b.get("features", "head") == "backbone" else int(cfg.critic.embed))
        self.nets["encoder"] = build_model(OmegaConf.to_container(cfg.model, resolve=True), out_dim)
        self.estimator = self.build_estimator(dim_y=self.data.num_classes)
        self.marginal = b.get("marginal", "distinct")
        self.history: list[dict[str, Any]] = []
        self.skipped_total = 0

    def generated_data(self) -> str | None:
        """Files of :mod:`mibench.data.fake_cifar` / ``write_fake_stl10`` (their GENERATED marker)."""
        return generated_note([self.data])

    def optim(self) -> Optim:
        b = self.cfg.benchmark
        return Optim(b.optimizer, float(b.lr), float(b.weight_decay), float(b.get("momentum", self.sgd_momentum)))

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.check_every)

    def segments(self, start: int):
        for epoch in range(start, int(self.cfg.benchmark.epochs)):
            yield self.data.epoch_loader(epoch)

    def total_steps(self) -> int | None:
        """Rank 0's planned steps, when known before the epoch runs (CLB's random batches may be skipped)."""
        if self.name == "clb" and self.cfg.benchmark.get("sampler", "random") != "balanced":
            return None
        return int(self.cfg.benchmark.epochs) * -(-len(self.data.train_batches) // self.ctx.world_size)

    def candidates(self) -> int:
        """SLB: the C logits of a row; CLB: the batch (a row's joint and marginal entries)."""
        return self.data.num_classes if self.name == "slb" else int(self.cfg.dataset.batch_size)

    def true_mi_of(self, rows: np.ndarray) -> float:
        """log C: I(X; label) <= H(label) <= log C (the ``true_mi`` of the records)."""
        return math.log(self.data.num_classes)

    def no_work_hint(self) -> str:
        return (f"dataset.batch_size={self.cfg.dataset.batch_size}: no batch"
                + (" held a positive pair" if self.name == "clb" else " fitted the training set"))

    def batch_scores(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.nets["encoder"](x).float()  # bound in fp32 even when the encoder runs in bf16
        return slb_scores(out, y) if self.name == "slb" else clb_scores(out, y, self.marginal)

    def step(self, batch) -> Step:
        x, y = (v.to(self.device, non_blocking=True) for v in batch)
        scores, jm, mm = self.batch_scores(self.data.normalise(x, True), y)
        est = self.estimator(scores, joint=jm, marginal=mm)
        return Step(est.loss, [est.mi, est.loss], shown=[batch_accuracy(scores, y, self.name)])

    def progress(self, lo: int, hi: int, rows: np.ndarray, shown: np.ndarray | None = None) -> dict[str, Any]:
        """Epoch e/E, the block's mean MI estimate and its mean training-batch accuracy (test accuracy is
        measured once, after training)."""
        fields = {"epoch": f"{self.ctx.segment + 1}/{int(self.cfg.benchmark.epochs)}",
                  **super().progress(lo, hi, rows)}
        if shown is not None and len(shown):
            fields["train acc"] = float(shown[:, 0].mean())
        return fields

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        skipped = int(self.data.train_batches.skipped) - self.skipped_total
        self.skipped_total += skipped
        n = len(rows)
        row = {"epoch": index, "steps": self.ctx.step, "epoch_steps": n * self.ctx.world_size,
               "mi_mean": float(rows[:, 1].mean()) if n else math.nan,
               "loss_mean": float(rows[:, 2].mean()) if n else math.nan, "skipped_batches": skipped, "wall_s": wall}
        self.history.append(row)
        if self.out_dir is not None and self.ctx.is_global_zero:
            atomic_write_csv(self.out_dir / "epochs.csv", pd.DataFrame(self.history))
        return {f"epoch/{k}": v for k, v in row.items() if k != "epoch"}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "skipped_total": self.skipped_total, "augment": self.data.augment_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.skipped_total = list(state["history"]), int(state["skipped_total"])
        self.data.train_batches.skipped = self.skipped_total
        self.data.load_augment_state(state.get("augment"))  # (inside an epoch: where its crops and flips stand)

    def evaluate(self) -> dict[str, Any]:
        autocast = str(self.cfg.hardware.precision).startswith("bf16") and self.device.type == "cuda"
        return evaluate(self.nets["encoder"], self.estimator, self.data, self.name, self.marginal, self.device,
                        autocast, self.cfg.benchmark.get("eval_bn", "running"))

    def finish(self, result: RunResult) -> None:
        cfg, b, d, task = self.cfg, self.cfg.benchmark, self.cfg.dataset, self.name
        ctx, ev = self.ctx, dict(result.metrics)
        # NaN/Inf anywhere (training steps, or the estimate on the test batches) makes the run a diverged one;
        # when only the test estimate overflowed, diverged_step is the last step
        diverged = (ctx.diverged_step is not None or not all(math.isfinite(h["mi_mean"]) for h in self.history)
                    or not math.isfinite(ev["mi_test"]))
        last = self.history[-1]["mi_mean"] if self.history else math.nan
        div_step = (ctx.diverged_step if ctx.diverged_step is not None else ctx.step) if diverged else None
        train_wall = result.extra.get("train_wall_s", math.nan)
        metrics = {
            "benchmark": task, "dataset": d.name, "estimator": cfg.estimator.name, "lam": cfg.estimator.get("lam"),
            "c_star": cfg.estimator.get("c_star"), "seed": int(cfg.seed), "model": cfg.model.name,
            "batch_size": int(d.batch_size), "epochs": int(b.epochs), "epochs_done": len(self.history),
            "true_mi": math.log(self.data.num_classes),
            "mi_train": _clip0(last, diverged), "mi_train_raw": last,
            "mi_test": _clip0(ev["mi_test"], diverged), "mi_test_raw": ev["mi_test"], "test_acc": ev["test_acc"],
            "diverged": diverged, "diverged_step": div_step if diverged else -1,
            "steps": ctx.step, "skipped_batches": self.skipped_total, "train_wall_s": round(train_wall, 3),
            "eval_bn": b.get("eval_bn", "running"),
        }
        result.metrics = metrics
        result.diverged_step = div_step
        title = f"{task.upper()} {d.name} / {cfg.estimator.name} / {cfg.model.name} batch={d.batch_size}"
        result.text = (
            f"{title}\n  true MI log C = {metrics['true_mi']:.3f} nats | MI last epoch {metrics['mi_train']:.3f}"
            f" (raw {last:.3f}) | MI test {metrics['mi_test']:.3f} | test acc {metrics['test_acc']:.4f}"
            f" | {'DIVERGED at step ' + str(metrics['diverged_step']) if diverged else 'finite'}"
            f" | {metrics['steps']} steps, {metrics['epochs_done']} epochs, {metrics['skipped_batches']} skipped"
            f" | train {train_wall:.1f}s | test encodings: {'BatchNorm batch statistics (authors)' if metrics['eval_bn'] == 'batch' else 'eval mode'}")
        result.objective = -metrics["test_acc"]
        result.extra["history"] = pd.DataFrame(self.history)
        if self.out_dir is not None and self.ctx.is_global_zero:
            row = {**{k: metrics.get(k) for k in RESULT_COLUMNS if k not in ("config", "wall_time_s")},
                   "wall_time_s": round(train_wall, 3),
                   "config": json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)}
            atomic_write_csv(self.out_dir / "result.csv", pd.DataFrame([row], columns=RESULT_COLUMNS))
            if plot_epochs(pd.DataFrame(self.history), self.out_dir / "epochs.png", title, self.generated_data()):
                result.figures.append(self.out_dir / "epochs.png")


@register("slb")
class SLB(ImageTask):
    """Choi & Lee Theorem 7: scores = the B x C logits (one positive per row)."""

    caps = replace(ImageTask.caps, layout="rows")


@register("clb")
class CLB(ImageTask):
    """Choi & Lee Theorem 8: scores = f f^T, several positives per row (explicit masks, no paired diagonal)."""

    caps = replace(ImageTask.caps, layout="rows")
