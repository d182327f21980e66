"""Layer-pair Deep InfoMax, then a linear classifier on the frozen encoder (``benchmark=layerpair``).

eta-MINE paper ("Improved Mutual Information Estimation", ICLR 2020 submission), Fig. 4 and Table 2:
maximise I(x'; y') between a shallow layer x' = E_l(X) and a deeper layer y' = E_k(X) of the same
image (``benchmark.layers: [l, k]``, default the paper's best ``[conv1, conv2]``: an encoder of just the
first two conv layers), each through a small trainable head; the batch's score matrix
``scores[i, j] = <h(x'_i), g(y'_j)>`` (joint on the diagonal; :mod:`mibench.models.layerpair`) goes to
the ``estimator`` group's bound, any of the registry (the paper's pair: ``mine`` = DV-MINE and
``eta_mine``). Then the encoder (up to layer k) is frozen and a linear classifier is trained on its
layer-k features, on the pretraining dataset and on the other one (C10 <-> S10, ``benchmark.probe.datasets``),
through :func:`mibench.probes.train_probes`. ``benchmark.supervised=true`` gives Table 2's reference
instead: the full encoder + a linear layer trained end to end with cross-entropy (tested on the
pretraining dataset only, as in the paper); ``benchmark.epochs=0`` a random-init encoder through the same probe.

A separate benchmark rather than an option of ``benchmark=dim``: DIM's objective (global / local /
prior, alpha-beta-gamma weights, its MI networks) and this one (two layers of one encoder, heads,
a square score matrix, a supervised reference, STL-10) share only the encoder definition and the
probes, which both import from one place (:class:`mibench.models.dim.DIMEncoder`, :mod:`mibench.probes`).

One run = one pretraining dataset x one method; its cells of Table 2 go to ``table2.csv`` beside the
published numbers. ``python -m mibench.benchmarks.layerpair <runs_dir>`` merges the runs' cells into
the full table.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ..checks import LEARNING_RATE, Bool, ConfigError, Int, Rule
from ..data import cifar
from ..data.dataset import DATASETS, providing
from ..engine import Capabilities, Optim, RunResult, Step, Task, data_error, register
from ..models.layerpair import ORDER, LayerEncoder, PairWitness, Supervised
from ..probes import extract_features, train_probes
from ..results import atomic_write_csv, atomic_write_text, plot_epochs
from .dim import end_epoch, epoch_segments
from ..precision import full

COLUMNS = ("loss", "mi")
SHORT = {"cifar10": "C10", "cifar100": "C100", "stl10": "S10"}
PUBLISHED_METHOD = {"mine": "dv_mine", "eta_mine": "eta_mine", "supervised": "supervised_ce"}
TABLE_METHODS = ("dv_mine", "eta_mine", "supervised_ce")  # Table 2's column order within a test dataset


class _Layers(Rule):
    text = f"[l, k]: two of {', '.join(ORDER)} with l shallower than k"

    def ok(self, v: Any) -> bool:
        return (v is not None and not isinstance(v, str) and len(v) == 2 and all(x in ORDER for x in v)
                and ORDER.index(v[0]) < ORDER.index(v[1]))


KIND = "images32"  # what layer-pair needs of a dataset (mibench.data.dataset.KINDS)


class _Datasets(Rule):
    """Datasets of the kind layer-pair needs (``images32``), from the dataset registry."""

    @property
    def text(self) -> str:  # type: ignore[override]
        return f"a non-empty list of {', '.join(providing(KIND))}"

    def ok(self, v: Any) -> bool:
        return v is not None and not isinstance(v, str) and len(v) > 0 and all(x in providing(KIND) for x in v)


def make_data(name: str, d, batch_size: int, seed: int, augment: bool, num_workers: int = 0) -> cifar.CifarData:
    """Dataset ``name``'s 32 x 32 images from ``dataset.root`` (its kind, ``images32``, gives the same interface)."""
    return DATASETS[name].loader(d.root, batch_size, seed, download=bool(d.download), augment=augment,
                                 crop_pad=int(d.get("crop_pad", 4)), flip=bool(d.get("flip", True)),
                                 num_workers=num_workers)


def check_data(root: str, name: str, download: bool) -> None:
    """One-line ConfigError unless ``name``'s files are under ``root`` (or will be downloaded)."""
    DATASETS[name].check_files(root, download)


def subset(n: int, size: int, seed: int) -> torch.Tensor | slice:
    """``size`` indices of ``n`` drawn without replacement from a generator seeded by ``seed`` (all: -1 or >= n)."""
    if size < 0 or size >= n:
        return slice(None)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def published_table2() -> pd.DataFrame:
    """eta-MINE Table 2 as published (packaged with mibench): train_dataset, test_dataset, method, top1_acc."""
    with resources.files("mibench.reference").joinpath("eta_mine_table2.csv").open() as f:
        return pd.read_csv(f)


