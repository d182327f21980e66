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
import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..estimators import Estimator
from ..results import atomic_write_csv
from .tracking import EpochTracker

TASKS = ("slb", "clb")
CLB_MARGINALS = ("distinct", "negatives")
SAMPLERS = ("random", "balanced")
OPTIMIZERS = ("adam", "sgd")
CHECKPOINT = "checkpoint.pt"


def slb_scores(logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """SLB (Choi & Lee Theorem 7): scores = the B x C logits, joint = one-hot(y), marginal = all entries."""
    joint = F.one_hot(y, logits.shape[1]).bool()
    return logits, joint, torch.ones_like(joint)


def clb_scores(feats: Tensor, y: Tensor, marginal: str = "distinct") -> tuple[Tensor, Tensor, Tensor]:
    """CLB (Choi & Lee Theorem 8): scores = f f^T, joint = same label and i != j, marginal per ``marginal``."""
    scores = feats @ feats.t()
    same = y.unsqueeze(0) == y.unsqueeze(1)
    off = ~torch.eye(y.numel(), dtype=torch.bool, device=y.device)
    return scores, same & off, (off if marginal == "distinct" else ~same)


class ImageMIModule(EpochTracker, L.LightningModule):
    """One encoder trained by one registry estimator on SLB or CLB score matrices.

    Per step: forward, bound, backward, optimizer step; the step's MI and loss are added to a
    device accumulator and the first non-finite step is noted on the device. The host reads
    them every ``check_every`` steps (divergence) and once per epoch (means for epochs.csv).
    """

    def __init__(self, encoder: nn.Module, estimator: Estimator, task: str, num_classes: int, lr: float = 1e-3,
                 optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.9,
                 marginal: str = "distinct", check_every: int = 100, stop_on_divergence: bool = True,
                 out_dir: str | Path | None = None, checkpoint: bool = False, resume_state: dict[str, Any] | None = None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} (valid: {', '.join(TASKS)})")
        self.encoder, self.estimator, self.task, self.num_classes = encoder, estimator, task, int(num_classes)
        self.lr, self.opt_name, self.weight_decay, self.momentum = float(lr), optimizer, float(weight_decay), momentum
        self.marginal = marginal
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.automatic_optimization = False
        self.init_tracker(2, check_every, stop_on_divergence)  # epoch sums of mi, loss
        self.history: list[dict[str, Any]] = []
        self.skipped_total = 0
        self.checkpoint = checkpoint and self.out_dir is not None
        self._epoch0 = 0  # epochs done before this process (resume)
        self._resume_state = resume_state
        if resume_state is not None:
            self.encoder.load_state_dict(resume_state["encoder"])
            self.estimator.load_state_dict(resume_state["estimator"])
            self._t, self.history = int(resume_state["t"]), list(resume_state["history"])
            self.diverged_step, self.skipped_total = resume_state["diverged_step"], int(resume_state["skipped_total"])
            self._epoch0 = len(self.history)
            self.t_dev.fill_(self._t)

    def on_train_start(self) -> None:
        if self._resume_state is not None:  # after Lightning built the optimizer and seeded: restore both
            self.trainer.optimizers[0].load_state_dict(self._resume_state["optimizer"])
            torch.set_rng_state(self._resume_state["rng_cpu"])
            if torch.cuda.is_available() and self._resume_state.get("rng_cuda") is not None:
                torch.cuda.set_rng_state_all(self._resume_state["rng_cuda"])
            self._resume_state = None

    def _save_checkpoint(self) -> None:
        """All a resumed run needs to end with the same numbers, written atomically at an epoch's end."""
        state = {"encoder": self.encoder.state_dict(), "estimator": self.estimator.state_dict(),
                 "optimizer": self.trainer.optimizers[0].state_dict(), "t": self._t, "history": self.history,
                 "diverged_step": self.diverged_step, "skipped_total": self.skipped_total,
                 "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        path = self.out_dir / CHECKPOINT
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        kill_after = os.environ.get("MIBENCH_KILL_AFTER_EPOCH")  # fault injection for the resume test
        if kill_after is not None and len(self.history) == int(kill_after) + 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.encoder.parameters()), "lr": self.lr}] + self.estimator.param_groups(self.lr)
        if self.opt_name == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    def batch_scores(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.encoder(x).float()  # bound in fp32 even when the encoder runs in bf16
        return slb_scores(out, y) if self.task == "slb" else clb_scores(out, y, self.marginal)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        opt = self.optimizers()
        scores, jm, mm = self.batch_scores(x, y)
        est = self.estimator(scores, joint=jm, marginal=mm)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(est.loss)
        opt.step()
        self.track(torch.stack((est.mi, est.loss)).detach())

    def on_train_epoch_end(self) -> None:
        sums, n = self.epoch_sums()
        dl = self.trainer.datamodule.train_batches if self.trainer.datamodule is not None else None
        skipped = int(dl.skipped) - self.skipped_total if dl is not None else 0
        self.skipped_total += skipped
        row = {"epoch": self._epoch0 + int(self.current_epoch), "steps": self._t, "epoch_steps": self._epoch_steps,
               "mi_mean": float(sums[0] / n) if n else math.nan, "loss_mean": float(sums[1] / n) if n else math.nan,
               "skipped_batches": skipped, "wall_s": self.epoch_wall()}
        self.history.append(row)
        if self.logger is not None:
            self.logger.log_metrics({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, step=self._t)
        if self.out_dir is not None and self.trainer.is_global_zero:
            atomic_write_csv(self.out_dir / "epochs.csv", pd.DataFrame(self.history))
            if self.checkpoint and self.trainer.current_epoch + 1 < self.trainer.max_epochs:
                self._save_checkpoint()


# ---------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def encode(encoder: nn.Module, x_uint8: Tensor, normalise, batch_size: int = 500, device: torch.device | str = "cpu",
           autocast: bool = False) -> Tensor:
    """Encoder outputs (fp32, on ``device``) for all of ``x_uint8``, in eval mode, without augmentation."""
    was = encoder.training
    encoder.eval()
    outs = []
    dev = torch.device(device)
    for i in range(0, x_uint8.shape[0], batch_size):
        xb = normalise(x_uint8[i: i + batch_size].to(dev, non_blocking=True), False)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
            outs.append(encoder(xb).float())
    encoder.train(was)
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


def evaluate(module: ImageMIModule, dm, device: torch.device | str, autocast: bool = False) -> dict[str, float]:
    """Test-set MI estimate (batches of the training size, same masks) and test accuracy."""
    from ..data.cifar import CifarBatches, has_positive

    test_out = encode(module.encoder, dm.test_x, dm.normalise, device=device, autocast=autocast)
    test_y = dm.test_y.to(test_out.device)
    tb = CifarBatches(dm.test_x, dm.test_y, dm.batch_size, dm.seed + 7919, dm.sampler, dm.per_class).epoch_batches(0)
    if tb.shape[0] == 0:  # test set smaller than one training batch: estimate on all of it at once
        tb = torch.randperm(dm.test_x.shape[0], generator=torch.Generator().manual_seed(dm.seed)).unsqueeze(0)
    if module.task == "clb":
        tb = tb[has_positive(dm.test_y[tb])]
        train_out = encode(module.encoder, dm.train_x, dm.normalise, device=device, autocast=autocast)
        pred = nearest_neighbour_labels(test_out, train_out, dm.train_y)
    else:
        pred = test_out.argmax(dim=1)
    acc = float((pred == test_y).float().mean())
    mi = batched_estimate(module.estimator, test_out, test_y, tb, module.task, module.marginal)
    return {"mi_test": mi, "test_acc": acc}


# ---------------------------------------------------------------------------------------------
# runner and validator


RESULT_COLUMNS = ["benchmark", "dataset", "estimator", "lam", "c_star", "seed", "model", "batch_size", "epochs",
                  "epochs_done", "true_mi", "mi_train", "mi_train_raw", "mi_test", "mi_test_raw", "test_acc",
                  "diverged", "diverged_step", "steps", "skipped_batches", "wall_time_s", "config"]


def _clip0(v: float, diverged: bool) -> float:
    """Table 2 convention: negative estimates clipped to 0; a diverged (non-finite) run counts as 0."""
    return 0.0 if diverged or not math.isfinite(v) else max(0.0, v)


def run_image(cfg, out_dir: Path, resume: Path | None = None) -> dict[str, Any]:
    """Train ``model`` on ``dataset`` with the ``estimator`` on SLB/CLB scores; evaluate; write result.csv.

    ``resume``: the checkpoint of this config's interrupted run (saved at each epoch's end when
    ``benchmark.checkpoint``); training goes on from the next epoch with the same numbers.
    """
    from omegaconf import OmegaConf

    from ..config import ConfigError
    from ..data.cifar import CifarDataError, CifarDataModule
    from ..estimators import build_estimator
    from ..models import build_model
    from ..train import build_trainer

    b, d, task = cfg.benchmark, cfg.dataset, cfg.benchmark.name
    dm = CifarDataModule(d.name, d.root, d.batch_size, seed=int(cfg.seed), download=bool(d.download),
                         augment=bool(d.augment), crop_pad=int(d.crop_pad), flip=bool(d.flip),
                         sampler=b.get("sampler", "random"), per_class=int(b.get("per_class", 2)),
                         require_positive=task == "clb", num_workers=int(cfg.hardware.get("num_workers", 0)))
    try:
        dm.setup("fit")  # load + validate the arrays (or download) before any training
    except CifarDataError as e:
        raise ConfigError(str(e)) from None
    out_dim = dm.num_classes if task == "slb" else int(cfg.critic.embed)
    encoder = build_model(OmegaConf.to_container(cfg.model, resolve=True), out_dim)
    estimator = build_estimator(OmegaConf.to_container(cfg.estimator, resolve=True), dim_y=dm.num_classes)
    state = torch.load(resume, weights_only=True) if resume is not None else None
    done = len(state["history"]) if state is not None else 0
    dm.train_batches.epoch = dm.epoch_offset = done  # epoch k's order and augmentation depend only on (seed, k)
    module = ImageMIModule(encoder, estimator, task, dm.num_classes, lr=b.lr, optimizer=b.optimizer,
                           weight_decay=b.weight_decay, marginal=b.get("marginal", "distinct"),
                           check_every=b.check_every, stop_on_divergence=b.stop_on_divergence, out_dir=out_dir,
                           checkpoint=bool(b.get("checkpoint", False)), resume_state=state)
    trainer = build_trainer(cfg, out_dir, max_steps=-1, max_epochs=max(1, int(b.epochs) - done), log_every_n_steps=1)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_wall = time.perf_counter() - t0
    ev = evaluate(module, dm, module.device, autocast=str(cfg.hardware.precision).startswith("bf16")
                  and module.device.type == "cuda")
    wall = time.perf_counter() - t0
    # NaN/Inf anywhere (training steps, or the estimate on the test batches) makes the run a diverged one;
    # when only the test estimate overflowed, diverged_step is the last step
    diverged = (module.diverged_step is not None or not all(math.isfinite(h["mi_mean"]) for h in module.history)
                or not math.isfinite(ev["mi_test"]))
    last = module.history[-1]["mi_mean"] if module.history else math.nan
    lam, c_star = cfg.estimator.get("lam"), cfg.estimator.get("c_star")
    metrics = {
        "benchmark": task, "dataset": d.name, "estimator": cfg.estimator.name, "lam": lam, "c_star": c_star,
        "seed": int(cfg.seed), "model": cfg.model.name, "batch_size": int(d.batch_size), "epochs": int(b.epochs),
        "epochs_done": len(module.history), "true_mi": math.log(dm.num_classes),
        "mi_train": _clip0(last, diverged), "mi_train_raw": last,
        "mi_test": _clip0(ev["mi_test"], diverged), "mi_test_raw": ev["mi_test"], "test_acc": ev["test_acc"],
        "diverged": diverged, "diverged_step": (module.diverged_step if module.diverged_step is not None
                                                else module._t) if diverged else -1,
        "steps": module._t, "skipped_batches": module.skipped_total, "wall_time_s": round(wall, 3),
        "train_wall_s": round(train_wall, 3),
    }
    row = {**{k: metrics.get(k) for k in RESULT_COLUMNS if k != "config"},
           "config": json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)}
    if trainer.is_global_zero:
        atomic_write_csv(out_dir / "result.csv", pd.DataFrame([row], columns=RESULT_COLUMNS))
        (out_dir / CHECKPOINT).unlink(missing_ok=True)
    title = f"{task.upper()} {d.name} / {cfg.estimator.name} / {cfg.model.name} batch={d.batch_size}"
    text = (f"{title}\n  true MI log C = {metrics['true_mi']:.3f} nats | MI last epoch {metrics['mi_train']:.3f}"
            f" (raw {last:.3f}) | MI test {metrics['mi_test']:.3f} | test acc {metrics['test_acc']:.4f}"
            f" | {'DIVERGED at step ' + str(metrics['diverged_step']) if diverged else 'finite'}"
            f" | {metrics['steps']} steps, {metrics['epochs_done']} epochs, {metrics['skipped_batches']} skipped"
            f" | train {train_wall:.1f}s, total {wall:.1f}s")
    div_step = (module.diverged_step if module.diverged_step is not None else module._t) if diverged else None
    return {"metrics": metrics, "text": text, "diverged_step": div_step, "steps_done": module._t,
            "objective": -metrics["test_acc"], "history": pd.DataFrame(module.history)}


