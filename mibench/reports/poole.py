"""Poole, Ozair, van den Oord, Alemi & Tucker, "On Variational Bounds of Mutual Information" (ICML 2019).

- **Fig. 2** (``benchmark=staircase``; also Choi & Lee Fig. 7): per estimator x critic x dataset and MI level, over
  all steps of all seeds: mean and median estimate, bias, variance, MSE (the median matters: NWJ/JS throw rare huge
  negative spikes); figure ``staircase_grid.png``;
- **Fig. 3** (``benchmark=optimal``): bias, variance and MSE of each bound with the analytic optimal critic, per
  batch size and true MI, mean ± sd over seeds; figure ``optimal.png``;
- **Fig. 4** (``benchmark=gradients``): the I_alpha with the lowest gradient MSE per (true MI, batch size);
  figure ``gradients.png``;
- **Fig. 5** (``benchmark=dsprites``, §3.1): which dSprites factors the InfoMax latents track, beside the paper's
  (x and y position and scale, not rotation); figure ``dsprites_factors.png``;
- **§2.5** (``benchmark=sandwich``): eq. 12 <= I(X;Y) <= eq. 13 with a known encoder, per batch size and true MI;
  figure ``sandwich.png``.

The paper draws Figs 2-4 and gives no number to compare with: the reference is the true MI (a bias is the gap).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..results import draw_staircase, level_summary
from .choi_lee import estimator_order
from .runs import FINISHED, dataset_label, finished, run_csv, steps_of
from .tables import (fit, save, MIXED, NONE, Figure, Section, _df_lines, _labelled, _render, _text, _wrap, fmt_num, fmt_sd,
                     matplotlib_pyplot, mean_sd, mixed, pooled, variant_labels)


def capped_at_log_k(estimator: str) -> bool:
    """Whether the estimator's value cannot exceed log K (the registry's ``Spec.ceiling``): its grid panel draws
    log batch size."""
    from ..estimators import REGISTRY

    spec = REGISTRY.get(str(estimator))
    return spec is not None and spec.ceiling == "log_k"


def staircase_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config (all seeds pooled) and MI level: mean, median, bias, variance, MSE of the estimate."""
    st = runs[(runs["benchmark"] == "staircase") & runs["status"].isin(FINISHED)]
    st = st.assign(variant=variant_labels(st, ["dataset", "critic", "estimator", "lam"]))
    out = []
    for group, g in st.groupby("group", sort=False):
        frames = [s for s in (steps_of(d) for d in g["run_dir"]) if s is not None]
        if not frames:
            continue
        steps = pd.concat(frames, ignore_index=True)
        first = g.iloc[0]
        est = steps["estimate"].where(np.isfinite(steps["estimate"]))
        medians = est.groupby(steps["level"]).median()
        for lv in level_summary(steps).to_dict("records"):
            out.append({"dataset": first["dataset"], "critic": first["critic"], "estimator": first["estimator"],
                        "variant": first["variant"], "lam": first.get("lam"), "seeds": int(len(frames)),
                        "level": lv["level"], "true_mi": lv["true_mi"], "mean": lv["mean"],
                        "median": float(medians[lv["level"]]), "bias": lv["bias"], "variance": lv["variance"],
                        "mse": lv["mse"], "nonfinite": lv["nonfinite"], "mixed": mixed(g), "group": group})
    return pd.DataFrame(out)




STAIR_COLS = ["dataset", "critic", "estimator", "lam", "seeds", "true_mi", "mean", "median", "bias", "variance", "mse",
              "nonfinite"]


