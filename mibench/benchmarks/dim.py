"""Deep InfoMax pretraining with any registry estimator, then frozen-encoder probes (``benchmark=dim``).

Objective (DIM slides, "Combining all together"):
    max  alpha * I(X; E(X))  +  beta / M^2 * sum_k I(C^(k)(X); E(X))  -  gamma * D(V || U_{psi,P})
global DIM (alpha), local DIM (beta) and prior matching (gamma); presets ``dim=global`` (1, 0, 1)
and ``dim=local`` (0, 1, 0.1). Both MI terms are the ``estimator`` group's bound (JS, InfoNCE, DV,
eta-MINE, ReMINE, ...) on score matrices built by :mod:`mibench.models.dim` (local: a
[B*HW, B*HW] matrix with explicit joint/marginal masks; global: a square B x B matrix with the
default masks). Prior matching: a discriminator tells samples of the prior V = U[0, 1]^64 from
sigmoid(Y); its loss is the registry's f-GAN JS bound with the prior as "joint" (i.e. binary
cross-entropy) and the encoder minimises the same with the labels swapped (the non-saturating
generator loss of the authors' code). The engine steps the encoder + MI networks, then the
discriminator (the task's adversary) on its own Adam.

Evaluation (DIM Table 1 protocol): the encoder is frozen (eval mode, no grad), its conv (256x4x4),
fc (1024) and Y (64) features are computed once for the train and test sets, and a DIM MLP probe
(200 units, BN, dropout, ReLU) and a linear probe are trained on each; test top-1 per layer. With
``benchmark.probe.datasets=[cifar10,cifar100]`` probes are also trained and tested on a dataset
other than the pretraining one (eta-MINE Table 2: rows = pretraining data, columns = probe data).
``benchmark.epochs=0`` gives the random-init encoder baseline through the same probes.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import replace
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..checks import LEARNING_RATE, Bool, Choice, ConfigError, Int, Maybe, Number, Numbers, Rule
from ..data.cifar import SPECS, CifarData, CifarDataError, generated_note
from ..data.dataset import DATASETS, providing
from ..engine import Capabilities, Optim, RunResult, Step, Task, data_error, register
from ..estimators import REGISTRY as ESTIMATORS
from ..estimators import Estimator, build_estimator
from ..models.dim import (LAYERS, LOCAL_SHAPE, DIMEncoder, GlobalMINet, LocalMINet, MapMINet, PriorDiscriminator,
                          global_scores, local_score_tensor, local_scores, prior_scores)
from ..probes import PROBES, extract_features, train_probes
from ..results import atomic_write_csv, atomic_write_text, plot_epochs
from ..precision import full

class _Milestones(Rule):
    text = "a list of epochs >= 1, possibly empty"

    def ok(self, v: Any) -> bool:
        return v is not None and all(isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in v)


_MILESTONES = _Milestones()
COLUMNS = ("loss", "mi_local", "mi_global", "loss_prior_d")  # per-step values summed per epoch


def epoch_segments(task: Task, start: int):
    """``task.data``'s epochs from ``start`` as segments, ending once ``benchmark.max_steps`` (when >= 0) steps
    are done (DIM, layer-pair DIM)."""
    b = task.cfg.benchmark
    limit = int(b.max_steps)

    def until(loader):
        for batch in loader:
            if 0 <= limit <= task.ctx.step:
                return
            yield batch

    for epoch in range(start, int(b.epochs)):
        if 0 <= limit <= task.ctx.step:
            return
        yield until(task.data.epoch_loader(epoch))


def end_epoch(task: Task, index: int, rows: np.ndarray, wall: float, columns: tuple[str, ...]) -> dict[str, float]:
    """Append the epoch's row (steps, the mean of each record column, wall time) to ``task.history``, rewrite
    ``epochs.csv`` and return the ``epoch/*`` metrics (DIM, layer-pair DIM)."""
    n = len(rows)
    row: dict[str, Any] = {"epoch": index, "steps": task.ctx.step, "epoch_steps": n * task.ctx.world_size}
    row.update({f"{c}_mean": float(rows[:, 1 + k].mean()) if n else math.nan for k, c in enumerate(columns)})
    row["wall_s"] = wall
    task.history.append(row)
    if task.out_dir is not None and task.ctx.is_global_zero:
        atomic_write_csv(task.out_dir / "epochs.csv", pd.DataFrame(task.history))
    return {f"epoch/{k}": v for k, v in row.items() if k != "epoch"}


def local_estimator_cfg(est_cfg: dict[str, Any]) -> dict[str, Any]:
    """The estimator config for local DIM: bounds with a ``partition`` option (InfoNCE, ReInfoNCE) score
    each positive (image, location) pair against the row's negatives (``partition="pair"``, Hjelm et al.'s
    NCE), unless the config sets it."""
    spec = ESTIMATORS.get(est_cfg["name"])
    if spec is not None and "partition" in inspect.signature(spec.fn).parameters:
        return {"partition": "pair", **est_cfg}
    return est_cfg


def _needs_y(est: Estimator) -> bool:
    """Bounds with a learned per-column baseline (TUBA / I_alpha with ``baseline: learned``) need y."""
    return getattr(est, "net", None) is not None


class DIMNets(nn.Module):
    """Hjelm et al.'s encoder, MI networks and estimators for alpha * global + beta * local DIM + gamma * prior."""

    def __init__(self, est_cfg: dict[str, Any], alpha: float, beta: float, gamma: float, mi_units: int = 2048,
                 global_dim: int = 64):
        super().__init__()
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.encoder = DIMEncoder(global_dim=global_dim)
        if self.beta > 0:  # local DIM: 1x1-conv net on the 128x8x8 map, fc net on Y, dot product
            self.local_net = LocalMINet(LOCAL_SHAPE[0], mi_units)
            self.local_y_net = GlobalMINet(global_dim, mi_units)
            self.local_est = build_estimator(local_estimator_cfg(est_cfg), dim_y=LOCAL_SHAPE[0])
        if self.alpha > 0:  # global DIM: net on the whole map, fc net on Y, dot product
            self.map_net = MapMINet(mi_units)
            self.global_y_net = GlobalMINet(global_dim, mi_units)
            self.global_est = build_estimator(est_cfg, dim_y=LOCAL_SHAPE[0] * LOCAL_SHAPE[1] * LOCAL_SHAPE[2])
        if self.gamma > 0:
            self.disc = PriorDiscriminator(global_dim)
            self.prior_est = build_estimator({"name": "js"})  # f-GAN JS (GAN) divergence of the DIM slides

    def trained(self) -> nn.ModuleDict:
        """The networks of the encoder's optimizer, in the order of the authors' single Adam group."""
        names = ["encoder", "local_net", "local_y_net", "map_net", "global_y_net"]
        return nn.ModuleDict({n: getattr(self, n) for n in names if hasattr(self, n)})

    def estimators(self) -> list[Estimator]:
        return [getattr(self, n) for n in ("local_est", "global_est") if hasattr(self, n)]

    def objective(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(encoder loss, local MI estimate, global MI estimate, sigmoid(Y) for the discriminator)."""
        out = self.encoder(x)
        zero = torch.zeros((), device=x.device)
        loss, mi_local, mi_global, z = zero, zero, zero, None
        local = out["local"]
        if self.beta > 0:
            s = full(local_score_tensor(self.local_y_net(out["y"]), self.local_net(local)))
            scores, jm, mm = local_scores(s)
            y = local.flatten(2).transpose(1, 2).reshape(-1, local.shape[1]) if _needs_y(self.local_est) else None
            est = self.local_est(scores, joint=jm, marginal=mm, y=y)
            loss, mi_local = loss + self.beta * est.loss, est.mi
        if self.alpha > 0:
            scores = full(global_scores(self.global_y_net(out["y"]), self.map_net(local)))
            est = self.global_est(scores, y=local.flatten(1) if _needs_y(self.global_est) else None)
            loss, mi_global = loss + self.alpha * est.loss, est.mi
        if self.gamma > 0:
            z = torch.sigmoid(out["y"])  # V = U[0, 1]^64: the encoder output goes through a sigmoid
            scores, real, fake = prior_scores(self.disc(torch.rand_like(z)), self.disc(z))
            loss = loss + self.gamma * self.prior_est(scores, joint=fake, marginal=real).loss  # labels swapped
        return loss, mi_local, mi_global, z

    def discriminator_loss(self, z: Tensor) -> Tensor:
        """The prior discriminator's loss (BCE, prior labelled real) on detached sigmoid(Y)."""
        z = z.detach()
        scores, real, fake = prior_scores(self.disc(torch.rand_like(z)), self.disc(z))
        return self.prior_est(scores, joint=real, marginal=fake).loss


def table1_markdown(df: pd.DataFrame) -> str:
    """DIM Table 1 layout: one row per (model, probe), conv / fc (1024) / Y (64) per probe dataset."""
    head = ["model", "probe"]
    cols = []
    for ds in df["probe_dataset"].unique():
        for layer, label in (("conv", "conv"), ("fc", "fc (1024)"), ("y", "Y (64)")):
            cols.append((ds, layer))
            head.append(f"{ds} {label}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (model, probe), g in df.groupby(["model", "probe"], sort=False):
        vals = [g[(g.probe_dataset == ds) & (g.layer == layer)]["top1"] for ds, layer in cols]
        lines.append("| " + " | ".join([model, probe] + [f"{v.iloc[0]:.2f}" if len(v) else "" for v in vals]) + " |")
    return "\n".join(lines) + "\n"


def _transfer_markdown(t: pd.DataFrame) -> str:
    """eta-MINE Table 2 layout: rows = (pretraining data, layer), columns = probe train/test data."""
    cols = list(t["test_dataset"].unique())
    lines = ["| train | layer | " + " | ".join(f"test {c}" for c in cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for (tr, layer), g in t.groupby(["train_dataset", "layer"], sort=False):
        vals = [g[g.test_dataset == c]["top1_acc"] for c in cols]
        lines.append(f"| {tr} | {layer} | " + " | ".join(f"{v.iloc[0]:.2f}" if len(v) else "" for v in vals) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the task


def _probe_cfg(b) -> dict[str, Any]:
    p = b.probe
    return {"kinds": tuple(p.kinds), "epochs": int(p.epochs), "lr": float(p.lr), "batch_size": int(p.batch_size),
            "milestones": tuple(int(m) for m in p.milestones), "hidden": int(p.hidden), "dropout": float(p.dropout)}


KIND = "cifar"  # what DIM needs of a dataset (mibench.data.dataset.KINDS): its probes read the CIFAR specs


@register("dim")
class DIM(Task):
    """DIM pretraining (segment = epoch) through the engine, then frozen-encoder probes through it again."""

    needs_data = KIND

    segment_unit = "epoch"
    columns = COLUMNS
    estimate_columns = ("mi_local", "mi_global")
    caps = Capabilities(uses_critic=False)  # the encoder's own local / global MI heads, never the critic group

    @classmethod
    def capabilities(cls, cfg) -> Capabilities:
        """Local DIM (beta > 0): B x B*HW with several positives a row; global: a square matrix. epochs=0 trains
        nothing (the random-init encoder's probes)."""
        w = cfg.get("dim")
        layout = "rows" if w is None or w["beta"] > 0 else "paired"
        return replace(super().capabilities(cfg), layout=layout, trains=cfg["benchmark"].get("epochs", 1) != 0)

    schema = {"dim": {"alpha": Number(0.0), "beta": Number(0.0), "gamma": Number(0.0)},
              "benchmark": {"batch_size": Int(2, why=": DIM's negatives are the batch's other images"),
                            "epochs": Int(0, why=" (0 = random-init encoder baseline)"), "mi_units": Int(1),
                            "check_every": Int(1), "max_steps": Int(1, minus_one=True), "lr": LEARNING_RATE,
                            "disc_lr": LEARNING_RATE},
              "benchmark.probe": {"kinds": Numbers(Choice(*PROBES), "probe kinds"), "epochs": Int(1),
                                  "batch_size": Int(1), "hidden": Int(1), "lr": LEARNING_RATE,
                                  "dropout": Number(0.0, 1.0, hi_open=True), "milestones": _MILESTONES,
                                  "datasets": Maybe(Numbers(Choice(*SPECS), "datasets"), "null for the pretraining one")},
              "dataset": {"augment": Bool(), "flip": Bool(), "download": Bool(), "crop_pad": Int(0)}}

    @classmethod
    def validate(cls, cfg) -> None:
        if cfg.get("dim") is None:
            raise ConfigError("benchmark=dim needs a dim preset (valid: dim=local, dim=global)")
        super().validate(cfg)

    @classmethod
    def check(cls, cfg) -> None:
        b, d, w = cfg.benchmark, cfg.dataset, cfg.dim
        if w.alpha == 0 and w.beta == 0:
            raise ConfigError("dim.alpha=0 and dim.beta=0: no MI term to maximise (valid: alpha > 0 or beta > 0)")
        for name in [n for n in (b.probe.datasets or []) if n != d.name]:
            if name not in providing(KIND):
                raise ConfigError(f"benchmark.probe.datasets has {name} (valid: {', '.join(providing(KIND))})")
            DATASETS[name].check_files(d.root, d.download)

    def setup(self) -> None:
        cfg, b, d, w = self.cfg, self.cfg.benchmark, self.cfg.dataset, self.cfg.dim
        seed = int(cfg.seed)
        self.data = CifarData(d.name, d.root, int(b.batch_size), seed=seed, download=bool(d.download),
                              augment=bool(d.augment), crop_pad=int(d.crop_pad), flip=bool(d.flip),
                              num_workers=int(cfg.hardware.get("num_workers", 0)))
        self.probe_data: dict[str, CifarData] = {}
        try:
            self.data.setup()  # load + validate the arrays before any training
            for name in list(b.probe.datasets or [d.name]):
                pdm = self.data if name == d.name else CifarData(name, d.root, int(b.batch_size), seed=seed,
                                                                 download=bool(d.download), augment=False)
                pdm.setup()
                self.probe_data[name] = pdm
        except CifarDataError as e:
            raise data_error(e) from None
        self.data.rank = self.ctx.rank
        est_cfg = OmegaConf.to_container(cfg.estimator, resolve=True)
        self.dim = DIMNets(est_cfg, w.alpha, w.beta, w.gamma, mi_units=int(b.mi_units))
        self.nets.update(self.dim.trained())
        self.estimators.extend(self.dim.estimators())
        if self.dim.gamma > 0:
            self.adversary = self.dim.disc
        self.history: list[dict[str, Any]] = []
        self.zero = torch.zeros((), device=self.device)

    def generated_data(self) -> str | None:
        """Pretraining or probe files of :mod:`mibench.data.fake_cifar` (their GENERATED marker)."""
        return generated_note([self.data, *self.probe_data.values()])

    def optim(self) -> Optim:
        b = self.cfg.benchmark
        return Optim("adam", float(b.lr), adversary_lr=float(b.disc_lr))

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.check_every)

    def segments(self, start: int):
        return epoch_segments(self, start)

    def candidates(self) -> int:
        """The longest row: local DIM scores an image's global vector against every location of the batch
        (B x B*M*M), global DIM against the batch's images (B x B)."""
        b = int(self.cfg.benchmark.batch_size)
        return b * LOCAL_SHAPE[1] * LOCAL_SHAPE[2] if self.cfg.dim.beta > 0 else b

    def step(self, batch) -> Step:
        x = self.data.normalise(batch[0].to(self.device, non_blocking=True), True)
        loss, mi_local, mi_global, z = self.dim.objective(x)
        if z is None:
            return Step(loss, [loss, mi_local, mi_global, self.zero])
        return Step(loss, [loss, mi_local, mi_global], adversary=lambda: self.dim.discriminator_loss(z))

    def progress(self, lo: int, hi: int, rows: np.ndarray, shown: np.ndarray | None = None) -> dict[str, Any]:
        """Epoch e/E and the block's mean local and global MI estimates (the probes' bar, after pretraining, shows
        each probe's training accuracy: pretraining itself is unsupervised)."""
        fields: dict[str, Any] = {"epoch": f"{self.ctx.segment + 1}/{int(self.cfg.benchmark.epochs)}"}
        for c in ("mi_local", "mi_global"):
            v = rows[:, 1 + COLUMNS.index(c)]
            v = v[np.isfinite(v)]
            fields[c.replace("_", " ")] = float(v.mean()) if len(v) else "nan"
        return fields

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        return end_epoch(self, index, rows, wall, COLUMNS)

    def evaluate(self) -> dict[str, Any]:
        """Probes on the frozen encoder for every probe dataset (NaN for a diverged, non-finite encoder)."""
        b, d = self.cfg.benchmark, self.cfg.dataset
        self.dim.to(self.device)
        enc = self.dim.encoder
        finite = all(torch.isfinite(p).all() for p in enc.parameters())
        w = self.cfg.dim
        self.model = "random_init" if int(b.epochs) == 0 else f"dim_{w.name}_{self.cfg.estimator.name}"
        rows = []
        t1 = time.perf_counter()
        for name, pdm in self.probe_data.items():
            if finite:
                tr = extract_features(enc, pdm.train_x, pdm.normalise, self.device)
                te = extract_features(enc, pdm.test_x, pdm.normalise, self.device)
                acc = train_probes(tr, pdm.train_y.to(self.device), te, pdm.test_y.to(self.device), pdm.num_classes,
                                   seed=int(self.cfg.seed), backend=self.ctx.backend, **_probe_cfg(b),
                                   progress=bool(self.cfg.trainer.get("enable_progress_bar", False))
                                   and self.ctx.is_global_zero)
                del tr, te
            else:  # a diverged encoder with non-finite weights: no probe result
                acc = {(k, layer): math.nan for k in b.probe.kinds for layer in LAYERS}
            for (kind, layer), top1 in acc.items():
                rows.append({"pretrain_dataset": d.name, "probe_dataset": name, "model": self.model,
                             "estimator": self.cfg.estimator.name, "dim": w.name, "probe": kind, "layer": layer,
                             "top1": top1})
        self.probes = pd.DataFrame(rows)
        return {"probe_wall_s": round(time.perf_counter() - t1, 3)}

    def finish(self, result: RunResult) -> None:
        cfg, b, d, w = self.cfg, self.cfg.benchmark, self.cfg.dataset, self.cfg.dim
        df, steps = self.probes, result.steps_done
        diverged = result.diverged_step is not None or any(not math.isfinite(h["loss_mean"]) for h in self.history)
        md = f"# {self.model}: pretrained on {d.name}, {len(self.history)} epochs, {steps} steps\n\n" + table1_markdown(df)
        lin = df[df.probe == "linear"]
        transfer = pd.DataFrame({"train_dataset": lin.pretrain_dataset, "test_dataset": lin.probe_dataset,
                                 "method": self.model, "layer": lin.layer, "top1_acc": lin.top1})
        if len(self.probe_data) > 1:
            md += "\n## Transfer (eta-MINE Table 2 layout: linear probe; rows = pretraining data)\n\n"
            md += _transfer_markdown(transfer)
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "probes.csv", df)
            if len(self.probe_data) > 1:
                atomic_write_csv(self.out_dir / "transfer.csv", transfer)
            atomic_write_text(self.out_dir / "table1.md", md)
            if plot_epochs(pd.DataFrame(self.history), self.out_dir / "epochs.png",
                           f"DIM {w.name} / {cfg.estimator.name} on {d.name}", self.generated_data()):
                result.figures.append(self.out_dir / "epochs.png")
        pretrain_wall = result.extra.get("train_wall_s", math.nan)
        metrics: dict[str, Any] = {"model": self.model, "dim": w.name, "alpha": w.alpha, "beta": w.beta,
                                   "gamma": w.gamma, "epochs": int(b.epochs), "epochs_done": len(self.history),
                                   "steps": steps, "batch_size": int(b.batch_size), "diverged": diverged,
                                   "pretrain_wall_s": round(pretrain_wall, 3),
                                   "probe_wall_s": result.metrics.get("probe_wall_s")}
        if self.history:
            last = self.history[-1]
            metrics.update({f"last_epoch_{c}": last[f"{c}_mean"] for c in COLUMNS})
        for r in df.itertuples():
            metrics[f"top1/{r.probe_dataset}/{r.probe}/{r.layer}"] = r.top1
        metrics["config"] = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
        result.metrics = metrics
        if diverged and result.diverged_step is None:
            result.diverged_step = steps
        result.text = (f"DIM {w.name} (alpha={w.alpha}, beta={w.beta}, gamma={w.gamma}) / {cfg.estimator.name} on "
                       f"{d.name}: {len(self.history)} epochs, {steps} steps"
                       f"{' | DIVERGED at step ' + str(result.diverged_step) if diverged else ''}"
                       f" | pretrain {pretrain_wall:.1f}s, probes {metrics['probe_wall_s']:.1f}s\n" + table1_markdown(df))
        first = df[(df.probe == df.probe.iloc[0]) & (df.layer == "conv")]["top1"] if len(df) else df
        result.objective = -float(first.iloc[0]) if len(first) and math.isfinite(first.iloc[0]) else None
        result.extra["probes"] = df
