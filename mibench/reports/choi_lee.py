"""Choi & Lee, "Combating the Instability of Mutual Information-based Losses via Regularization" (UAI 2022).

- **Table 2** (``benchmark=slb``, ``clb``): task x dataset x estimator, original and regularized side by side, mean ±
  95% Student-t interval over seeds, the better of each pair in bold, ``†`` where the two intervals do not overlap
  (the paper's blue), the regularized estimator's lambda chosen by "the best MI estimation" as in the paper (§5:
  the mean closest to the true MI, log C; not the largest, since DV-type estimates can exceed log C), the published
  numbers (mibench/reference/remine_table2.csv) beside ours; figure ``table2.png`` (ours vs published per pair);
- **Fig. 6** (``lambda_ablation.png``): MI estimate and test accuracy vs lambda;
- **§3-4, Figs 1-5** (``benchmark=onehot``): drift slope and explosion step per configuration (the paper draws them,
  it gives no number), figure ``onehot_drift.png`` (estimate and its two terms per configuration).

The pairs (an estimator and its regularized version) come from the estimator registry (``Spec.regularized``), in
the order of the paper's Table 2.
"""
from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results import atomic_write_csv
from .runs import FINISHED, _isnan, dataset_label, finished, load_runs, run_csv
from .tables import (fit, save, MIXED, Figure, Section, _cell, _df_lines, _fmt, _labelled, _mark, _render, _text, _wrap, fmt_num, gap, mean_ci,
                     matplotlib_pyplot, mixed, variant_labels)

# the paper's spelling of each estimator of its Table 2 (its rows)
LABEL = {"mine": "MINE", "smile": "SMILE", "infonce": "InfoNCE", "nwj": "NWJ", "tuba": "TUBA", "js": "JS"}


def reference_table2() -> pd.DataFrame:
    """Choi & Lee Table 2 as published (packaged with mibench)."""
    with resources.files("mibench.reference").joinpath("remine_table2.csv").open() as f:
        return pd.read_csv(f)


@lru_cache(maxsize=1)
def pairs() -> tuple[tuple[str, str], ...]:
    """(original, regularized) for every regularized estimator of the registry (``Spec.regularized``: ``re`` + the
    original's name), in the order of the paper's Table 2, any other after it by name."""
    from ..estimators import REGISTRY

    found = [(name[2:], name) for name, spec in REGISTRY.items() if spec.regularized and name[2:] in REGISTRY]
    order = list(dict.fromkeys(reference_table2()["estimator"]))
    return tuple(sorted(found, key=lambda p: (order.index(p[0]) if p[0] in order else len(order), p[0])))


def __getattr__(name: str) -> Any:
    if name == "PAIRS":  # (the list leaderboard.py held; now the registry's)
        return list(pairs())
    raise AttributeError(name)


def estimator_order(name: str) -> tuple[int, bool, str]:
    """Choi & Lee's order (:func:`pairs`), each original followed by its regularized version; others after."""
    originals = [p[0] for p in pairs()]
    regularized = name in {p[1] for p in pairs()}
    base = name[2:] if regularized else name
    return (originals.index(base) if base in originals else len(originals), regularized, name)


_estimator_order = estimator_order