def staircase_grid(runs: pd.DataFrame, path: Path, _: Any = None) -> bool:
    """All staircase estimators on one grid (first seed of each configuration): a row per dataset x critic x step
    budget, labelled with all three, each panel's x-axis its own run's steps (runs of 1,000 and 10,000 steps are
    never squeezed onto one axis); a column per estimator (the same estimator in the same column in every row;
    rows wrap after 6 columns)."""
    st = runs[(runs["benchmark"] == "staircase") & runs["status"].isin(FINISHED)].sort_values("seed")
    st = st.drop_duplicates("group")
    first_steps = {d: steps_of(d) for d in st["run_dir"]}
    st = st[[first_steps[d] is not None for d in st["run_dir"]]]
    if st.empty:
        return False
    plt = matplotlib_pyplot()
    st = st.assign(budget=[len(first_steps[d]) for d in st["run_dir"]])
    st = st.assign(variant=variant_labels(st, ["dataset", "critic", "budget", "estimator"]))
    groups = sorted(st[["dataset", "critic", "budget"]].drop_duplicates().itertuples(index=False, name=None))
    ests = list(dict.fromkeys(sorted(st[["estimator", "variant"]].itertuples(index=False, name=None),
                                     key=lambda ev: (estimator_order(ev[0]), ev[1]))))
    ncols = min(len(ests), 6)  # wrap: original / regularized pairs side by side, 6 panels a row
    per_group = math.ceil(len(ests) / ncols)
    fig, axes = plt.subplots(per_group * len(groups), ncols, figsize=(2.7 * ncols + 1.0, 2.4 * per_group * len(groups)
                                                                       + 0.7), dpi=100, squeeze=False)
    labels: dict[int, str] = {}
    for g, (ds, crit, steps_budget) in enumerate(groups):
        for ax, (est, var) in zip(axes[g * per_group:(g + 1) * per_group].flat, ests):
            hit = st[(st["dataset"] == ds) & (st["critic"] == crit) & (st["budget"] == steps_budget)
                     & (st["estimator"] == est) & (st["variant"] == var)]
            if hit.empty:
                ax.set_axis_off()
                continue
            first = hit.iloc[0]
            bs = int(first["batch_size"]) if capped_at_log_k(est) and first.get("batch_size") else None
            steps = first_steps[first["run_dir"]]
            draw_staircase(ax, steps, int(first.get("ema_span") or 200), bs, legend=False)
            ax.set_xlim(0, max(1, len(steps) - 1))
            ax.set_xlabel("step", fontsize=8, labelpad=1)
            ax.tick_params(labelsize=7)
            ax.set_title(_wrap(f"{est} ({var})" if var else est), fontsize=9)
            labels[g] = f"{ds}, {crit} critic\n{budget(steps)}\nMI (nats)"
        for ax in list(axes[g * per_group:(g + 1) * per_group].flat)[len(ests):]:
            ax.set_axis_off()
    for i, row in enumerate(axes):  # each row's label (dataset, critic, step budget) on its first drawn panel
        drawn = [ax for ax in row if ax.axison]
        if drawn:
            drawn[0].set_ylabel(labels[i // per_group], fontsize=8)
    fig.suptitle(fit("Estimate (light: raw, dark: EMA) vs true MI (black); InfoNCE's log batch dashed; rows: dataset, "
                     "critic, steps", fig.get_figwidth()), fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True


def budget(steps: pd.DataFrame) -> str:
    """A staircase run's step budget (its steps.csv), as its grid row says it: '5,000 steps (5 levels x 1,000)'."""
    levels = steps["level"].nunique()
    per = len(steps) // max(1, levels)
    return f"{len(steps):,} steps ({levels} level{'s' if levels > 1 else ''} x {per:,})"


# ----------------------------------------------------------------------------------------- Fig. 3: optimal critic
def optimal_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Poole Fig. 3: per configuration, bound (``alpha=`` for I_alpha), batch size and true MI, the bias, variance
    and MSE of the bound with the optimal critic, mean ± sd over seeds (each seed: its own batches)."""
    t = pooled(runs, "optimal", "optimal.csv", ["estimator", "alpha", "batch_size", "true_mi"], ["bias", "variance", "mse"])
    return t.assign(bound=[_bound(r) for _, r in t.iterrows()]) if len(t) else t


def _bound(r: pd.Series) -> str:
    """A bound as Fig. 3's legend names it (``alpha=0.5`` for I_alpha)."""
    a = r.get("alpha")
    return f"alpha={float(a):g}" if isinstance(a, (int, float)) and not math.isnan(float(a)) else str(r["estimator"])


def _by_mi(t: pd.DataFrame, what: str, rows: list[str], value: str, fmt=fmt_sd) -> tuple[list[str], list[list[str]]]:
    """A long table as one row per ``rows`` x one column per true MI: '<value> @ MI=m' cells (mean ± sd)."""
    mis = sorted(t["true_mi"].unique())
    head = rows + ["seeds"] + [f"{what} @ MI={m:g}" for m in mis]
    lines = []
    for key, g in t.groupby(rows, sort=False):
        cells = [str(k) for k in (key if isinstance(key, tuple) else (key,))] + [str(int(g["seeds"].min()))]
        for m in mis:
            c = g[g["true_mi"] == m]
            sd = c[f"{value}_sd"].iloc[0] if f"{value}_sd" in c and len(c) else math.nan
            cells.append(fmt(c[value].iloc[0], sd) if len(c) else NONE)
        lines.append(cells)
    return head, lines


def render_optimal(t: pd.DataFrame, latex: bool) -> str:
    """Fig. 3 as a table: a row per dataset x bound x batch size, the bias (estimate − true MI) per true MI."""
    head, lines = _by_mi(t, "bias", ["dataset", "bound", "batch_size"], "bias")
    return _render(head, lines, latex)


def optimal_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """Fig. 3's layout (bias / variance / MSE vs true MI per batch size) over the seeds' means (first configuration)."""
    if t.empty:
        return False
    from ..figures.optimal import plot_optimal

    g = t[t["group"] == t["group"].iloc[0]]
    plot_optimal(g, path, f"Poole Fig. 3: optimal critic, mean over {int(g['seeds'].max())} seed(s); "
                          f"data {g['dataset'].iloc[0]}")
    return True


# ----------------------------------------------------------------------------------------- Fig. 4: gradients
def gradients_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Poole Fig. 4: per configuration, batch size and true MI, the best alpha by gradient MSE (the seeds' most
    common, ``agree``: how many seeds chose it) and its gradient MSE, mean ± sd over seeds."""
    done = finished(runs, "gradients")
    done = done.assign(variant=variant_labels(done, ["dataset"]))
    out = []
    for group, g in done.groupby("group", sort=False):
        parts = [b for d in g["run_dir"] if (b := run_csv(d, "best_alpha.csv")) is not None]
        if not parts:
            continue
        b = pd.concat(parts, ignore_index=True)
        for (bs, mi), c in b.groupby(["batch_size", "true_mi"], sort=True):
            alphas = c["best_alpha"].dropna().astype(float)
            best = alphas.mode().min() if len(alphas) else math.nan
            m, sd, n = mean_sd(c["best_mse"])
            out.append({"dataset": dataset_label(g.iloc[0]), "variant": g.iloc[0]["variant"], "batch_size": bs,
                        "true_mi": mi, "best_alpha": best, "agree": f"{int((alphas == best).sum())}/{len(c)}",
                        "best_mse": m, "best_mse_sd": sd, "seeds": len(c), "mixed": mixed(g), "group": group})
    return pd.DataFrame(out)


def render_gradients(t: pd.DataFrame, latex: bool) -> str:
    """A row per dataset x batch size: the best alpha per true MI (0: NWJ), how many seeds agree."""
    head, lines = _by_mi(t, "best α", ["dataset", "batch_size"], "best_alpha",
                         fmt=lambda m, sd: NONE if m != m else f"{m:g}")
    for line, (_, g) in zip(lines, t.groupby(["dataset", "batch_size"], sort=False)):
        line[3:] = [f"{c} ({a})" for c, a in zip(line[3:], g.sort_values("true_mi")["agree"])]
    return _render(head, lines, latex)


def gradients_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """Fig. 4's layout over the seeds' mean gradient MSE and the seeds' most common best alpha."""
    if t.empty:
        return False
    from ..figures.gradients import plot_gradients

    g = t[t["group"] == t["group"].iloc[0]]
    df = pooled(runs, "gradients", "gradients.csv", ["estimator", "alpha", "batch_size", "true_mi"], ["mse"])
    df = df[df["group"] == g["group"].iloc[0]]
    plot_gradients(df, g, path, f"Poole Fig. 4: gradient MSE, mean over {int(g['seeds'].max())} seed(s); "
                                f"data {g['dataset'].iloc[0]}")
    return True


# ----------------------------------------------------------------------------------------- §2.5: sandwich
def sandwich_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Poole §2.5: per configuration, batch size and true MI, eq. 12 (lower) and eq. 13 (upper), mean ± sd over
    seeds, their gaps to the true MI, and in how many seeds lower <= MI <= upper held (within 3 standard errors)."""
    t = pooled(runs, "sandwich", "sandwich_table.csv", ["batch_size", "true_mi"],
               ["lower_mean", "upper_mean", "holds"])
    if t.empty:
        return t
    return t.assign(lower_gap=t["lower_mean"] - t["true_mi"], upper_gap=t["upper_mean"] - t["true_mi"],
                    held=[f"{round(h * n)}/{n}" for h, n in zip(t["holds"], t["seeds"])])


SANDWICH_COLS = ["dataset", "batch_size", "true_mi", "seeds", "lower (eq. 12)", "upper (eq. 13)", "lower − MI",
                 "upper − MI", "held"]


def render_sandwich(t: pd.DataFrame, latex: bool) -> str:
    """A row per dataset x batch size x true MI: the two bounds (mean ± sd), their gaps to the true MI, held k/n."""
    lines = [[r["dataset"], str(int(r["batch_size"])), f"{r['true_mi']:g}", str(r["seeds"]),
              fmt_sd(r["lower_mean"], r["lower_mean_sd"]), fmt_sd(r["upper_mean"], r["upper_mean_sd"]),
              fmt_num(r["lower_gap"], signed=True), fmt_num(r["upper_gap"], signed=True), r["held"]]
             for _, r in t.iterrows()]
    return _render(SANDWICH_COLS, lines, latex)


def sandwich_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """§2.5 drawn: eq. 12 and eq. 13 (mean over seeds, ± the seeds' mean sd over batches) against the true MI."""
    if t.empty:
        return False
    from ..figures.sandwich import plot_sandwich

    g = t[t["group"] == t["group"].iloc[0]]
    df = pooled(runs, "sandwich", "sandwich.csv", ["estimator", "alpha", "batch_size", "true_mi"], ["mean", "variance"])
    df = df[df["group"] == g["group"].iloc[0]]
    plot_sandwich(df, path, f"Poole §2.5: eq. 12 <= MI <= eq. 13, mean over {int(g['seeds'].max())} seed(s); "
                            f"data {g['dataset'].iloc[0]}")
    return True


# ----------------------------------------------------------------------------------------- Fig. 5: dSprites
# Poole et al. §3.1 / Fig. 5: "able to learn x and y position, and scale, but not rotation"
PAPER_FACTORS = ("scale", "posX", "posY")
FACTORS = ("shape", "scale", "orientation", "posX", "posY")


def dsprites_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Poole Fig. 5: per configuration, the I_JS estimate, TC upper bound and active latents (mean ± sd over seeds),
    the fraction of seeds whose latents track each dSprites factor, and the factors where ours differ from the
    paper's (tracked by the paper: posX, posY, scale; not orientation)."""
    done = finished(runs, "dsprites")
    done = done.assign(variant=variant_labels(done, ["dataset", "estimator"]))
    out = []
    for group, g in done.groupby("group", sort=False):
        first = g.iloc[0]
        row: dict[str, Any] = {"dataset": dataset_label(first), "estimator": first["estimator"],
                               "variant": first["variant"], "seeds": len(g), "mixed": mixed(g), "group": group}
        for k in ("estimate", "tc", "active_latents"):
            row[k], row[f"{k}_sd"], _ = mean_sd(g.get(f"m_{k}", pd.Series(dtype=float)))
        for f in FACTORS:
            col = g.get(f"m_tracks_{f}", pd.Series(False, index=g.index))
            row[f"tracks_{f}"] = float(col.fillna(False).astype(bool).mean())
        ours = {f for f in FACTORS if row[f"tracks_{f}"] > 0.5}
        row["tracked"] = ", ".join(f for f in FACTORS if f in ours) or "none"
        row["paper"] = ", ".join(PAPER_FACTORS)
        row["differs"] = ", ".join(f"{f} ({'+' if f in ours else '−'})" for f in FACTORS
                                   if (f in ours) != (f in PAPER_FACTORS)) or "none"
        out.append(row)
    return pd.DataFrame(out)


DSPRITES_COLS = ["dataset", "estimator", "seeds", "I_JS estimate", "TC bound", "active latents", "tracked (> half of "
                 "seeds)", "paper (Fig. 5)", "differs (+ ours only, − paper only)"]


def render_dsprites(t: pd.DataFrame, latex: bool) -> str:
    lines = [[r["dataset"], _estimator_cell(r), str(r["seeds"]), fmt_sd(r["estimate"], r["estimate_sd"]),
              fmt_sd(r["tc"], r["tc_sd"]), fmt_sd(r["active_latents"], r["active_latents_sd"], 1), r["tracked"],
              r["paper"], r["differs"]] for _, r in t.iterrows()]
    return _render(DSPRITES_COLS, lines, latex)


def _estimator_cell(r: pd.Series) -> str:
    return (_text(r, "estimator") or NONE) + (f" ({r['variant']})" if _text(r, "variant") else "") + (
        MIXED if _text(r, "mixed") else "")


def dsprites_figure(runs: pd.DataFrame, t: pd.DataFrame, path: Path) -> bool:
    """Fig. 5 summarised: per configuration, the fraction of seeds whose latents track each factor (bars), the
    paper's factors marked."""
    if t.empty:
        return False
    plt = matplotlib_pyplot()
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(FACTORS), 3.6), dpi=100)
    width = 0.8 / len(t)
    for i, (_, r) in enumerate(t.iterrows()):
        x = np.arange(len(FACTORS)) + (i - (len(t) - 1) / 2) * width
        ax.bar(x, [r[f"tracks_{f}"] for f in FACTORS], width, label=_wrap(f"{_estimator_cell(r)}, {r['dataset']}", 50))
    for j, f in enumerate(FACTORS):
        ax.text(j, 1.04, "paper: yes" if f in PAPER_FACTORS else "paper: no", ha="center", fontsize=8)
    ax.set_xticks(range(len(FACTORS)), FACTORS)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("fraction of seeds tracking it")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(fit("Poole Fig. 5: dSprites factors tracked by an active latent (eta² >= threshold)",
                     fig.get_figwidth() * 0.7, 9), fontsize=9)
    fig.tight_layout()
    save(fig, path)
    return True


def _staircase_name(r: pd.Series) -> str:
    return f"{r['estimator'].rstrip(MIXED)} ({r['dataset']}, {r['critic']})"


def _row_name(r: pd.Series) -> str:
    return f"{r['dataset']}" + (f" ({r['variant']})" if _text(r, "variant") else "")


SECTIONS = (
    Section("staircase", "Staircase (Poole et al. Fig. 2, Choi & Lee Fig. 7)", "Poole et al. 2019", ("staircase",),
            make=lambda runs: staircase_table(runs), shown=_labelled,
            render=lambda t, latex: _render(STAIR_COLS, _df_lines(t, STAIR_COLS), latex),
            intro="All steps of all seeds of a level pooled. The median resists the rare huge negative spikes of "
                  "single-sample bounds (NWJ, JS). The paper draws these curves (Fig. 2) and gives no number: the "
                  "reference is the true MI of each level (bias = mean − true MI).",
            row_name=_staircase_name, tex="% staircase\n",
            figures=(Figure("staircase_grid.png", lambda runs, t, p: staircase_grid(runs, p)),)),
    Section("optimal", "Optimal critic (Poole et al. Fig. 3)", "Poole et al. 2019", ("optimal",),
            make=lambda runs: optimal_table(runs), render=lambda t, latex: render_optimal(t, latex),
            intro="Bias (estimate − true MI) of each bound with the analytic optimal critic, mean ± sd over seeds (each "
                  "seed averages its own batches); variance and MSE are in `optimal.csv`. The paper draws Fig. 3 and "
                  "gives no number; with f* NWJ, TUBA and DV are unbiased and InfoNCE cannot exceed log K.",
            row_name=_row_name, tex="% Poole Fig. 3\n",
            figures=(Figure("optimal.png", lambda runs, t, p: optimal_figure(runs, t, p)),)),
    Section("gradients", "Gradient accuracy (Poole et al. Fig. 4)", "Poole et al. 2019", ("gradients",),
            make=lambda runs: gradients_table(runs), render=lambda t, latex: render_gradients(t, latex),
            intro="The alpha of I_alpha whose gradient has the lowest MSE, per batch size and true MI (0: NWJ), the "
                  "seeds' most common choice (k/n: seeds that chose it); its MSE is in `gradients.csv`. The paper "
                  "draws Fig. 4 and gives no number.",
            row_name=_row_name, tex="% Poole Fig. 4\n",
            figures=(Figure("gradients.png", lambda runs, t, p: gradients_figure(runs, t, p)),)),
    Section("sandwich", "Structured sandwich (Poole et al. §2.5)", "Poole et al. 2019", ("sandwich",),
            make=lambda runs: sandwich_table(runs), render=lambda t, latex: render_sandwich(t, latex),
            intro="Eq. 12 (lower) and eq. 13 (upper) with the known encoder, mean ± sd over seeds, and their gaps to the "
                  "true MI; the paper's claim is lower <= MI <= upper (held: seeds where it held within 3 standard "
                  "errors).",
            row_name=_row_name, tex="% Poole §2.5\n",
            figures=(Figure("sandwich.png", lambda runs, t, p: sandwich_figure(runs, t, p)),)),
    Section("dsprites", "dSprites InfoMax (Poole et al. Fig. 5)", "Poole et al. 2019", ("dsprites",),
            make=lambda runs: dsprites_table(runs), render=lambda t, latex: render_dsprites(t, latex),
            intro="Last segment's I_JS estimate and TC upper bound, active latents (mean ± sd over seeds), and the "
                  "dSprites factors an active latent tracks in more than half the seeds, beside the paper's (§3.1: "
                  "x and y position and scale, not rotation). Per-run selectivity plots (Fig. 5's layout) are each "
                  "run's `dsprites.png`.",
            row_name=lambda r: _estimator_cell(r).rstrip(MIXED), tex="% Poole Fig. 5\n",
            figures=(Figure("dsprites_factors.png", lambda runs, t, p: dsprites_figure(runs, t, p)),)),
)