def with_published(cells: pd.DataFrame) -> pd.DataFrame:
    """``cells`` (train_dataset, test_dataset, method, top1_acc, ...) with the published top-1 beside each."""
    pub = published_table2().rename(columns={"top1_acc": "published_top1_acc"})
    return cells.merge(pub, on=["train_dataset", "test_dataset", "method"], how="left")


def table2_markdown(cells: pd.DataFrame) -> str:
    """Table 2's layout: rows = training (pretraining) data, columns = test data x method; each cell
    "measured (published)"; "—" where nothing was measured and nothing published. A dataset name
    carries " (generated)" when its files were generated (``train_data`` / ``test_data`` columns)."""
    cells = with_published(cells) if "published_top1_acc" not in cells else cells
    label = {r.train_dataset: r.train_dataset + (" (generated)" if r.train_data == "generated" else "")
             for r in cells.itertuples()}
    label.update({r.test_dataset: r.test_dataset + (" (generated)" if r.test_data == "generated" else "")
                  for r in cells.itertuples()})
    pub = published_table2()
    order = lambda names: sorted(dict.fromkeys(names), key=lambda n: (*providing(KIND), n).index(n))  # noqa: E731
    trains, tests = order(cells.train_dataset), order(cells.test_dataset)  # Table 2's order: C10, then S10
    methods = [m for m in TABLE_METHODS if m in set(cells.method) or m in set(pub.method)]
    methods += [m for m in dict.fromkeys(cells.method) if m not in methods]
    head = ["train \\ test"] + [f"{SHORT.get(t, t)} {m}" for t in tests for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for tr in trains:
        row = [label.get(tr, tr)]
        for te in tests:
            for m in methods:
                c = cells[(cells.train_dataset == tr) & (cells.test_dataset == te) & (cells.method == m)]
                p = pub[(pub.train_dataset == tr) & (pub.test_dataset == te) & (pub.method == m)]
                got = f"{c.top1_acc.iloc[-1]:.1f}" if len(c) and math.isfinite(c.top1_acc.iloc[-1]) else "—"
                ref = f"{p.top1_acc.iloc[0]:.1f}" if len(p) else "—"
                row.append(f"{got} ({ref})")
        lines.append("| " + " | ".join(row) + " |")
    names = ", ".join(f"{SHORT.get(t, t)} = {label.get(t, t)}" for t in tests)
    return ("\n".join(lines) + f"\n\ntop-1 (%) measured (published, eta-MINE Table 2); {names}; "
            "dv_mine = estimator=mine, supervised_ce = benchmark.supervised=true (tested on its own data only)\n")


# ---------------------------------------------------------------------------------------------
# the task


@register("layerpair")
class LayerPair(Task):
    """Layer-pair DIM pretraining (segment = epoch) through the engine, then linear probes through it again."""

    needs_data = KIND
    segment_unit = "epoch"
    columns = COLUMNS
    estimate_columns = ("mi",)
    # the critic: the encoder's own layer-pair heads, never the critic group; a supervised run is named so
    caps = Capabilities(uses_critic=False, method="supervised")

    @classmethod
    def capabilities(cls, cfg) -> Capabilities:
        """benchmark.supervised=true trains with labels (cross-entropy): no estimator; epochs=0 trains nothing."""
        b = cfg["benchmark"]
        return replace(super().capabilities(cfg), uses_estimator=not b.get("supervised", False),
                       trains=b.get("epochs", 1) != 0)

    schema = {"benchmark": {"layers": _Layers(), "supervised": Bool(),
                            "batch_size": Int(2, why=": the negatives are the batch's other images"),
                            "epochs": Int(0, why=" (0 = random-init encoder baseline)"),
                            "max_steps": Int(1, minus_one=True), "lr": LEARNING_RATE, "head_units": Int(1),
                            "head_hidden": Int(1), "check_every": Int(1)},
              "benchmark.probe": {"datasets": _Datasets(), "epochs": Int(1), "batch_size": Int(1),
                                  "lr": LEARNING_RATE, "train_size": Int(1, minus_one=True),
                                  "test_size": Int(1, minus_one=True)},
              "dataset": {"augment": Bool(), "flip": Bool(), "download": Bool(), "crop_pad": Int(0)}}

    @classmethod
    def check(cls, cfg) -> None:
        b, d = cfg.benchmark, cfg.dataset
        if cfg.get("resume"):
            raise ConfigError("benchmark=layerpair has no checkpoints: resume=true is not supported (valid: resume=false)")
        if b.supervised and int(b.epochs) == 0:
            raise ConfigError("benchmark.supervised=true with benchmark.epochs=0 trains nothing (valid: epochs >= 1)")
        for name in dict.fromkeys([d.name, *b.probe.datasets]):
            check_data(d.root, name, bool(d.download))

    def setup(self) -> None:
        cfg, b, d = self.cfg, self.cfg.benchmark, self.cfg.dataset
        seed, workers = int(cfg.seed), int(cfg.hardware.get("num_workers", 0))
        self.layers = (str(b.layers[0]), str(b.layers[1]))
        self.supervised = bool(b.supervised)
        self.data = make_data(d.name, d, int(b.batch_size), seed, bool(d.augment), workers)
        self.probe_data: dict[str, cifar.CifarData] = {}
        try:
            self.data.setup()  # load + validate the arrays before any training
            for name in dict.fromkeys([d.name, *b.probe.datasets]):
                pdm = self.data if name == d.name else make_data(name, d, int(b.batch_size), seed, False)
                pdm.setup()
                self.probe_data[name] = pdm
        except ValueError as e:  # a loader's one-line error (missing or invalid files)
            raise data_error(e) from None
        self.data.rank = self.ctx.rank
        if self.supervised:
            self.net = Supervised(self.data.num_classes)
            self.nets["supervised"] = self.net
            self.encoder = self.net.encoder
        else:
            self.encoder = LayerEncoder(self.layers[1])
            self.witness = PairWitness(self.layers, int(b.head_units), int(b.head_hidden))
            self.nets.update({"encoder": self.encoder, "witness": self.witness})
            self.estimator = self.build_estimator(dim_y=int(b.head_units))
        self.history: list[dict[str, Any]] = []
        self.zero = torch.zeros((), device=self.device)

    @property
    def method(self) -> str:
        if self.supervised:
            return "supervised_ce"
        if int(self.cfg.benchmark.epochs) == 0:
            return "random_init"
        name = str(self.cfg.estimator.name)
        return PUBLISHED_METHOD.get(name, name)

    def generated_data(self) -> str | None:
        """Pretraining or probe files written by fake_cifar / write_fake_stl10 (their GENERATED marker)."""
        return cifar.generated_note([self.data, *self.probe_data.values()])

    def optim(self) -> Optim:
        return Optim("adam", float(self.cfg.benchmark.lr))

    @property
    def block(self) -> int:
        return int(self.cfg.benchmark.check_every)

    def segments(self, start: int):
        return epoch_segments(self, start)

    def scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores[i, j] = f(x'_i, y'_j) of the batch, g(y') for estimators with a learned baseline)."""
        hx, gy = self.witness.embed(self.encoder(x))
        return full(hx @ gy.t()), gy

    def step(self, batch) -> Step:
        x = self.data.normalise(batch[0].to(self.device, non_blocking=True), True)
        if self.supervised:
            loss = F.cross_entropy(self.net(x), batch[1].to(self.device, non_blocking=True))
            return Step(loss, [loss, self.zero])
        scores, gy = self.scores(x)
        est = self.estimator(scores, None, None, y=gy)
        return Step(est.loss, [est.loss, est.mi])

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        return end_epoch(self, index, rows, wall, COLUMNS)

    def candidates(self) -> int:
        """The batch: scores[i, j] = h(x_i) . g(y_j) over the batch's images."""
        return int(self.cfg.benchmark.batch_size)

    @torch.no_grad()
    def _supervised_top1(self, pdm, idx) -> float:
        self.net.eval()
        x, y = pdm.test_x[idx], pdm.test_y[idx]
        pred = torch.cat([self.net(pdm.normalise(x[i: i + 500].to(self.device), False)).argmax(1)
                          for i in range(0, x.shape[0], 500)])
        return 100.0 * float((pred.cpu() == y).float().mean())

    def evaluate(self) -> dict[str, Any]:
        """Top-1 per test dataset: a linear probe on the frozen encoder's layer-k features (the supervised
        reference: its own classifier, on its own dataset). NaN for a diverged, non-finite encoder."""
        d, p = self.cfg.dataset, self.cfg.benchmark.probe
        self.nets.to(self.device)
        finite = all(torch.isfinite(q).all() for q in self.nets.parameters())
        seed = int(self.cfg.seed)
        rows = []
        t1 = time.perf_counter()
        for name, pdm in self.probe_data.items():
            tr = subset(pdm.train_x.shape[0], int(p.train_size), seed)
            te = subset(pdm.test_x.shape[0], int(p.test_size), seed + 1)
            n_tr, n_te = len(pdm.train_y[tr]), len(pdm.test_y[te])
            if self.supervised:
                if name != d.name:
                    continue  # Table 2: the supervised reference is tested on its own dataset only
                top1 = self._supervised_top1(pdm, te) if finite else math.nan
                n_tr = pdm.train_x.shape[0]
            elif finite:
                layer = self.layers[1]
                ftr = extract_features(self.encoder, pdm.train_x[tr], pdm.normalise, self.device, layers=(layer,))
                fte = extract_features(self.encoder, pdm.test_x[te], pdm.normalise, self.device, layers=(layer,))
                acc = train_probes(ftr, pdm.train_y[tr].to(self.device), fte, pdm.test_y[te].to(self.device),
                                   pdm.num_classes, kinds=("linear",), epochs=int(p.epochs), lr=float(p.lr),
                                   batch_size=int(p.batch_size), seed=seed, backend=self.ctx.backend)
                top1 = acc[("linear", layer)]
                del ftr, fte
            else:
                top1 = math.nan
            rows.append({"train_dataset": d.name, "test_dataset": name, "method": self.method,
                         "estimator": None if self.supervised else str(self.cfg.estimator.name),
                         "layers": "-".join(self.layers) if not self.supervised else "full",
                         "top1_acc": top1, "probe_train_n": n_tr, "test_n": n_te,
                         "train_data": _provenance(self.data), "test_data": _provenance(pdm)})
        self.cells = with_published(pd.DataFrame(rows))
        return {"probe_wall_s": round(time.perf_counter() - t1, 3)}

    def finish(self, result: RunResult) -> None:
        cfg, b, d = self.cfg, self.cfg.benchmark, self.cfg.dataset
        cells, steps = self.cells, result.steps_done
        diverged = result.diverged_step is not None or any(not math.isfinite(h["loss_mean"]) for h in self.history)
        md = table2_markdown(cells)
        what = ("supervised CE, full encoder" if self.supervised else
                f"layers {self.layers[0]} -> {self.layers[1]}, estimator={cfg.estimator.name}")
        pretrain_wall = result.extra.get("train_wall_s", math.nan)
        head = (f"layer-pair DIM ({what}) on {d.name}{' (generated)' if _provenance(self.data) == 'generated' else ''}: "
                f"{len(self.history)} epochs, {steps} steps{' | DIVERGED' if diverged else ''} | "
                f"pretrain {pretrain_wall:.1f}s, probes {result.metrics.get('probe_wall_s', math.nan):.1f}s")
        if self.out_dir is not None:
            atomic_write_csv(self.out_dir / "table2.csv", cells)
            atomic_write_text(self.out_dir / "table2.md", f"# {head}\n\n{md}")
            if plot_epochs(pd.DataFrame(self.history), self.out_dir / "epochs.png", f"layer-pair DIM ({what}) on {d.name}",
                           self.generated_data()):
                result.figures.append(self.out_dir / "epochs.png")
        metrics: dict[str, Any] = {"method": self.method, "layers": list(self.layers), "supervised": self.supervised,
                                   "epochs": int(b.epochs), "epochs_done": len(self.history), "steps": steps,
                                   "batch_size": int(b.batch_size), "diverged": diverged,
                                   "pretrain_wall_s": round(pretrain_wall, 3),
                                   "probe_wall_s": result.metrics.get("probe_wall_s")}
        if self.history:
            metrics.update({f"last_epoch_{c}": self.history[-1][f"{c}_mean"] for c in COLUMNS})
        for r in cells.itertuples():
            metrics[f"top1/{r.test_dataset}"] = r.top1_acc
        metrics["config"] = json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True, default=str)
        result.metrics = metrics
        if diverged and result.diverged_step is None:
            result.diverged_step = steps
        result.text = f"{head}\n{md}"
        own = cells[cells.test_dataset == d.name].top1_acc
        result.objective = -float(own.iloc[0]) if len(own) and math.isfinite(own.iloc[0]) else None
        result.extra["table2"] = cells


def _provenance(pdm) -> str:
    return "generated" if getattr(pdm, "generated", False) else "files"


# ---------------------------------------------------------------------------------------------
# the full table from many runs


def collect(runs: Path) -> pd.DataFrame:
    """Every finished layerpair run's ``table2.csv`` cells under ``runs`` (the newest run per cell wins), read by the
    one loader (:func:`mibench.reports.eta_mine.layerpair_cells`)."""
    from ..reports.eta_mine import layerpair_cells

    return layerpair_cells(runs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="merge benchmark=layerpair runs into eta-MINE Table 2's layout")
    p.add_argument("runs", type=Path, help="a directory holding the runs (searched recursively for table2.csv)")
    p.add_argument("--csv", type=Path, help="write the merged cells (with the published numbers) here")
    a = p.parse_args(argv)
    cells = collect(a.runs)
    if a.csv:
        atomic_write_csv(a.csv, cells)
    print(table2_markdown(cells), end="")


if __name__ == "__main__":
    main()
