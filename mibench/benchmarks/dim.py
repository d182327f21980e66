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
generator loss of the authors' code). Two Adam optimizers, manual optimization.

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
import time
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..estimators import REGISTRY as ESTIMATORS
from ..estimators import Estimator, build_estimator
from ..models.dim import (LAYERS, LOCAL_SHAPE, DIMEncoder, GlobalMINet, LocalMINet, MapMINet, PriorDiscriminator,
                          global_scores, local_score_tensor, local_scores, make_probe, prior_scores)
from ..results import atomic_write_csv, atomic_write_text
from .tracking import EpochTracker

PROBES = ("mlp", "linear")
COLUMNS = ("loss", "mi_local", "mi_global", "loss_prior_d")  # per-step values summed per epoch


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


class DIMModule(EpochTracker, L.LightningModule):
    """Hjelm et al.'s encoder trained with alpha * global + beta * local DIM + gamma * prior matching.

    Per step: one forward of the encoder, the MI networks and the estimators, one encoder/MI-network
    step, one discriminator step. Step values are added to a device accumulator and the first
    non-finite step is noted on the device; the host reads them every ``check_every`` steps and at
    the end of each epoch (epochs.csv), never per step.
    """

    def __init__(self, est_cfg: dict[str, Any], alpha: float, beta: float, gamma: float, mi_units: int = 2048,
                 lr: float = 1e-4, disc_lr: float = 1e-4, global_dim: int = 64, check_every: int = 100,
                 stop_on_divergence: bool = True, out_dir: str | Path | None = None):
        super().__init__()
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.lr, self.disc_lr = float(lr), float(disc_lr)
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
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.automatic_optimization = False
        self.init_tracker(len(COLUMNS), check_every, stop_on_divergence)
        self.history: list[dict[str, Any]] = []

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        params = list(self.encoder.parameters())
        groups: list[dict[str, Any]] = []
        for net, est in (("local", "local_est"), ("global", "global_est")):
            if hasattr(self, est):
                nets = (self.local_net, self.local_y_net) if net == "local" else (self.map_net, self.global_y_net)
                params += [p for n in nets for p in n.parameters()]
                groups += getattr(self, est).param_groups(self.lr)
        opts = [torch.optim.Adam([{"params": params, "lr": self.lr}] + groups, lr=self.lr)]
        if self.gamma > 0:
            opts.append(torch.optim.Adam(self.disc.parameters(), lr=self.disc_lr))
        return opts

    def objective(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(encoder loss, local MI estimate, global MI estimate, sigmoid(Y) for the discriminator)."""
        out = self.encoder(x)
        zero = torch.zeros((), device=x.device)
        loss, mi_local, mi_global, z = zero, zero, zero, None
        local = out["local"]
        if self.beta > 0:
            s = local_score_tensor(self.local_y_net(out["y"]), self.local_net(local)).float()
            scores, jm, mm = local_scores(s)
            y = local.flatten(2).transpose(1, 2).reshape(-1, local.shape[1]) if _needs_y(self.local_est) else None
            est = self.local_est(scores, joint=jm, marginal=mm, y=y)
            loss, mi_local = loss + self.beta * est.loss, est.mi
        if self.alpha > 0:
            scores = global_scores(self.global_y_net(out["y"]), self.map_net(local)).float()
            est = self.global_est(scores, y=local.flatten(1) if _needs_y(self.global_est) else None)
            loss, mi_global = loss + self.alpha * est.loss, est.mi
        if self.gamma > 0:
            z = torch.sigmoid(out["y"])  # V = U[0, 1]^64: the encoder output goes through a sigmoid
            scores, real, fake = prior_scores(self.disc(torch.rand_like(z)), self.disc(z))
            loss = loss + self.gamma * self.prior_est(scores, joint=fake, marginal=real).loss  # labels swapped
        return loss, mi_local, mi_global, z

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        loss, mi_local, mi_global, z = self.objective(x)
        opts[0].zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opts[0].step()
        d_loss = torch.zeros((), device=x.device)
        if z is not None:
            z = z.detach()
            scores, real, fake = prior_scores(self.disc(torch.rand_like(z)), self.disc(z))
            d_loss = self.prior_est(scores, joint=real, marginal=fake).loss  # = BCE, prior labelled real
            opts[1].zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opts[1].step()
        self.track(torch.stack((loss, mi_local, mi_global, d_loss)).detach().float())

    def on_train_epoch_end(self) -> None:
        sums, n = self.epoch_sums()
        row: dict[str, Any] = {"epoch": int(self.current_epoch), "steps": self._t, "epoch_steps": n}
        row.update({f"{c}_mean": float(sums[k] / n) if n else math.nan for k, c in enumerate(COLUMNS)})
        row["wall_s"] = self.epoch_wall()
        self.history.append(row)
        if self.logger is not None:
            self.logger.log_metrics({f"epoch/{k}": v for k, v in row.items() if k != "epoch"}, step=self._t)
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "epochs.csv", pd.DataFrame(self.history))


# ---------------------------------------------------------------------------------------------
# probes


@torch.no_grad()
def extract_features(encoder: nn.Module, x_uint8: Tensor, normalise, device: torch.device | str = "cpu",
                     batch_size: int = 500) -> dict[str, Tensor]:
    """conv / fc / Y features of the frozen encoder (eval mode, no augmentation) for all of ``x_uint8``."""
    was = encoder.training
    encoder.eval()
    dev = torch.device(device)
    parts: dict[str, list[Tensor]] = {k: [] for k in LAYERS}
    for i in range(0, x_uint8.shape[0], batch_size):
        out = encoder(normalise(x_uint8[i: i + batch_size].to(dev), False))
        for k in LAYERS:
            parts[k].append(out[k].flatten(1).float())
    encoder.train(was)
    return {k: torch.cat(v) for k, v in parts.items()}


def train_probes(train_f: dict[str, Tensor], train_y: Tensor, test_f: dict[str, Tensor], test_y: Tensor,
                 num_classes: int, kinds: tuple[str, ...] = PROBES, epochs: int = 20, lr: float = 1e-3,
                 batch_size: int = 256, milestones: tuple[int, ...] = (), hidden: int = 200, dropout: float = 0.1,
                 seed: int = 0) -> dict[tuple[str, str], float]:
    """Train one probe per (kind, layer) on precomputed features; return test top-1 (%) per (kind, layer).

    All probes see the same shuffled minibatches; each has its own parameters, so one Adam over all
    of them equals one Adam per probe (Adam is per-parameter). Cross-entropy, MultiStepLR(0.1).
    """
    dev = train_y.device
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probes = nn.ModuleDict({f"{k}_{layer}": make_probe(k, train_f[layer].shape[1], num_classes, hidden, dropout)
                            for k in kinds for layer in LAYERS}).to(dev)
    opt = torch.optim.Adam(probes.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
    n = train_y.shape[0]
    nb = max(1, n // batch_size)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)[: nb * batch_size].view(nb, -1).to(dev) if n >= batch_size \
            else torch.randperm(n, generator=gen).view(1, -1).to(dev)
        probes.train()
        for idx in perm:
            yb = train_y[idx]
            loss = sum(F.cross_entropy(p(train_f[name.split("_", 1)[1]][idx]), yb) for name, p in probes.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    probes.eval()
    out: dict[tuple[str, str], float] = {}
    with torch.no_grad():
        for name, p in probes.items():
            kind, layer = name.split("_", 1)
            pred = torch.cat([p(test_f[layer][i: i + 4096]).argmax(1) for i in range(0, test_y.shape[0], 4096)])
            out[(kind, layer)] = 100.0 * float((pred == test_y).float().mean())
    return out


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
# runner and validator


def _probe_cfg(b) -> dict[str, Any]:
    p = b.probe
    return {"kinds": tuple(p.kinds), "epochs": int(p.epochs), "lr": float(p.lr), "batch_size": int(p.batch_size),
            "milestones": tuple(int(m) for m in p.milestones), "hidden": int(p.hidden), "dropout": float(p.dropout)}


def run_dim(cfg, out_dir: Path) -> dict[str, Any]:
    """Pretrain with DIM (``benchmark.epochs`` > 0) or keep the random init, then run the probes."""
    from omegaconf import OmegaConf

    from ..config import ConfigError
    from ..data.cifar import CifarDataError, CifarDataModule
    from ..train import build_trainer

    b, d, w = cfg.benchmark, cfg.dataset, cfg.dim
    num_workers = int(cfg.hardware.get("num_workers", 0))
    dm = CifarDataModule(d.name, d.root, int(b.batch_size), seed=int(cfg.seed), download=bool(d.download),
                         augment=bool(d.augment), crop_pad=int(d.crop_pad), flip=bool(d.flip), num_workers=num_workers)
    probe_sets = list(b.probe.datasets or [d.name])
    try:
        dm.setup("fit")  # load + validate the arrays before any training
        probe_dms = {}
        for name in probe_sets:
            pdm = dm if name == d.name else CifarDataModule(name, d.root, int(b.batch_size), seed=int(cfg.seed),
                                                             download=bool(d.download), augment=False)
            pdm.setup("fit")
            probe_dms[name] = pdm
    except CifarDataError as e:
        raise ConfigError(str(e)) from None
    est_cfg = OmegaConf.to_container(cfg.estimator, resolve=True)
    module = DIMModule(est_cfg, w.alpha, w.beta, w.gamma, mi_units=int(b.mi_units), lr=float(b.lr),
                       disc_lr=float(b.disc_lr), check_every=int(b.check_every),
                       stop_on_divergence=bool(b.stop_on_divergence), out_dir=out_dir)
    epochs = int(b.epochs)
    t0 = time.perf_counter()
    if epochs > 0:
        trainer = build_trainer(cfg, out_dir, max_steps=int(b.max_steps), max_epochs=epochs, log_every_n_steps=1)
        trainer.fit(module, datamodule=dm)
        device = module.device
    else:
        device = torch.device("cuda" if cfg.hardware.accelerator in ("gpu", "cuda") else "cpu")
        module.to(device)
    pretrain_wall = time.perf_counter() - t0
    diverged = module.diverged_step is not None or any(not math.isfinite(h["loss_mean"]) for h in module.history)
    finite = all(torch.isfinite(p).all() for p in module.encoder.parameters())

    model = "random_init" if epochs == 0 else f"dim_{w.name}_{cfg.estimator.name}"
    rows = []
    t1 = time.perf_counter()
    for name, pdm in probe_dms.items():
        if finite:
            tr = extract_features(module.encoder, pdm.train_x, pdm.normalise, device)
            te = extract_features(module.encoder, pdm.test_x, pdm.normalise, device)
            acc = train_probes(tr, pdm.train_y.to(device), te, pdm.test_y.to(device), pdm.num_classes,
                               seed=int(cfg.seed), **_probe_cfg(b))
            del tr, te
        else:  # a diverged encoder with non-finite weights: no probe result
            acc = {(k, layer): math.nan for k in b.probe.kinds for layer in LAYERS}
        for (kind, layer), top1 in acc.items():
            rows.append({"pretrain_dataset": d.name, "probe_dataset": name, "model": model, "estimator":
                         cfg.estimator.name, "dim": w.name, "probe": kind, "layer": layer, "top1": top1})
    probe_wall = time.perf_counter() - t1
    df = pd.DataFrame(rows)
    atomic_write_csv(out_dir / "probes.csv", df)
    md = f"# {model}: pretrained on {d.name}, {len(module.history)} epochs, {module._t} steps\n\n" + table1_markdown(df)
    lin = df[df.probe == "linear"]
    transfer = pd.DataFrame({"train_dataset": lin.pretrain_dataset, "test_dataset": lin.probe_dataset,
                             "method": model, "layer": lin.layer, "top1_acc": lin.top1})
    if len(probe_dms) > 1:
        atomic_write_csv(out_dir / "transfer.csv", transfer)
        md += "\n## Transfer (eta-MINE Table 2 layout: linear probe; rows = pretraining data)\n\n"
        md += _transfer_markdown(transfer)
    atomic_write_text(out_dir / "table1.md", md)

    metrics: dict[str, Any] = {"model": model, "dim": w.name, "alpha": w.alpha, "beta": w.beta, "gamma": w.gamma,
                               "epochs": epochs, "epochs_done": len(module.history), "steps": module._t,
                               "batch_size": int(b.batch_size), "diverged": diverged,
                               "pretrain_wall_s": round(pretrain_wall, 3), "probe_wall_s": round(probe_wall, 3)}
    if module.history:
        last = module.history[-1]
        metrics.update({f"last_epoch_{c}": last[f"{c}_mean"] for c in COLUMNS})
    for r in rows:
        metrics[f"top1/{r['probe_dataset']}/{r['probe']}/{r['layer']}"] = r["top1"]
    metrics["config"] = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
    text = (f"DIM {w.name} (alpha={w.alpha}, beta={w.beta}, gamma={w.gamma}) / {cfg.estimator.name} on {d.name}: "
            f"{len(module.history)} epochs, {module._t} steps"
            f"{' | DIVERGED at step ' + str(module.diverged_step) if diverged else ''}"
            f" | pretrain {pretrain_wall:.1f}s, probes {probe_wall:.1f}s\n" + table1_markdown(df))
    div_step = (module.diverged_step if module.diverged_step is not None else module._t) if diverged else None
    first = df[(df.probe == df.probe.iloc[0]) & (df.layer == "conv")]["top1"]
    return {"metrics": metrics, "text": text, "diverged_step": div_step, "steps_done": module._t,
            "objective": -float(first.iloc[0]) if len(first) and math.isfinite(first.iloc[0]) else None,
            "probes": df}


def validate_dim(cfg) -> None:
    """benchmark=dim: the dim preset, the estimator's fit to DIM's layouts, sizes, probes, data present."""
    from ..config import ConfigError, _num, check_int, check_positive
    from ..data.cifar import SPECS, CifarDataError, check_available

    b, d = cfg.benchmark, cfg.dataset
    w = cfg.get("dim")
    if w is None:
        raise ConfigError("benchmark=dim needs a dim preset (valid: dim=local, dim=global)")
    for key in ("alpha", "beta", "gamma"):
        if not (_num(w.get(key)) and w.get(key) >= 0):
            raise ConfigError(f"dim.{key}={w.get(key)} is invalid (valid: a number >= 0)")
    if w.alpha == 0 and w.beta == 0:
        raise ConfigError("dim.alpha=0 and dim.beta=0: no MI term to maximise (valid: alpha > 0 or beta > 0)")
    if cfg.estimator.name == "alpha" and w.beta > 0:
        raise ConfigError("estimator=alpha needs square batches of paired samples, which local DIM does not have "
                          "(valid: dim=global, or another estimator)")
    check_int(b, "batch_size", 2, "benchmark", ": DIM's negatives are the batch's other images")
    check_int(b, "epochs", 0, "benchmark", " (0 = random-init encoder baseline)")
    check_int(b, "mi_units", 1, "benchmark")
    check_int(b, "check_every", 1, "benchmark")
    if not (isinstance(b.max_steps, int) and (b.max_steps == -1 or b.max_steps >= 1)):
        raise ConfigError(f"benchmark.max_steps={b.max_steps} is invalid (valid: -1 for no limit, or an integer >= 1)")
    check_positive(b, "disc_lr", "benchmark", "a positive learning rate")
    p = b.probe
    kinds = list(p.kinds or [])
    if not kinds or any(k not in PROBES for k in kinds):
        raise ConfigError(f"benchmark.probe.kinds={kinds} is invalid (valid: a non-empty list of {', '.join(PROBES)})")
    check_int(p, "epochs", 1, "benchmark.probe")
    check_int(p, "batch_size", 1, "benchmark.probe")
    check_int(p, "hidden", 1, "benchmark.probe")
    check_positive(p, "lr", "benchmark.probe", "a positive learning rate")
    if not (_num(p.dropout) and 0 <= p.dropout < 1):
        raise ConfigError(f"benchmark.probe.dropout={p.dropout} is invalid (valid: 0 <= dropout < 1)")
    if not all(isinstance(m, int) and m >= 1 for m in p.milestones):
        raise ConfigError(f"benchmark.probe.milestones={list(p.milestones)} is invalid (valid: epochs >= 1)")
    for key in ("augment", "flip", "download"):
        if not isinstance(d.get(key), bool):
            raise ConfigError(f"dataset.{key}={d.get(key)} is invalid (valid: true or false)")
    names = [d.name] + [n for n in (p.datasets or []) if n != d.name]
    for name in names:
        if name not in SPECS:
            raise ConfigError(f"benchmark.probe.datasets has {name} (valid: {', '.join(SPECS)})")
        try:
            check_available(d.root, name, d.download)
        except CifarDataError as e:
            raise ConfigError(str(e)) from None