def validate_image(cfg) -> None:
    """benchmark=slb|clb: dataset, model, critic, optimizer and sampler values, and that the data is there."""
    from ..config import ConfigError, check_int, check_positive
    from ..data.cifar import SPECS, CifarDataError, check_available
    from ..models import REGISTRY as MODELS

    b, d, task = cfg.benchmark, cfg.dataset, cfg.benchmark.name
    if d.name not in SPECS:
        raise ConfigError(f"dataset={d.name} does not fit benchmark={task} (valid: {', '.join(SPECS)})")
    check_int(d, "batch_size", 2, "dataset", ": a batch needs >= 2 samples")
    check_int(b, "epochs", 1, "benchmark")
    check_int(b, "check_every", 1, "benchmark")
    check_int(d, "crop_pad", 0, "dataset")
    for key in ("augment", "flip", "download"):
        if not isinstance(d.get(key), bool):
            raise ConfigError(f"dataset.{key}={d.get(key)} is invalid (valid: true or false)")
    if b.optimizer not in OPTIMIZERS:
        raise ConfigError(f"benchmark.optimizer={b.optimizer} is invalid (valid: {', '.join(OPTIMIZERS)})")
    if not (isinstance(b.weight_decay, (int, float)) and b.weight_decay >= 0):
        raise ConfigError(f"benchmark.weight_decay={b.weight_decay} is invalid (valid: a number >= 0)")
    if cfg.model.name not in MODELS:
        raise ConfigError(f"model={cfg.model.name} cannot encode images for benchmark={task} "
                          f"(valid: {', '.join(sorted(MODELS))})")
    if cfg.model.get("input_size") is not None:
        check_int(cfg.model, "input_size", 32, "model")
    if cfg.critic.name != task:
        raise ConfigError(f"critic={cfg.critic.name} does not fit benchmark={task} (valid: critic={task})")
    if task == "clb":
        check_int(cfg.critic, "embed", 1, "critic")
        if b.marginal not in CLB_MARGINALS:
            raise ConfigError(f"benchmark.marginal={b.marginal} is invalid (valid: {', '.join(CLB_MARGINALS)})")
        if b.sampler not in SAMPLERS:
            raise ConfigError(f"benchmark.sampler={b.sampler} is invalid (valid: {', '.join(SAMPLERS)})")
        check_int(b, "per_class", 2, "benchmark")
        if b.sampler == "balanced" and d.batch_size % b.per_class:
            raise ConfigError(f"benchmark.per_class={b.per_class} does not divide dataset.batch_size={d.batch_size} "
                              "(valid: a divisor >= 2 of the batch size)")
    check_positive(b, "lr", "benchmark")
    try:
        check_available(d.root, d.name, d.download)
    except CifarDataError as e:
        raise ConfigError(str(e)) from None
