"""MI Jigsaw (``benchmark=jigsaw``): the eta-MINE paper's self-supervised jigsaw task (§5, Appendix D, Table 3).

Pretext training (segment = epoch over the training subset; ``benchmark.epochs`` / ``benchmark.max_steps`` as in
``benchmark=dim``): each minibatch takes ``images_per_batch`` (10) images and ``perms_per_batch`` (16) permutations
of the 100-permutation set, drawn afresh for every minibatch, and builds the 10 x 16 = 160 puzzles (each with its
own random crop / grayscale / patch jitter, :mod:`mibench.data.jigsaw`). The ResNet-50 encoder E embeds every
patch (2048 each), then

- ``objective=ce``: the descrambler classifies the permutation (100-way cross-entropy; Noroozi & Favaro);
  the record's ``mi`` is the bound log 100 - CE (uniform permutations, Barber-Agakov);
- ``objective=mi``: the cosine witness ``S[i, p] = f(E(x_pi_i), y_p)`` for the minibatch's permutations gives the
  score matrix of any registry estimator (:func:`mibench.models.jigsaw.witness_layout`; the paper's pair:
  ``estimator=mine`` (DV-MINE) and ``estimator=eta_mine``): joint pairs = each puzzle with its permutation,
  marginal pairs = each puzzle with one of 16 further permutations that scrambled nothing in the minibatch.

Per step: loss, mi, joint, marginal and the batch's 100-way permutation top-1 (``acc``; for ``mi`` the argmax of the
witness over the 100 permutation embeddings). Per evaluation (every ``pretext.every`` epochs and at the end): the
pretext top-1 on validation puzzles (test-time pipeline: centre crops, no grayscale; fixed permutations).
At the end: the frozen encoder (eval mode) embeds every image of the train / val subsets (232 resize, 192 centre
crop, 3 x 3 patches of 64, mean of the 9 vectors) and a linear classifier (Adam 1e-4) is trained per probe seed;
val top-1 / top-5 / top-10, those with k < the number of classes (a top-5 of 4 classes is 100 % whatever was learned:
table3.md says "trivial"). A run on a generated tree (its GENERATED.txt) says so in its console line, table3.md and
record. Outputs: steps.csv, epochs.csv, probes.csv, summary.csv, table3.md, result.json.
"""
from __future__ import annotations

import math
from dataclasses import replace
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from ..checks import LEARNING_RATE, Bool, Choice, ConfigError, Int, Number, Numbers, Rule, check_rules
from ..data.imagefolder import ImageFolder, ImageFolderError, is_generated, scan, write_generated_tree
from ..data.jigsaw import Geometry, permutation_set, puzzle_patches, scramble, target_patches
from ..engine import Capabilities, Engine, Optim, RunResult, RunContext, Step, Task, data_error, register
from ..models import SCHEMA as MODEL_SCHEMA
from ..models import build_model
from ..models.jigsaw import NEGATIVES, CosineWitness, Descrambler, PatchEncoder, witness_layout
from ..probes import Probes
from ..results import atomic_write_csv, atomic_write_text, plot_epochs
from ..precision import full

COLUMNS = ("loss", "mi", "joint", "marginal", "acc")
TOPK = (1, 5, 10)
TABLE3_COLUMNS = ("DV-MINE", "eta-MINE", "CE")


def method_label(objective: str, estimator: str) -> str:
    """Table 3's column of a run: CE, DV-MINE (estimator=mine or dv), eta-MINE (eta_mine), else the estimator."""
    if objective == "ce":
        return "CE"
    return {"mine": "DV-MINE", "dv": "DV-MINE", "eta_mine": "eta-MINE"}.get(estimator, estimator)


def reference_table3() -> pd.DataFrame:
    """The paper's Table 3 (mibench/reference/eta_table3.csv): method, metric, mean, std, models."""
    from importlib import resources

    with resources.files("mibench.reference").joinpath("eta_table3.csv").open() as f:
        return pd.read_csv(f)


def shown_topk(classes: int) -> tuple[int, ...]:
    """The top-k accuracies that say something with ``classes`` classes: k < classes (top-5 of 4 classes is 100 %
    whatever the encoder learned, so it is not a result)."""
    return tuple(k for k in TOPK if k < classes)