def onehot_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config: drift slope (mean ± CI over seeds) and explosion steps of the one-hot study."""
    oh = runs[(runs["benchmark"] == "onehot") & runs["status"].isin(FINISHED)]
    oh = oh.assign(variant=variant_labels(oh, ["estimator", "batch_size", "c_star", "lam"]))
    slope_col = next((c for c in ("m_drift_slope_per_1k", "m_drift_slope") if c in oh), None)
    out = []
    for group, g in oh.groupby("group", sort=False):
        first = g.iloc[0]
        row = {"estimator": first["estimator"], "variant": first["variant"], "batch_size": first.get("batch_size"),
               "c_star": first.get("c_star"), "lam": first.get("lam"), "seeds": len(g), "mixed": mixed(g)}
        if slope_col:
            m, h, _ = mean_ci(pd.to_numeric(g[slope_col], errors="coerce"))
            row.update(drift_slope=m, drift_slope_ci95=h)
        for col, name in (("m_marginal_end", "marginal_end"), ("m_joint_end", "joint_end"), ("m_estimate_end", "estimate_end")):
            if col in g:
                row[name] = mean_ci(pd.to_numeric(g[col], errors="coerce"))[0]
        if "m_explosion_step" in g:
            steps = [s for s in g["m_explosion_step"] if s not in (None, "none") and not _isnan(s)]
            row["explosion_step"] = ", ".join(str(int(float(s))) for s in sorted(steps, key=float)) if steps else "none"
            row["exploded"] = f"{len(steps)}/{len(g)}"
        row["group"] = group
        out.append(row)
    return pd.DataFrame(out)




def slb_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished SLB/CLB runs with ``setting`` (what differs outside ``estimator.*`` between the configurations
    of one task x dataset) and ``est_variant`` (what differs inside it, lambda aside, per estimator); ``generated``
    is '' on the real data."""
    sl = runs[runs["benchmark"].isin(["slb", "clb"]) & runs["status"].isin(FINISHED)]
    sl = sl.assign(generated=sl["generated"].fillna(""))  # ('': the real data, sorted first)
    sl = sl.assign(setting=variant_labels(sl, ["benchmark", "dataset"], lambda k: not k.startswith("estimator.")))
    return sl.assign(est_variant=variant_labels(sl, ["benchmark", "dataset", "setting", "estimator"],
                                                lambda k: k.startswith("estimator.") and k != "estimator.lam"))


