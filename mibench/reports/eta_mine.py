"""The η-MINE paper, "Improved Mutual Information Estimation" (ICLR 2020 submission).

- **Fig. 3a** (``benchmark=eta_gaussian``): final held-out estimate per estimator and dimension, mean ± sd over
  seeds, beside the true MI (the paper draws the curves, no number: the gap is to the truth); figure
  ``eta_fig3a.png`` (test estimate vs iteration, mean ± sd band, one panel per dimension);
- **Fig. 3b** (``benchmark=migan``): generator steps until all 25 modes are recovered, per configuration, beside the
  paper's (DV-MINE 140K, η-MINE 50K: mibench/reference/eta_fig3b.csv); figure ``migan_modes.png`` (modes vs steps);
- **Table 2** (``benchmark=layerpair``): linear-probe top-1 per pretraining data x test data x method, mean ± sd over
  seeds, beside the published (mibench/reference/eta_mine_table2.csv); figure ``layerpair_table2.png``;
- **Table 3** (``benchmark=jigsaw``): the MI Jigsaw's target-task top-k per method beside the published mean ± std
  over 8 models (mibench/reference/eta_table3.csv); a top-k that is trivial for the run's classes is never shown;
  figure ``jigsaw_table3.png``.

Rows on GENERATED data say so in their data column and every figure title.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results import atomic_write_csv
from .runs import dataset_label, finished, load_runs, run_csv
from .tables import (fit, save, MIXED, NONE, Figure, Section, _render, _text, _wrap, fmt_num, fmt_sd, gap, matplotlib_pyplot,
                     mean_sd, mixed, pooled, variant_labels)


def reference(name: str) -> pd.DataFrame:
    """A published table packaged in mibench/reference (``eta_fig3b.csv``, ``eta_mine_table2.csv``, ...)."""
    with resources.files("mibench.reference").joinpath(name).open() as f:
        return pd.read_csv(f)


def paper_method(estimator: Any) -> str:
    """The paper's name of an estimator (DV-MINE for mine / dv, eta-MINE for eta_mine; :func:`mibench.benchmarks.
    jigsaw.method_label`, the one place it is written), else the estimator."""
    from ..benchmarks.jigsaw import method_label

    return method_label("mi", str(estimator))


# ----------------------------------------------------------------------------------------- Fig. 3a
def fig3a_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Fig. 3a: per configuration (estimator, dimension), the final test estimate (mean, sd over seeds), the true MI,
    the mean error (estimate − true MI) and mean |error|; η-MINE-convex (a run's second stage) as its own row."""
    done = finished(runs, "eta_gaussian")
    done = done.assign(variant=variant_labels(done, ["dataset", "estimator"]))
    out = []
    for group, g in done.groupby("group", sort=False):
        finals = [s for d in g["run_dir"] if (s := run_csv(d, "summary.csv")) is not None]
        if not finals:
            continue
        f = pd.concat(finals, ignore_index=True)
        for (est, dim), c in f.groupby(["estimator", "dim"], sort=False):
            m, sd, n = mean_sd(c["test_estimate"])
            err = pd.to_numeric(c["error"], errors="coerce")
            out.append({"dataset": dataset_label(g.iloc[0]), "estimator": est, "variant": g.iloc[0]["variant"],
                        "dim": int(dim), "true_mi": float(c["true_mi"].iloc[0]), "mean": m, "std": sd,
                        "mean_error": float(err.mean()), "mean_abs_error": float(err.abs().mean()), "seeds": n,
                        "mixed": mixed(g), "group": group})
    return pd.DataFrame(out).sort_values(["dim", "estimator"], kind="stable").reset_index(drop=True) if out else \
        pd.DataFrame()


FIG3A_COLS = ["dataset", "dim", "estimator", "seeds", "true MI", "final test estimate", "gap (mean − true)",
              "mean |error|"]


def render_fig3a(t: pd.DataFrame, latex: bool) -> str:
    lines = [[r["dataset"], str(r["dim"]), _estimator(r), str(r["seeds"]), fmt_num(r["true_mi"]),
              fmt_sd(r["mean"], r["std"]), fmt_num(r["mean_error"], signed=True), fmt_num(r["mean_abs_error"])]
             for _, r in t.iterrows()]
    return _render(FIG3A_COLS, lines, latex)


def _estimator(r: pd.Series) -> str:
    return (_text(r, "estimator") or NONE) + (f" ({r['variant']})" if _text(r, "variant") else "") + (
        MIXED if _text(r, "mixed") else "")


def fig3a_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Every finished eta_gaussian run's curve.csv with its estimator, dim, seed and dataset label."""
    out = []
    for _, r in finished(runs, "eta_gaussian").iterrows():
        c, s = run_csv(r["run_dir"], "curve.csv"), run_csv(r["run_dir"], "summary.csv")
        if c is not None and s is not None and len(s):
            out.append(c.assign(estimator=r["estimator"], dim=int(s["dim"].iloc[0]), seed=r["seed"],
                                data=dataset_label(r)))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def fig3a_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """Fig. 3a: test estimate (mean ± sd over seeds) vs iteration, one panel per dimension, true MI in red,
    η-MINE-convex's final estimate as a star."""
    curves = fig3a_curves(runs)
    if curves.empty:
        return False
    plt = matplotlib_pyplot()
    dims = sorted(curves["dim"].unique())
    names = list(dict.fromkeys(curves["estimator"]))
    fig, axes = plt.subplots(1, len(dims), figsize=(4.5 * len(dims), 3.8), dpi=100, squeeze=False)
    for ax, d in zip(axes[0], dims):
        sub = curves[curves["dim"] == d]
        for i, name in enumerate(names):
            g = sub[sub["estimator"] == name].groupby("step")["test_estimate"]
            if not len(g):
                continue
            m, s = g.mean(), g.std().fillna(0.0)
            color = plt.cm.tab10([0, 1, 2, 4, 5, 6, 8, 9][i % 8])  # no red: red is the true MI
            ax.plot(m.index, m.values, color=color, lw=1.5, label=name)
            ax.fill_between(m.index, m - s, m + s, color=color, alpha=0.2)
        cx = t[(t["dim"] == d) & (t["estimator"] == "eta_mine_convex")] if len(t) else t
        if len(cx):
            ax.errorbar([sub["step"].max()], cx["mean"], yerr=cx["std"].fillna(0.0), fmt="k*", ms=9,
                        label="eta_mine_convex (final)")
        true = float(sub["true_mi"].iloc[0])
        ax.axhline(true, color="red", lw=1.2, label="true MI")
        n = int(sub.groupby("estimator")["seed"].nunique().max())
        data = ", ".join(dict.fromkeys(sub["data"]))
        ax.set_title(_wrap(f"{data} dim {d}, true MI {true:.2f} ({n} seed{'s' if n != 1 else ''}, mean ± sd)", 45),
                     fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test-set MI estimate (nats)")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(fit("η-MINE Fig. 3a: test estimate vs iteration (mean ± sd over seeds), true MI in red",
                     fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True


FIG3A_CSV = ["dim", "estimator", "true_mi", "mean", "std", "mean_error", "mean_abs_error", "seeds"]


def collect_eta_runs(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, finals) of every finished eta_gaussian run under ``root`` (the one loader): each run's curve.csv and
    summary.csv rows, with its estimator, dim and seed."""
    runs = load_runs(root)
    finals = [s for d in finished(runs, "eta_gaussian")["run_dir"] if (s := run_csv(d, "summary.csv")) is not None]
    curves = fig3a_curves(runs)
    if curves.empty or not finals:
        raise FileNotFoundError(f"no eta_gaussian runs (result.json + curve.csv) under {root}")
    return curves, pd.concat(finals, ignore_index=True)


def eta_fig3a(root: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """``python -m mibench.figures eta_fig3a RUNS``: Fig. 3a from every eta_gaussian run under ``root`` (the one
    loader): ``eta_fig3a.png`` and ``eta_fig3a.csv`` (final test estimate per estimator and dim: mean, std, mean
    error, mean |error|, seeds) into ``out`` (default ``root``); returns that table."""
    runs = load_runs(root)
    table = fig3a_table(runs)
    if table.empty:
        raise FileNotFoundError(f"no eta_gaussian runs (result.json + curve.csv) under {root}")
    out = Path(out) if out is not None else Path(root)
    atomic_write_csv(out / "eta_fig3a.csv", table[FIG3A_CSV])
    fig3a_figure(runs, table, out / "eta_fig3a.png")
    return table[FIG3A_CSV]


def eta_fig3a_study(root: Path, out: Path) -> list[Path]:
    """``python -m mibench.figures eta_fig3a RUNS``: the figure and its table; prints the table."""
    table = eta_fig3a(root, out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}" if math.isfinite(v) else "nan"))
    return [Path(out) / "eta_fig3a.png", Path(out) / "eta_fig3a.csv"]


# ----------------------------------------------------------------------------------------- Fig. 3b
def migan_label(r: pd.Series) -> str:
    """A MI-GAN configuration as Fig. 3b's rows name it: unconditional GAN, conditional GAN without the MI term, or
    MI-regularised with the paper's estimator name."""
    if r.get("m_conditional") is False or r.get("m_conditional") == 0:
        return "unconditional GAN"
    if _zero(r.get("m_mi_weight")):
        return f"conditional GAN, mi_weight=0 ({r['estimator']} as a monitor)"
    return paper_method(r["estimator"])


def _zero(v: Any) -> bool:
    try:
        return float(v) == 0.0
    except (TypeError, ValueError):
        return False


def fig3b_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Fig. 3b: per configuration, the seeds that recovered all 25 modes (k/n), their generator steps to all modes
    (mean ± sd over those), the final modes (mean ± sd over seeds), beside the paper's steps and the gap."""
    done = finished(runs, "migan")
    done = done.assign(variant=variant_labels(done, ["estimator"]))
    ref = reference("eta_fig3b.csv").set_index("method")["steps_to_all_modes"]
    out = []
    for group, g in done.groupby("group", sort=False):
        first = g.iloc[0]
        method = migan_label(first)
        reached = pd.to_numeric(g.get("m_steps_to_all_modes", pd.Series(dtype=float)), errors="coerce").dropna()
        m, sd, n = mean_sd(reached)
        modes, modes_sd, _ = mean_sd(g.get("m_final_modes", pd.Series(dtype=float)))
        paper = float(ref[method]) if method in ref.index else math.nan  # NaN also where the paper's never reached
        out.append({"method": method, "estimator": first["estimator"], "variant": first["variant"],
                    "seeds": len(g), "reached": f"{n}/{len(g)}", "steps_to_all_modes": m,
                    "steps_to_all_modes_sd": sd, "final_modes": modes, "final_modes_sd": modes_sd,
                    "n_modes": first.get("m_n_modes"), "paper_steps": paper, "gap_steps": gap(m, paper),
                    "paper_reached": method not in ref.index or not math.isnan(paper),
                    "steps_run": _steps_run(g), "mixed": mixed(g), "group": group})
    return pd.DataFrame(out)


def _steps_run(g: pd.DataFrame) -> str:
    """The generator steps the seeds ran (their configs' benchmark.steps)."""
    steps = {c.get("benchmark.steps") for c in g["config"] if isinstance(c, dict)} - {None}
    return ", ".join(f"{int(s):,}" for s in sorted(steps)) or NONE


FIG3B_COLS = ["method", "seeds", "steps run", "all modes reached", "steps to all modes", "paper", "gap (ours − paper)",
              "final modes"]


def render_fig3b(t: pd.DataFrame, latex: bool) -> str:
    lines = [[r["method"] + (f" ({r['variant']})" if _text(r, "variant") else "") + (MIXED if _text(r, "mixed") else ""),
              str(r["seeds"]), r["steps_run"], r["reached"], fmt_sd(r["steps_to_all_modes"], r["steps_to_all_modes_sd"], 0),
              fmt_num(r["paper_steps"], 0) if r["paper_reached"] else "never (fails)",
              fmt_num(r["gap_steps"], 0, signed=True),
              fmt_sd(r["final_modes"], r["final_modes_sd"], 1) + (f" / {int(r['n_modes'])}" if r["n_modes"] == r["n_modes"]
                                                                    and r["n_modes"] is not None else "")]
             for _, r in t.iterrows()]
    return _render(FIG3B_COLS, lines, latex)


def fig3b_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """Fig. 3b's curve: modes recovered vs generator step per configuration (mean over seeds, min-max band), the
    paper's steps to all modes as dotted verticals."""
    done = finished(runs, "migan")
    if t.empty or done.empty:
        return False
    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=100)
    ref = reference("eta_fig3b.csv")
    for i, (_, r) in enumerate(t.iterrows()):
        parts = [s.assign(_d=d) for d in done.loc[done["group"] == r["group"], "run_dir"]
                 if (s := run_csv(d, "summary.csv")) is not None and len(s)]
        if not parts:
            continue
        s = pd.concat(parts).groupby("step")["modes"]
        colour = plt.cm.tab10(i % 10)
        ax.plot(s.mean().index, s.mean().values, marker="o", ms=3, color=colour,
                label=_wrap(f"{r['method']} ({r['seeds']} seed{'s' if r['seeds'] != 1 else ''})", 40))
        ax.fill_between(s.min().index, s.min().values, s.max().values, color=colour, alpha=0.15)
    right = ax.get_xlim()[1]  # the longest run's last evaluation (and matplotlib's margin)
    off = []
    for _, p in ref.dropna(subset=["steps_to_all_modes"]).iterrows():
        if p["steps_to_all_modes"] <= 2 * right:
            ax.axvline(p["steps_to_all_modes"], color="gray", ls=":", lw=1)
            ax.text(p["steps_to_all_modes"], 1, f" paper: {p['method']}", rotation=90, fontsize=7, va="bottom")
        else:
            off.append(f"{p['method']} {int(p['steps_to_all_modes']):,}")
    n = t["n_modes"].dropna()
    ax.axhline(float(n.iloc[0]) if len(n) else 25, color="black", ls="--", lw=1, label="all modes")
    ax.set_xlim(left=0)
    ax.set_xlabel("generator step" + (f" (paper's steps to all modes, off this axis: {', '.join(off)})" if off else ""),
                  fontsize=8)
    ax.set_ylabel("modes recovered")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(fit("η-MINE Fig. 3b: modes of the 25-Gaussian mixture recovered (mean, min-max over seeds)",
                     fig.get_figwidth() * 0.75, 9), fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return True


# ----------------------------------------------------------------------------------------- Table 2 (layer pairs)
def table2_layers(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 2: per configuration and cell (pretraining data, test data, method), the linear probe's top-1 (%), mean ±
    sd over seeds, the published top-1 and the gap; the data columns say GENERATED where the files were."""
    t = pooled(runs, "layerpair", "table2.csv", ["train_dataset", "test_dataset", "method", "train_data", "test_data"],
               ["top1_acc"])
    if t.empty:
        return t
    pub = reference("eta_mine_table2.csv").rename(columns={"top1_acc": "paper_top1_acc"})
    t = t.merge(pub, on=["train_dataset", "test_dataset", "method"], how="left")
    return t.assign(gap=[gap(m, p) for m, p in zip(t["top1_acc"], t["paper_top1_acc"])])


def layerpair_cells(root: str | Path) -> pd.DataFrame:
    """Every finished layerpair run's cells of Table 2 (its table2.csv) under ``root``, read by the one loader; the
    newest run (by start) wins a cell (``python -m mibench.benchmarks.layerpair RUNS``)."""
    done = finished(load_runs(root), "layerpair")
    done = done.sort_values("started_at", kind="stable") if "started_at" in done else done
    parts = [c for d in done["run_dir"] if (c := run_csv(d, "table2.csv")) is not None]
    if not parts:
        raise FileNotFoundError(f"no table2.csv under {root} (run benchmark=layerpair first)")
    cells = pd.concat(parts, ignore_index=True)
    return cells.drop_duplicates(["train_dataset", "test_dataset", "method"], keep="last").reset_index(drop=True)


def _data(name: str, provenance: Any) -> str:
    return f"{name} (GENERATED)" if provenance == "generated" else str(name)


LAYER_COLS = ["train data", "test data", "method", "seeds", "top-1 (%)", "paper", "gap (ours − paper)"]


def render_table2_layers(t: pd.DataFrame, latex: bool) -> str:
    lines = [[_data(r["train_dataset"], r["train_data"]), _data(r["test_dataset"], r["test_data"]),
              r["method"] + (f" ({r['variant']})" if _text(r, "variant") else "") + (MIXED if _text(r, "mixed") else ""),
              str(r["seeds"]), fmt_sd(r["top1_acc"], r["top1_acc_sd"], 1), fmt_num(r["paper_top1_acc"], 1),
              fmt_num(r["gap"], 1, signed=True)] for _, r in t.iterrows()]
    return _render(LAYER_COLS, lines, latex)


def bars(t: pd.DataFrame, label: str, ours: str, sd: str, paper: str, paper_sd: str | None, path: Path, title: str,
         ylabel: str) -> bool:
    """Ours (mean ± sd over seeds) beside the published value, one pair of bars per row of ``t`` (named by ``label``);
    the title says GENERATED data where a row's label does."""
    if t.empty:
        return False
    plt = matplotlib_pyplot()
    x = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(max(7.0, 3.5 + 1.1 * len(t)), 4.6), dpi=100)
    ax.bar(x - 0.2, t[ours], 0.4, yerr=np.nan_to_num(t[sd].astype(float)), capsize=3, label="ours (mean ± sd over seeds)")
    ax.bar(x + 0.2, t[paper], 0.4, yerr=None if paper_sd is None else np.nan_to_num(t[paper_sd].astype(float)),
           capsize=3, color="tab:gray", label="published")
    ax.set_xticks(x, [_wrap(s, 18) for s in t[label]], fontsize=7, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if t[label].astype(str).str.contains("GENERATED").any():
        title += " — GENERATED data: no reproduction of the paper"
    ax.set_title(fit(title, fig.get_figwidth() * 0.7, 9), fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return True


def table2_layers_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    if t.empty:
        return False
    t = t.assign(cell=[f"{_data(r.train_dataset, r.train_data)} → {_data(r.test_dataset, r.test_data)}, {r.method}"
                       for r in t.itertuples()])
    return bars(t, "cell", "top1_acc", "top1_acc_sd", "paper_top1_acc", None, path,
                "η-MINE Table 2: linear probe top-1, pretraining → test data", "top-1 (%)")


# ----------------------------------------------------------------------------------------- Table 3 (jigsaw)
def table3(runs: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per configuration, method and top-k that says something for its classes (k < classes: the run's
    summary.csv holds no other), the target-task accuracy (%) (each seed: the mean over its probe seeds; mean ± sd
    over seeds), the published mean ± std over 8 models and the gap."""
    t = pooled(runs, "jigsaw", "summary.csv", ["method", "metric"], ["mean"])
    if t.empty:
        return t
    pub = reference("eta_table3.csv").rename(columns={"mean": "paper_mean", "std": "paper_std"})
    t = t.merge(pub[["method", "metric", "paper_mean", "paper_std"]], on=["method", "metric"], how="left")
    classes = finished(runs, "jigsaw").groupby("group")["m_classes"].first() if "m_classes" in runs else {}
    return t.assign(gap=[gap(m, p) for m, p in zip(t["mean"], t["paper_mean"])],
                    classes=[classes.get(g, math.nan) for g in t["group"]])


TABLE3_COLS = ["data", "method", "metric", "seeds", "ours (%)", "paper (%)", "gap (ours − paper)"]


def render_table3(t: pd.DataFrame, latex: bool) -> str:
    lines = [[r["dataset"] + (f", {int(r['classes'])} classes" if r["classes"] == r["classes"] else ""),
              r["method"] + (f" ({r['variant']})" if _text(r, "variant") else "") + (MIXED if _text(r, "mixed") else ""),
              r["metric"], str(r["seeds"]), fmt_sd(r["mean"], r["mean_sd"], 1),
              fmt_sd(r["paper_mean"], r["paper_std"], 1), fmt_num(r["gap"], 1, signed=True)] for _, r in t.iterrows()]
    return _render(TABLE3_COLS, lines, latex)


def table3_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    if t.empty:
        return False
    t = t.assign(cell=[f"{r.method} {r.metric}, {r.dataset}" for r in t.itertuples()])
    return bars(t, "cell", "mean", "mean_sd", "paper_mean", "paper_std", path,
                "η-MINE Table 3: MI Jigsaw target-task accuracy (published: ImageNet, 8 models)", "accuracy (%)")


def _cell_name(r: pd.Series) -> str:
    return " / ".join(str(r[k]) for k in ("dataset", "method", "train_dataset", "test_dataset", "estimator", "metric")
                      if k in r and isinstance(r[k], str))


SECTIONS = (
    Section("eta_fig3a", "η-MINE Fig. 3a: Gaussians of random covariance", "η-MINE", ("eta_gaussian",),
            make=lambda runs: fig3a_table(runs), render=lambda t, latex: render_fig3a(t, latex),
            intro="Final held-out estimate per estimator and dimension, mean ± sd over seeds, and its gap to the true "
                  "MI (the paper draws the curves, Fig. 3a, and gives no number).",
            row_name=_cell_name, tex="% eta-MINE Fig. 3a\n",
            figures=(Figure("eta_fig3a.png", lambda runs, t, p: fig3a_figure(runs, t, p)),)),
    Section("migan", "η-MINE Fig. 3b: MI-regularised GAN, modes recovered", "η-MINE", ("migan",),
            make=lambda runs: fig3b_table(runs), render=lambda t, latex: render_fig3b(t, latex),
            intro="Generator steps until all 25 modes of the mixture are recovered (mean ± sd over the seeds that did; "
                  "reached: k of n seeds), beside the paper's (§5: DV-MINE 140K, η-MINE 50K generator steps; the "
                  "unconditional GAN never recovers them all). A run "
                  "shorter than the paper's steps cannot close the gap.",
            row_name=_cell_name, tex="% eta-MINE Fig. 3b\n",
            figures=(Figure("migan_modes.png", lambda runs, t, p: fig3b_figure(runs, t, p)),)),
    Section("layerpair", "η-MINE Table 2: layer-pair DIM, linear probes", "η-MINE", ("layerpair",),
            make=lambda runs: table2_layers(runs), render=lambda t, latex: render_table2_layers(t, latex),
            intro="Linear-probe top-1 (%) on frozen encoder features, per pretraining data, test data and method "
                  "(dv_mine = estimator=mine), mean ± sd over seeds, beside the published Table 2.",
            row_name=_cell_name, tex="% eta-MINE Table 2\n",
            figures=(Figure("layerpair_table2.png", lambda runs, t, p: table2_layers_figure(runs, t, p)),)),
    Section("jigsaw", "η-MINE Table 3: MI Jigsaw", "η-MINE", ("jigsaw",),
            make=lambda runs: table3(runs), render=lambda t, latex: render_table3(t, latex),
            intro="Target-task top-k (%) of a linear classifier on the frozen jigsaw encoder, mean ± sd over seeds, "
                  "beside the published mean ± std over 8 models (ImageNet, 10 % subset). A top-k with k at or above "
                  "the number of classes is trivially 100 % and not shown.",
            row_name=_cell_name, tex="% eta-MINE Table 3\n",
            figures=(Figure("jigsaw_table3.png", lambda runs, t, p: table3_figure(runs, t, p)),)),
)