def table3_markdown(summary: pd.DataFrame, classes: int | None = None, generated: str | None = None) -> str:
    """Table 3's layout (rows top1 / top5 / top10, columns DV-MINE | eta-MINE | CE) for the methods in
    ``summary`` (method, metric, mean, std, n), each beside the published mean ± std. A top-k with k >= ``classes``
    reads "trivial" (not a number); a run on ``generated`` data (Task.generated_data) is labelled GENERATED in its
    column's header, under a line saying what the data was."""
    ref = reference_table3()
    ours = list(dict.fromkeys(summary["method"]))
    head = ["metric"]
    ours_label = "this run, GENERATED data" if generated else "this run"
    for m in list(TABLE3_COLUMNS) + [m for m in ours if m not in TABLE3_COLUMNS]:
        if m in ours:
            head.append(f"{m} ({ours_label})")
        if m in TABLE3_COLUMNS:
            head.append(f"{m} (paper)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for metric in (f"top{k}" for k in TOPK):
        cells = [metric]
        for m in list(TABLE3_COLUMNS) + [m for m in ours if m not in TABLE3_COLUMNS]:
            if m in ours:
                r = summary[(summary.method == m) & (summary.metric == metric)]
                trivial = classes is not None and int(metric[3:]) >= classes
                cells.append(f"trivial ({classes} classes)" if trivial else "" if r.empty else
                             f"{r['mean'].iloc[0]:.1f} ± {r['std'].iloc[0]:.1f} (n={int(r['n'].iloc[0])})")
            if m in TABLE3_COLUMNS:
                r = ref[(ref.method == m) & (ref.metric == metric)]
                cells.append("" if r.empty else f"{r['mean'].iloc[0]:.1f} ± {r['std'].iloc[0]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = f"GENERATED DATA: {generated}; these numbers say nothing about the paper's.\n\n" if generated else ""
    return note + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the linear classifier of the target task (reuses the engine-trained probes of mibench.probes)


class LinearProbe(Probes):
    """One linear classifier C on the frozen encoder's mean patch features (``train_f = {"mean": [n, F]}``)."""

    name = "jigsaw_probe"

    def setup(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.nets["linear_mean"] = nn.Linear(self.train_f["mean"].shape[1], self.num_classes)

    @torch.no_grad()
    def topk(self, test_f: Tensor, test_y: Tensor, ks: tuple[int, ...] = TOPK) -> dict[str, float]:
        """Top-k accuracy (%) on ``test_f`` (k larger than the class count: 100)."""
        self.nets.eval()
        logits = self.nets["linear_mean"](test_f)
        rank = logits.argsort(dim=1, descending=True)
        hit = rank == test_y.view(-1, 1)
        return {f"top{k}": 100.0 * float(hit[:, :k].any(1).float().mean()) for k in ks}


# ---------------------------------------------------------------------------------------------
# the task


class _Seeds(Rule):
    text = "a non-empty list of seeds (integers >= 0)"

    def ok(self, v: Any) -> bool:
        return v is not None and len(v) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v)


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


def geometry(b) -> Geometry:
    g = b.geometry
    return Geometry(int(g.resize), int(g.crop), int(g.patch), float(g.gray_p), int(g.target_resize), int(g.target_crop))


@register("jigsaw")
class Jigsaw(Task):
    """Jigsaw pretext training (CE or any MI estimator), pretext top-1 per evaluation, linear probe at the end."""

    needs_data = "image_folder"

    segment_unit = "epoch"
    columns = COLUMNS
    finite_columns = ("loss", "mi", "acc")  # CE has no joint / marginal terms (NaN)
    estimate_columns = ("mi",)
    # y: the one-hot of every score column's permutation; the critic: the cosine witness of the patch encoder, never
    # the critic group; a run of objective=ce is named "ce"
    caps = Capabilities(gives_y=True, uses_critic=False, method="ce")

    @classmethod
    def capabilities(cls, cfg) -> Capabilities:
        """objective=ce trains the descrambler with cross-entropy: no estimator; negatives=batch: a square matrix."""
        b = cfg["benchmark"]
        return replace(super().capabilities(cfg), uses_estimator=b.get("objective") != "ce",
                       layout="paired" if b.get("negatives") == "batch" else "rows")

    schema = {"benchmark": {"objective": Choice("ce", "mi"), "epochs": Int(1), "max_steps": Int(1, minus_one=True),
                            "images_per_batch": Int(1), "perms_per_batch": Int(1), "n_perms": Int(2, 362880),
                            "perm_seed": Int(0), "negatives": Choice(*NEGATIVES), "lr": LEARNING_RATE,
                            "check_every": Int(1)},
              "benchmark.witness": {"dim": Int(4), "channels": Numbers(Int(1), "channel counts")},
              "benchmark.descrambler": {"proj": Int(1), "hidden": Int(1), "dropout": Number(0.0, 1.0, hi_open=True)},
              "benchmark.pretext": {"every": Int(1), "images": Int(1, minus_one=True), "perms": Int(1)},
              "benchmark.probe": {"epochs": Int(0), "lr": LEARNING_RATE, "batch_size": Int(1), "seeds": _Seeds()},
              "benchmark.geometry": {"resize": Int(3), "crop": Int(3), "patch": Int(1),
                                     "gray_p": Number(0.0, 1.0), "target_resize": Int(3), "target_crop": Int(3)},
              "dataset": {"fraction": Number(0.0, 1.0, lo_open=True), "subset_seed": Int(0), "verify": Bool(),
                          "cache": Bool(), "generated": Bool(), "max_per_class": Int(1, minus_one=True)}}

    @classmethod
    def check(cls, cfg) -> None:
        b, d = cfg.benchmark, cfg.dataset
        check_rules(cfg, {"model": MODEL_SCHEMA}, present=True)
        try:
            geometry(b).check()
        except ValueError as e:
            raise ConfigError(f"benchmark.geometry: {e}") from None
        used = int(b.perms_per_batch) * (1 if b.negatives == "batch" else 2)
        if used > int(b.n_perms):
            raise ConfigError(f"benchmark.perms_per_batch={b.perms_per_batch} needs {used} of the n_perms={b.n_perms} "
                              f"permutations per minibatch (used + unused; valid: 2 * perms_per_batch <= n_perms)")
        if bool(d.generated) and not _root(d).exists():
            return  # written in setup
        try:
            classes, files, labels = scan(_root(d), str(d.train_split))
            scan(_root(d), str(d.val_split), classes)
        except ImageFolderError as e:
            raise ConfigError(str(e)) from None

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        cfg, b, d = self.cfg, self.cfg.benchmark, self.cfg.dataset
        self.geom = geometry(b)
        self.objective = str(b.objective)
        self.n_perms, self.n_used, self.n_images = int(b.n_perms), int(b.perms_per_batch), int(b.images_per_batch)
        root = _root(d)
        if bool(d.generated) and not root.exists():
            write_generated_tree(root, seed=int(d.subset_seed))
        mpc = None if int(d.max_per_class) < 0 else int(d.max_per_class)
        try:
            self.train_set = ImageFolder(root, str(d.train_split), float(d.fraction), int(d.subset_seed),
                                         cache=bool(d.cache), max_per_class=mpc)
            self.val_set = ImageFolder(root, str(d.val_split), float(d.fraction), int(d.subset_seed),
                                       classes=self.train_set.classes, cache=bool(d.cache), max_per_class=mpc)
            if bool(d.verify):
                self.train_set.verify()
                self.val_set.verify()
        except ImageFolderError as e:
            raise data_error(e) from None
        if len(self.train_set) < self.n_images:
            raise ConfigError(f"the training subset has {len(self.train_set)} images, fewer than "
                              f"benchmark.images_per_batch={self.n_images} (valid: a smaller batch or more data)")
        perms, self.min_hamming = permutation_set(self.n_perms, int(b.perm_seed), b.get("perm_cache"))
        self.perms = torch.from_numpy(perms)
        backbone = build_model(OmegaConf.to_container(cfg.model, resolve=True), None)
        with torch.no_grad():
            was = backbone.training
            backbone.eval()
            feat = int(backbone(torch.zeros(2, 3, self.geom.patch, self.geom.patch)).shape[1])
            backbone.train(was)
        self.nets["encoder"] = PatchEncoder(backbone, feat)
        if self.objective == "ce":
            c = b.descrambler
            self.nets["descrambler"] = Descrambler(feat, self.n_perms, int(c.proj), int(c.hidden), float(c.dropout))
            self.estimator = None
        else:
            w = b.witness
            self.nets["witness"] = CosineWitness(feat, self.n_perms, int(w.dim), tuple(int(c) for c in w.channels))
            self.estimator = self.build_estimator(dim_y=self.n_perms)
        self.history: list[dict[str, Any]] = []
        self.nan = torch.full((), math.nan, device=self.device)

    def generated_data(self) -> str | None:
        """A tree written by ``write_generated_tree`` (its GENERATED.txt), never ImageNet."""
        return (f"a GENERATED image tree ({self.train_set.num_classes} classes, {_root(self.cfg.dataset)}), not ImageNet"
                if is_generated(_root(self.cfg.dataset)) else None)

    def optim(self) -> Optim:
        return Optim("adam", float(self.cfg.benchmark.lr))  # Appendix D: Adam (0.9, 0.999), 1e-4, no weight decay

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.check_every)

    def steps_per_epoch(self) -> int:
        return len(self.train_set) // self.n_images

    def total_steps(self) -> int | None:
        b = self.cfg.benchmark
        n = int(b.epochs) * self.steps_per_epoch()
        return n if int(b.max_steps) < 0 else min(n, int(b.max_steps))

    def candidates(self) -> int:
        """The longest row of :func:`witness_layout`: the puzzles (``negatives: batch``) or the batch's used and
        unused permutations."""
        return max(self.n_images * self.n_used, 2 * self.n_used)

    def true_mi_of(self, rows: np.ndarray) -> float:
        """log P: I(puzzle; permutation) <= H(permutation) = log P, P = ``benchmark.n_perms``."""
        return math.log(self.n_perms)

    def no_work_hint(self) -> str:
        return "check benchmark.images_per_batch against the training subset"

    # ------------------------------------------------------------------ batches
    def segments(self, start: int):
        b = self.cfg.benchmark
        for epoch in range(start, int(b.epochs)):
            if self._stop():
                return
            yield self._epoch(epoch)

    def _stop(self) -> bool:
        limit = int(self.cfg.benchmark.max_steps)
        return 0 <= limit <= self.ctx.step

    def _epoch(self, epoch: int):
        gen = _generator(int(self.cfg.seed), epoch)
        order = torch.randperm(len(self.train_set), generator=gen)
        for k in range(self.steps_per_epoch()):
            if self._stop():
                return
            yield self.minibatch(order[k * self.n_images: (k + 1) * self.n_images], gen)

    def minibatch(self, image_idx: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        """The 10 x 16 puzzles of one minibatch: patches [N, 9, 3, P, P] (scrambled), ``label`` (index into the
        permutation set), ``slot`` (which of the minibatch's used permutations), ``choice`` (the minibatch's
        used + unused permutation indices)."""
        imgs = self.train_set.load(image_idx, self.geom.resize)
        choice = torch.randperm(self.n_perms, generator=gen)[: 2 * self.n_used if 2 * self.n_used <= self.n_perms
                                                            else self.n_used]
        n_img = imgs.shape[0]
        which = torch.arange(n_img).repeat_interleave(self.n_used)
        slot = torch.arange(self.n_used).repeat(n_img)
        label = choice[slot]
        patches = puzzle_patches(imgs[which], self.geom, train=True, generator=gen)
        return {"patches": scramble(patches, self.perms[label]), "label": label, "slot": slot, "choice": choice}

    # ------------------------------------------------------------------ the step
    def step(self, batch: dict[str, Tensor]) -> Step:
        dev = self.device
        x = batch["patches"].to(dev, non_blocking=True)
        label = batch["label"].to(dev)
        feats = self.nets["encoder"](x)
        if self.objective == "ce":
            logits = self.nets["descrambler"](feats)
            loss = F.cross_entropy(logits, label)
            acc = (logits.argmax(1) == label).float().mean()
            return Step(loss, [loss, math.log(self.n_perms) - loss, self.nan, self.nan, acc])
        choice, slot = batch["choice"].to(dev), batch["slot"].to(dev)
        s_all = self.nets["witness"](feats, torch.arange(self.n_perms, device=dev))  # [N, 100]
        scores, joint, marginal, cols = witness_layout(s_all[:, choice], slot, self.n_used,
                                                       str(self.cfg.benchmark.negatives))
        y = F.one_hot(choice[cols], self.n_perms).to(scores.dtype)
        est = self.estimator(scores, joint, marginal, y=y)
        acc = (s_all.argmax(1) == label).float().mean()
        return Step(est.loss, [est.loss, est.mi, est.joint, est.marginal, acc])

    # ------------------------------------------------------------------ evaluations
    @torch.no_grad()
    def pretext_accuracy(self) -> float:
        """100-way permutation top-1 (%) on validation puzzles: test-time pipeline, ``pretext.perms`` fixed random
        permutations per image (the same at every evaluation), nets in eval mode."""
        p = self.cfg.benchmark.pretext
        n = len(self.val_set) if int(p.images) < 0 else min(len(self.val_set), int(p.images))
        gen = _generator(int(self.cfg.seed), 7_919)
        labels = torch.stack([torch.randperm(self.n_perms, generator=gen)[: int(p.perms)] for _ in range(n)])
        was = self.nets.training
        self.nets.eval()
        hits, total = 0, 0
        try:
            for lo in range(0, n, self.n_images):
                idx = torch.arange(lo, min(n, lo + self.n_images))
                patches = puzzle_patches(self.val_set.load(idx, self.geom.resize), self.geom, train=False)
                lab = labels[idx].reshape(-1)
                x = scramble(patches.repeat_interleave(labels.shape[1], 0), self.perms[lab]).to(self.device)
                feats = self.nets["encoder"](x)
                if self.objective == "ce":
                    pred = self.nets["descrambler"](feats).argmax(1)
                else:
                    pred = self.nets["witness"](feats, torch.arange(self.n_perms, device=self.device)).argmax(1)
                hits += int((pred.cpu() == lab).sum())
                total += lab.numel()
        finally:
            self.nets.train(was)
        return 100.0 * hits / max(1, total)

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        b = self.cfg.benchmark
        n = len(rows)
        row: dict[str, Any] = {"epoch": index, "steps": self.ctx.step, "epoch_steps": n}
        row.update({f"{c}_mean": float(np.nanmean(rows[:, 1 + k])) if n and np.isfinite(rows[:, 1 + k]).any()
                    else math.nan for k, c in enumerate(COLUMNS)})
        last = index + 1 == int(b.epochs) or self._stop()
        row["pretext_top1"] = self.pretext_accuracy() if ((index + 1) % int(b.pretext.every) == 0 or last) else math.nan
        row["wall_s"] = wall
        self.history.append(row)
        if self.out_dir is not None and self.ctx.is_global_zero:
            atomic_write_csv(self.out_dir / "epochs.csv", pd.DataFrame(self.history))
        return {f"epoch/{k}": v for k, v in row.items() if k != "epoch" and not (isinstance(v, float) and math.isnan(v))}

    @torch.no_grad()
    def features(self, data: ImageFolder, chunk: int = 64) -> Tensor:
        """Target-task features: mean over the 9 patches of the frozen encoder's vectors, [n, F]."""
        enc = self.nets["encoder"]
        out = []
        for lo in range(0, len(data), chunk):
            imgs = data.load(range(lo, min(len(data), lo + chunk)), self.geom.target_resize)
            out.append(full(enc(target_patches(imgs, self.geom).to(self.device)).mean(1)))
        return torch.cat(out)

    def evaluate(self) -> dict[str, Any]:
        b = self.cfg.benchmark
        self.nets.to(self.device)
        t0 = time.perf_counter()
        enc = self.nets["encoder"]
        finite = all(torch.isfinite(p).all() for p in enc.parameters())
        rows = []
        was = self.nets.training
        self.nets.eval()
        if finite:
            tr, te = self.features(self.train_set), self.features(self.val_set)
            ytr, yte = self.train_set.labels.to(self.device), self.val_set.labels.to(self.device)
        for s in b.probe.seeds:
            if finite:
                probe = LinearProbe(RunContext(self.ctx.backend), {"mean": tr}, ytr, self.train_set.num_classes, kinds=("linear",),
                                    epochs=int(b.probe.epochs), lr=float(b.probe.lr),
                                    batch_size=min(int(b.probe.batch_size), len(ytr)), seed=int(s))
                probe.setup()
                if int(b.probe.epochs) > 0:
                    Engine(probe, self.ctx.backend, stop_on_divergence=False).train()
                acc = probe.topk(te, yte, shown_topk(self.train_set.num_classes))
            else:
                acc = {f"top{k}": math.nan for k in shown_topk(self.train_set.num_classes)}
            rows.append({"probe_seed": int(s), **acc})
        self.nets.train(was)
        self.probes = pd.DataFrame(rows)
        return {"probe_wall_s": round(time.perf_counter() - t0, 3)}

    def finish(self, result: RunResult) -> None:
        cfg, b, d = self.cfg, self.cfg.benchmark, self.cfg.dataset
        est_name = str(cfg.estimator.name) if self.objective == "mi" else "none"
        method = method_label(self.objective, est_name)
        steps = result.steps_done
        diverged = result.diverged_step is not None
        probes = self.probes.assign(method=method, objective=self.objective, estimator=est_name, seed=int(cfg.seed))
        ref = reference_table3()
        summ = []
        for k in shown_topk(self.train_set.num_classes):
            v = probes[f"top{k}"]
            r = ref[(ref.method == method) & (ref.metric == f"top{k}")]
            summ.append({"method": method, "objective": self.objective, "estimator": est_name, "metric": f"top{k}",
                         "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
                         "paper_mean": float(r["mean"].iloc[0]) if len(r) else math.nan,
                         "paper_std": float(r["std"].iloc[0]) if len(r) else math.nan})
        summary = pd.DataFrame(summ)
        result.summary = summary
        md = table3_markdown(summary, self.train_set.num_classes, self.generated_data())
        pretext = [h["pretext_top1"] for h in self.history if not math.isnan(h["pretext_top1"])]
        last_pretext = pretext[-1] if pretext else math.nan
        if self.out_dir is not None and self.ctx.is_global_zero:
            atomic_write_csv(self.out_dir / "probes.csv", probes)
            atomic_write_csv(self.out_dir / "summary.csv", summary)
            atomic_write_text(self.out_dir / "table3.md", md)
            if plot_epochs(pd.DataFrame(self.history), self.out_dir / "epochs.png", f"MI Jigsaw / {method} on {d.name}",
                           self.generated_data()):
                result.figures.append(self.out_dir / "epochs.png")
        pretrain_wall = result.extra.get("train_wall_s", math.nan)
        metrics: dict[str, Any] = {
            "method": method, "objective": self.objective, "estimator": est_name, "model": cfg.model.name,
            "epochs": int(b.epochs), "epochs_done": len(self.history), "steps": steps,
            "images_per_batch": self.n_images, "perms_per_batch": self.n_used, "n_perms": self.n_perms,
            "perm_min_hamming": self.min_hamming, "train_images": len(self.train_set), "val_images": len(self.val_set),
            "classes": self.train_set.num_classes, "pretext_top1": last_pretext, "diverged": diverged,
            "pretrain_wall_s": round(pretrain_wall, 3), "probe_wall_s": result.metrics.get("probe_wall_s")}
        if self.history:
            metrics.update({f"last_epoch_{c}": self.history[-1][f"{c}_mean"] for c in COLUMNS})
        for r in summary.itertuples():
            metrics[f"{r.metric}"] = r.mean
        result.metrics = metrics
        result.extra["probes"] = probes
        data = f"{d.name}: {self.generated_data()}" if self.generated_data() else d.name
        result.text = (f"MI Jigsaw / {method} ({self.objective}{', ' + est_name if self.objective == 'mi' else ''}) on "
                       f"{data} ({len(self.train_set)} train / {len(self.val_set)} val images, "
                       f"{self.train_set.num_classes} classes): {len(self.history)} epochs, {steps} steps"
                       f"{' | DIVERGED at step ' + str(result.diverged_step) if diverged else ''}"
                       f" | pretext top-1 {last_pretext:.1f}% | permutations: {self.n_perms}, min Hamming "
                       f"{self.min_hamming} | pretrain {pretrain_wall:.1f}s, probe {metrics['probe_wall_s']:.1f}s\n"
                       + md)
        top1 = summary[summary.metric == "top1"]["mean"]
        result.objective = -float(top1.iloc[0]) if len(top1) and math.isfinite(top1.iloc[0]) else None


def _root(d):
    from pathlib import Path

    return Path(str(d.root)).expanduser()


__all__ = ["Jigsaw", "LinearProbe", "method_label", "reference_table3", "shown_topk", "table3_markdown"]