def _variants(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(est_variant, its runs) for each variant in ``runs``; one empty entry when there are none."""
    return [(v, x) for v, x in runs.groupby("est_variant", sort=True)] or [("", runs)]


def table2(runs: pd.DataFrame) -> pd.DataFrame:
    """Choi & Lee Table 2: per task x dataset (x setting) x pair, original vs regularized (its best lambda)."""
    sl = slb_runs(runs)
    if sl.empty or "m_mi_train" not in sl:
        return pd.DataFrame()
    ref = reference_table2()
    out = []
    for (bench, ds, gen, setting), g in sl.groupby(["benchmark", "dataset", "generated", "setting"], sort=True):
        for orig, reg in pairs():
            if not g["estimator"].isin([orig, reg]).any():
                continue
            for vo, o in _variants(g[g["estimator"] == orig]):
                for vr, r in _variants(g[g["estimator"] == reg]):
                    row = {"task": bench, "dataset": ds, "generated": gen or None, "true_mi": true_mi(g),
                           "loss": orig, "setting": setting, "variant_orig": vo,
                           "variant_reg": vr}
                    out.append({**row, **_pair(o, r, ref[(ref["benchmark"] == bench) & (ref["dataset"] == ds)
                                                           & (ref["estimator"] == orig)])})
    return pd.DataFrame(out)


def true_mi(runs: pd.DataFrame) -> float:
    """The true MI of SLB/CLB runs: their recorded ``true_mi`` (log C), else log C from the dataset's classes."""
    if "m_true_mi" in runs:
        vals = pd.to_numeric(runs["m_true_mi"], errors="coerce").dropna()
        if len(vals):
            return float(vals.iloc[0])
    from ..data.cifar import SPECS

    return math.log(SPECS[str(runs["dataset"].iloc[0])].num_classes)


def _pair(o: pd.DataFrame, r_all: pd.DataFrame, ref: pd.DataFrame) -> dict[str, Any]:
    """One Table 2 row's numbers: original runs ``o`` vs the regularized runs ``r_all`` at their best lambda."""
    best_lam, r = None, r_all
    if not r_all.empty:  # the paper picks lambda by the best MI estimation: the mean closest to the true MI
        truth = true_mi(r_all)
        by_lam = {lam: _cell(x["m_mi_train"])[0] for lam, x in r_all.groupby(r_all["lam"].astype(float))}
        best_lam = min(by_lam, key=lambda k: math.inf if math.isnan(by_lam[k]) else abs(by_lam[k] - truth))
        r = r_all[r_all["lam"].astype(float) == best_lam]
    row: dict[str, Any] = {"lambda": best_lam, "mixed": mixed(pd.concat([o, r]))}
    for side, x in (("orig", o), ("reg", r)):
        for metric, col in (("mi", "m_mi_train"), ("acc", "m_test_acc")):
            m, h, n = _cell(x[col]) if col in x and not x.empty else (math.nan, math.nan, 0)
            row.update({f"{metric}_{side}": m, f"{metric}_{side}_ci95": h, f"n_{side}": n})
    for metric in ("mi", "acc"):
        row[f"{metric}_better"], row[f"{metric}_separated"] = compare(
            row[f"{metric}_orig"], row[f"{metric}_orig_ci95"], row[f"{metric}_reg"], row[f"{metric}_reg_ci95"])
    for variant, side in (("original", "orig"), ("regularized", "reg")):
        p = ref[ref["variant"] == variant]
        if len(p):
            row[f"paper_mi_{side}"] = f"{p['mi_mean'].iloc[0]:.3f} ± {p['mi_ci95'].iloc[0]:.3f}"
            row[f"paper_acc_{side}"] = f"{p['test_acc_mean'].iloc[0]:.3f} ± {p['test_acc_ci95'].iloc[0]:.3f}"
            for metric, col in (("mi", "mi_mean"), ("acc", "test_acc_mean")):
                row[f"gap_{metric}_{side}"] = gap(row[f"{metric}_{side}"], p[col].iloc[0])
    return row


def compare(m1: float, h1: float, m2: float, h2: float) -> tuple[str, bool]:
    """Which mean is higher ('orig', 'reg' or '' on a tie / missing) and whether the intervals are disjoint."""
    if math.isnan(m1) or math.isnan(m2) or m1 == m2:
        return "", False
    better = "reg" if m2 > m1 else "orig"
    if math.isnan(h1) or math.isnan(h2):
        return better, False
    return better, (m1 + h1 < m2 - h2) or (m2 + h2 < m1 - h1)


# the statuses of a run that did not complete, in the failures table's order (its columns: ``no record`` -> no_record)


def render_table2(t2: pd.DataFrame, latex: bool = False) -> str:
    head = ["Task", "Dataset", "Loss", "λ", "MI orig", "MI reg", "Acc orig", "Acc reg",
            "paper MI orig", "paper MI reg", "paper Acc orig", "paper Acc reg",
            "Δ MI orig", "Δ MI reg", "Δ Acc orig", "Δ Acc reg", "seeds"]
    lines = []
    for _, r in t2.iterrows():
        cells = [r["task"].upper(), dataset_label({**r, "dataset": r["dataset"].upper().replace("CIFAR", "CIFAR-")}),
                 _loss_label(r),
                 "–" if r["lambda"] is None or _isnan(r["lambda"]) else f"{r['lambda']:g}"]
        for metric in ("mi", "acc"):
            for side in ("orig", "reg"):
                cells.append(_mark(_fmt(r[f"{metric}_{side}"], r[f"{metric}_{side}_ci95"]),
                                   r[f"{metric}_better"] == side, r[f"{metric}_separated"] and r[f"{metric}_better"] == side,
                                   latex))
        for key in ("paper_mi_orig", "paper_mi_reg", "paper_acc_orig", "paper_acc_reg"):
            v = r.get(key)
            cells.append((v.replace("±", r"$\pm$") if latex else v) if isinstance(v, str) else "–")
        for key in ("gap_mi_orig", "gap_mi_reg", "gap_acc_orig", "gap_acc_reg"):
            cells.append(fmt_num(r.get(key), signed=True))
        cells.append(f"{r['n_orig']}/{r['n_reg']}")
        lines.append(cells)
    return _render(head, lines, latex)


def _loss_label(r: pd.Series) -> str:
    """'MINE', or with what sets this row apart: 'MINE (benchmark.epochs=3; ReMINE: estimator.c_star=1)'."""
    name = LABEL.get(r["loss"], r["loss"])
    parts = [_text(r, "setting"), f"{name}: {_text(r, 'variant_orig')}" if _text(r, "variant_orig") else "",
             f"Re{name}: {_text(r, 'variant_reg')}" if _text(r, "variant_reg") else ""]
    text = "; ".join(p for p in parts if p)
    return name + (f" ({text})" if text else "") + (MIXED if _text(r, "mixed") else "")




ONEHOT_COLS = ["estimator", "batch_size", "lam", "c_star", "seeds", "drift_slope", "drift_slope_ci95", "estimate_end", "marginal_end",
               "explosion_step", "exploded"]


def lambda_ablation(runs: pd.DataFrame, path: Path, _: Any = None) -> bool:
    """Choi & Lee Fig. 6: MI estimate and test accuracy vs lambda per regularized estimator (± 95% CI)."""
    sl = slb_runs(runs)
    sl = sl[sl["lam"].notna()]
    if sl.empty or "m_mi_train" not in sl:
        return False
    plt = matplotlib_pyplot()
    panels = sorted(sl[["benchmark", "dataset", "generated", "setting"]].drop_duplicates().itertuples(index=False,
                                                                                                  name=None))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 6.5), dpi=100, squeeze=False)
    for j, (bench, ds, gen, setting) in enumerate(panels):
        g = sl[(sl["benchmark"] == bench) & (sl["dataset"] == ds) & (sl["generated"] == gen) & (sl["setting"] == setting)]
        for (est, var), e in g.groupby(["estimator", "est_variant"], sort=True):
            stats = sorted((float(lam), _cell(x["m_mi_train"]), _cell(x["m_test_acc"])) for lam, x in e.groupby("lam"))
            lams = [s[0] for s in stats]
            for i, k in enumerate((1, 2)):
                m = np.array([s[k][0] for s in stats])
                h = np.nan_to_num(np.array([s[k][1] for s in stats]))
                axes[i][j].errorbar(lams, m, yerr=h, marker="o", capsize=3, label=f"{est} ({var})" if var else est)
        for i, what in enumerate(("MI estimate (nats)", "test accuracy")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_xlabel("λ")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
        title = f"{bench.upper()} {dataset_label({'dataset': ds, 'generated': gen})}"
        axes[0][j].set_title(title + (f"\n{_wrap(setting, 50)}" if setting else ""), fontsize=10)
        axes[0][j].legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    return True


def table2_figure(runs: pd.DataFrame, t2: pd.DataFrame, path: Path) -> bool:
    """Table 2 drawn: per task x dataset, the MI estimate and test accuracy of each original / regularized pair,
    ours (mean ± 95% CI over seeds) beside the paper's (hollow, its interval), the true MI log C dashed."""
    if t2.empty:
        return False
    plt = matplotlib_pyplot()
    panels = list(dict.fromkeys(zip(t2["task"], t2["dataset"], t2["generated"].fillna(""), t2["setting"])))
    fig, axes = plt.subplots(2, len(panels), figsize=(0.9 + 4.2 * len(panels), 6.4), dpi=100, squeeze=False)
    for j, (task, ds, gen, setting) in enumerate(panels):
        rows = t2[(t2["task"] == task) & (t2["dataset"] == ds) & (t2["generated"].fillna("") == gen)
                  & (t2["setting"] == setting)].reset_index(drop=True)
        x = np.arange(len(rows))
        for i, metric in enumerate(("mi", "acc")):
            ax = axes[i][j]
            for k, (side, colour) in enumerate((("orig", "tab:blue"), ("reg", "tab:orange"))):
                at = x + (k - 0.5) * 0.36
                ax.errorbar(at - 0.07, rows[f"{metric}_{side}"], yerr=np.nan_to_num(rows[f"{metric}_{side}_ci95"]),
                            fmt="o", color=colour, capsize=3, label=f"ours, {'regularized' if k else 'original'}")
                paper = [_published(v) for v in rows.get(f"paper_{metric}_{side}", pd.Series([None] * len(rows)))]
                ax.errorbar(at + 0.07, [p[0] for p in paper], yerr=[p[1] for p in paper], fmt="o", mfc="none",
                            color=colour, capsize=3, label=f"paper, {'regularized' if k else 'original'}")
            if metric == "mi" and "true_mi" in rows:
                ax.axhline(float(rows["true_mi"].iloc[0]), color="black", ls="--", lw=1, label="true MI (log C)")
            ax.set_xticks(x, [LABEL.get(r, r) for r in rows["loss"]], fontsize=8)
            ax.set_ylabel("MI estimate (nats)" if metric == "mi" else "test accuracy")
            ax.grid(alpha=0.3)
        title = f"{task.upper()} {dataset_label({'dataset': ds, 'generated': gen})}"
        axes[0][j].set_title(_wrap(title + (f" ({setting})" if setting else ""), 50), fontsize=10)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(fit("Choi & Lee Table 2: ours (filled, mean ± 95% CI over seeds) vs published (hollow)",
                     fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True


def _published(cell: Any) -> tuple[float, float]:
    """'2.300 ± 0.003' (a Table 2 row's paper cell) as (mean, interval); NaN without one."""
    if not isinstance(cell, str) or "±" not in cell:
        return math.nan, 0.0
    m, h = cell.split("±")
    return float(m), float(h)


def onehot_figure(runs: pd.DataFrame, oh: pd.DataFrame, path: Path) -> bool:
    """§3-4 (Figs 1, 3-5 in one): per one-hot configuration (its first seed), the estimate against log N and its two
    terms (the regularizer's target dotted), the explosion step marked."""
    from ..figures.onehot import grid

    done = finished(runs, "onehot").sort_values("seed")
    columns = []
    for _, r in oh.iterrows():
        first = done[done["group"] == r["group"]].iloc[0]
        summary = run_csv(first["run_dir"], "summary.csv")
        if summary is None or not (Path(first["run_dir"]) / "steps.csv").is_file():
            continue
        name, bs = r["estimator"] + (f" ({r['variant']})" if _text(r, "variant") else ""), r.get("batch_size")
        label = f"{name}, batch {int(bs)}" if isinstance(bs, (int, float)) and bs == bs else name
        columns.append((_wrap(label, 40), {"dir": Path(first["run_dir"]), "summary": summary.iloc[0].to_dict()}))
    if not columns:
        return False
    grid(columns, ("estimate", "terms"), fit("Choi & Lee §3-4: one-hot drift and explosion (first seed of each "
                                             "configuration)", 3.6 * len(columns)), path)
    return True


def onehot_runs(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Every finished one-hot run (from the one loader) with its steps.csv and summary.csv, as the Figs 1-5 grids of
    :mod:`mibench.figures.onehot` take it: dir, estimator, batch_size, steps, c_star, seed, summary (its row)."""
    out = []
    for _, r in finished(runs, "onehot").iterrows():
        summary, cfg = run_csv(r["run_dir"], "summary.csv"), r["config"] if isinstance(r["config"], dict) else {}
        if summary is None or not len(summary) or not (Path(r["run_dir"]) / "steps.csv").is_file():
            continue
        out.append({"dir": Path(r["run_dir"]), "estimator": r["estimator"],
                    "batch_size": int(cfg.get("dataset.batch_size", r.get("batch_size"))),
                    "steps": int(cfg["benchmark.steps"]), "c_star": cfg.get("estimator.c_star"), "seed": int(r["seed"]),
                    "summary": summary.iloc[0].to_dict()})
    return out


def onehot_study(root: str | Path, out: str | Path | None = None) -> list[Path]:
    """``python -m mibench.figures onehot RUNS``: Choi & Lee Figs 1-5 (onehot_fig1..5.png, the lowest seed of each
    setting) and onehot_runs.csv (every run's summary row) from the one-hot runs under ``root``."""
    from ..figures.onehot import FIG4_C_STARS, LABELS, grid, pick

    runs = onehot_runs(load_runs(root))
    out = Path(out if out is not None else root)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if runs:
        table = pd.DataFrame([{**r["summary"], "seed": r["seed"], "dir": str(r["dir"])} for r in runs])
        atomic_write_csv(out / "onehot_runs.csv", table)
        paths.append(out / "onehot_runs.csv")
    pair = lambda names, b, steps=3000: [(f"{LABELS[n]}, batch {b}", pick(runs, n, b, steps)) for n in names]  # noqa: E731
    paths.append(grid(pair(("mine", "nwj"), 100), ("estimate", "terms"),
                      "Fig. 1: MINE vs NWJ, batch 100 (MINE's terms drift in parallel)", out / "onehot_fig1.png"))
    paths.append(grid(pair(("mine", "nwj"), 100), ("outputs",),
                      "Fig. 2: critic outputs on / off the joint support, batch 100", out / "onehot_fig2.png"))
    paths.append(grid(pair(("mine", "nwj"), 32), ("estimate", "terms", "outputs"),
                      "Fig. 3: MINE vs NWJ, batch 32 (unstable case)", out / "onehot_fig3.png"))
    fig4 = [(f"ReMINE C* = {c:g}", pick(runs, "remine", 100, 1500, c)) for c in FIG4_C_STARS]
    paths.append(grid(fig4, ("estimate", "terms"), "Fig. 4: ReMINE, lambda 0.1, batch 100, 1,500 steps",
                      out / "onehot_fig4.png"))
    paths.append(grid(pair(("remine", "renwj"), 32), ("estimate", "terms", "outputs"),
                      "Fig. 5: ReMINE vs ReNWJ, batch 32", out / "onehot_fig5.png"))
    return paths


def _table2_name(r: pd.Series) -> str:
    return f"{r['task'].upper()} {dataset_label(r)} {_loss_label(r).rstrip(MIXED)}"


SECTIONS = (
    Section("table2", "SLB / CLB (Choi & Lee Table 2)", "Choi & Lee 2022", ("slb", "clb"),
            make=lambda runs: table2(runs), render=lambda t, latex: render_table2(t, latex),
            intro="Mean ± 95% CI over seeds (Student t); **bold**: the better of the pair; †: the intervals do not "
                  "overlap; λ: the regularized loss's λ with the best MI estimate (mean closest to the true MI log C). "
                  "MI = last-epoch training estimate, negatives clipped to 0. paper: the published mean ± 95% CI "
                  "(rows on GENERATED data are no reproduction of them).",
            row_name=_table2_name, tex="% Choi & Lee Table 2\n",
            figures=(Figure("table2.png", lambda runs, t, p: table2_figure(runs, t, p)),
                     Figure("lambda_ablation.png", lambda runs, t, p: lambda_ablation(runs, p)))),
    Section("onehot", "One-hot drift and explosion (Choi & Lee §3-4)", "Choi & Lee 2022", ("onehot",),
            make=lambda runs: onehot_table(runs), shown=_labelled,
            render=lambda t, latex: _render([c for c in ONEHOT_COLS if c in t], _df_lines(t, [c for c in ONEHOT_COLS
                                                                                         if c in t]), latex),
            intro="Drift slope of the estimate (per 1,000 steps, mean ± 95% CI over seeds) and the steps where runs "
                  "exploded. The paper shows these as curves (Figs 1-5) and gives no number to compare with.",
            row_name=lambda r: r["estimator"].rstrip(MIXED), tex="% one-hot\n",
            figures=(Figure("onehot_drift.png", lambda runs, t, p: onehot_figure(runs, t, p)),)),
)
