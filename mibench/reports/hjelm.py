"""Hjelm et al., "Learning deep representations by mutual information estimation and maximization" (Deep InfoMax,
ICLR 2019), Table 1 (``benchmark=dim``): top-1 (%) of probes on the frozen encoder's conv, fc (1024) and Y (64)
features, per pretraining / probe data, model and probe, mean ± sd over seeds, beside the published numbers
(mibench/reference/dim_table1.csv) where the paper has the row: its non-linear classifier (``probe=mlp``) on the
pretraining data; DIM(L) with DV, JSD (``estimator=js``) or infoNCE, and DIM(G). Figure ``dim_table1.png``.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

from .eta_mine import bars
from .tables import MIXED, Figure, Section, _render, _text, fmt_num, fmt_sd, gap, pooled

PAPER_ESTIMATOR = {"dv": "dv", "js": "jsd", "infonce": "infonce"}  # mibench's estimator -> Table 1's DIM(L) row


def reference_table1() -> pd.DataFrame:
    """DIM Table 1 as published (packaged with mibench): dataset, model, probe_layer, top1_acc."""
    with resources.files("mibench.reference").joinpath("dim_table1.csv").open() as f:
        return pd.read_csv(f)


def paper_model(model: str, probe: str, pretrain: str, probe_data: str) -> str | None:
    """Table 1's row for one of our probe results: ``dim_global`` / ``dim_local_<dv|jsd|infonce>`` for the MLP probe
    on the pretraining data; None where the paper has no such row (a linear probe, transfer, random init)."""
    if probe != "mlp" or pretrain != probe_data:
        return None
    if model.startswith("dim_global_"):
        return "dim_global"
    est = model.removeprefix("dim_local_")
    return f"dim_local_{PAPER_ESTIMATOR[est]}" if model.startswith("dim_local_") and est in PAPER_ESTIMATOR else None


def table1(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 1: per configuration and (pretraining data, probe data, model, probe, layer) the top-1 (%), mean ± sd
    over seeds, the published top-1 and the gap."""
    t = pooled(runs, "dim", "probes.csv", ["pretrain_dataset", "probe_dataset", "model", "probe", "layer"], ["top1"])
    if t.empty:
        return t
    ref = reference_table1().set_index(["dataset", "model", "probe_layer"])["top1_acc"]
    paper = []
    for r in t.itertuples():
        row = paper_model(r.model, r.probe, r.pretrain_dataset, r.probe_dataset)
        paper.append(float(ref.get((r.probe_dataset, row, r.layer), float("nan"))) if row else float("nan"))
    return t.assign(paper_top1=paper, gap=[gap(m, p) for m, p in zip(t["top1"], paper)])


def _probe_data(r: pd.Series) -> str:
    """The probe data as shown: GENERATED where the run's data folder was (the probes read the same folder)."""
    generated = "(GENERATED)" in str(r["dataset"])
    return f"{r['probe_dataset']} (GENERATED)" if generated else str(r["probe_dataset"])


TABLE1_COLS = ["data", "probe data", "model", "probe", "layer", "seeds", "top-1 (%)", "paper", "gap (ours − paper)"]


def render_table1(t: pd.DataFrame, latex: bool) -> str:
    lines = [[r["dataset"], _probe_data(r), r["model"] + (f" ({r['variant']})" if _text(r, "variant") else "")
              + (MIXED if _text(r, "mixed") else ""), r["probe"], r["layer"], str(r["seeds"]),
              fmt_sd(r["top1"], r["top1_sd"], 1), fmt_num(r["paper_top1"], 1), fmt_num(r["gap"], 1, signed=True)]
             for _, r in t.iterrows()]
    return _render(TABLE1_COLS, lines, latex)


def table1_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """Ours vs published per probe result (the MLP probe on the pretraining data: the paper's protocol)."""
    if t.empty:
        return False
    shown = t[t["probe"] == "mlp"] if (t["probe"] == "mlp").any() else t
    shown = shown.assign(cell=[f"{r['model']} {r['layer']}, {r['dataset']}→{_probe_data(r)}" for _, r in shown.iterrows()])
    return bars(shown, "cell", "top1", "top1_sd", "paper_top1", None, path,
                f"Deep InfoMax Table 1: {shown['probe'].iloc[0]} probe top-1 (published: full CIFAR, 1000 epochs)",
                "top-1 (%)")


SECTIONS = (
    Section("dim", "Deep InfoMax Table 1 (Hjelm et al.)", "Hjelm et al. 2019", ("dim",),
            make=lambda runs: table1(runs), render=lambda t, latex: render_table1(t, latex),
            intro="Top-1 (%) of the probes on the frozen encoder, mean ± sd over seeds, beside the published Table 1 "
                  "where it has the row (its non-linear classifier, probe=mlp, on the pretraining data; DIM(L) with "
                  "DV, JSD = estimator=js, infoNCE; DIM(G)).",
            row_name=lambda r: f"{r['dataset']} {r['model']} {r['probe']} {r['layer']}", tex="% DIM Table 1\n",
            figures=(Figure("dim_table1.png", lambda runs, t, p: table1_figure(runs, t, p)),)),
)
