"""Czyż, Grabowski, Vogt, Beerenwinkel & Marx, "Beyond Normal: On the Evaluation of Mutual Information
Estimators" (NeurIPS 2023), and users' sample files (``benchmark=samples``).

The paper's layout: task x estimator, mean ± sd over seeds of the best held-out estimate beside the true MI (the
gap: the relative error, in LaTeX each cell coloured by it); figure ``bmi_suite.png`` (the heat map). Sample files
without a true MI show the estimate alone.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .choi_lee import estimator_order
from .runs import FINISHED
from .tables import save, MIXED, Figure, Section, _fmt, _render, _text, _wrap, mixed, variant_labels


def bmi_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the ``samples`` benchmark with ``task`` (the Beyond-Normal task id, or the sample file's name with as
    much of its folder as tells two files apart), ``setting`` (the ``dataset.*`` keys that differ between the
    configurations of one task) and ``variant`` (the other keys that differ between those of one estimator)."""
    sm = runs[runs["benchmark"] == "samples"]
    if sm.empty:
        return sm
    sm = sm.assign(task=_tasks(sm))
    sm = sm.assign(setting=variant_labels(sm, ["task"], lambda k: k.startswith("dataset.")))
    return sm.assign(variant=variant_labels(sm, ["estimator"], lambda k: not k.startswith("dataset.")))


def _tasks(runs: pd.DataFrame) -> pd.Series:
    """Per run: ``dataset.task``, else the label of ``dataset.path`` (see :func:`file_labels`), else the dataset
    and the configuration's hash."""
    configs = [c if isinstance(c, dict) else {} for c in runs["config"]]
    files = file_labels(c["dataset.path"] for c in configs if c.get("dataset.path"))
    return pd.Series([c.get("dataset.task") or files.get(c.get("dataset.path")) or f"{ds} (config {str(grp)[:8]})"
                      for c, ds, grp in zip(configs, runs["dataset"], runs["group"])], index=runs.index, dtype=object)


def file_labels(paths: Iterable[str]) -> dict[str, str]:
    """Per path: its file name, or the shortest tail of it that no other of ``paths`` ends with
    (``/a/pairs.npz``, ``/b/pairs.npz`` -> ``a/pairs.npz``, ``b/pairs.npz``)."""
    parts = {p: Path(p).parts for p in set(paths)}
    out = {}
    for p, ps in parts.items():
        k = next((k for k in range(1, len(ps)) if all(q[-k:] != ps[-k:] for o, q in parts.items() if o != p)), len(ps))
        out[p] = str(Path(*ps[-k:]))
    return out


def bmi_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The Beyond-Normal table (Czyż et al. 2023): one row per task x configuration, seeds pooled.

    ``mean`` / ``sd``: over seeds of the best held-out estimate over evaluation points (the protocol's reported
    value); ``final_mean``: of the last evaluation's; ``rel_error`` = (mean - true) / true and ``abs_error`` =
    |mean - true| (NaN without a true MI); ``seeds``: finished runs (completed or diverged) with a finite
    estimate, of ``runs``; ``diverged`` / ``crashed``: how many runs ended so."""
    sm = bmi_runs(runs)
    out = [{**_bmi_row(g), "group": group} for group, g in sm.groupby("group", sort=False)]
    if not out:
        return pd.DataFrame()
    bt = pd.DataFrame(out)
    key = bt.apply(lambda r: (_task_order(r["task"], r["dataset"]), r["setting"], estimator_order(r["estimator"]),
                              r["variant"]), axis=1)
    return bt.loc[sorted(bt.index, key=key.get)].reset_index(drop=True)


def _bmi_row(g: pd.DataFrame) -> dict[str, Any]:
    """One configuration's numbers (see :func:`bmi_table`)."""
    first, done = g.iloc[0], g[g["status"].isin(FINISHED)]
    best, truth = _finite(done, "m_best_test_estimate"), _finite(g, "m_true_mi").mean()
    m = best.mean()
    return {"task": first["task"], "setting": first["setting"], "dataset": first["dataset"], "true_mi": truth,
            "estimator": first["estimator"], "variant": first["variant"], "critic": first["critic"],
            "seeds": len(best), "runs": len(g), "mean": m, "sd": best.std(ddof=1),
            "final_mean": _finite(done, "m_test_estimate").mean(),
            "rel_error": (m - truth) / truth if truth else math.nan, "abs_error": abs(m - truth),
            "wall_time_s": _finite(done, "wall_time_s").mean(),
            "stopped_early": int(done["m_stopped_early"].eq(True).sum()) if "m_stopped_early" in done else 0,
            "diverged": int((g["status"] == "diverged").sum()), "crashed": int((g["status"] == "crashed").sum()),
            "mixed": mixed(done)}


def _finite(g: pd.DataFrame, col: str) -> pd.Series:
    """The finite numbers of column ``col`` (none when it is absent)."""
    x = pd.to_numeric(g[col], errors="coerce") if col in g else pd.Series(dtype=float)
    return x[np.isfinite(x)]


def _task_order(task: str, dataset: str) -> tuple[bool, list[Any]]:
    """Beyond-Normal tasks before sample files, each in natural order (``dense-5-5`` before ``dense-25-25``)."""
    return dataset != "bmi", [int(p) if p.isdigit() else p.casefold() for p in re.split(r"(\d+)", task)]


# ----------------------------------------------------------------------------------------- rendering


BMI_TEX = ("% Beyond-Normal and sample-file runs: mean ± sd over seeds of the best held-out estimate. Cells\n"
           "% coloured by the relative error (mean - true MI) / true MI: blue below, red above, deepest (60 %)\n"
           "% from 100 % on, none without a true MI. \\cellcolor is colortbl's: \\usepackage[table]{xcolor}.\n")


def _bmi_task(r: pd.Series) -> str:
    return r["task"] + (f" ({r['setting']})" if _text(r, "setting") else "")


def _bmi_estimator(r: pd.Series) -> str:
    return r["estimator"] + (f" ({r['variant']})" if _text(r, "variant") else "")


def _bmi_grid(bt: pd.DataFrame) -> tuple[list[tuple[str, float]], list[str], dict[tuple[str, str], pd.Series]]:
    """:func:`bmi_table` as task x estimator: rows (label, true MI) in the table's order, estimator columns in
    Choi & Lee's order, and the table row of each (row, column) that has runs."""
    rows: dict[str, float] = {}
    for _, r in bt.iterrows():
        if math.isnan(rows.get(_bmi_task(r), math.nan)):
            rows[_bmi_task(r)] = r["true_mi"]
    cols = sorted({(estimator_order(r["estimator"]), _text(r, "variant"), _bmi_estimator(r))
                   for _, r in bt.iterrows()})
    return list(rows.items()), [c[-1] for c in cols], {(_bmi_task(r), _bmi_estimator(r)): r for _, r in bt.iterrows()}


def _bmi_cell(r: pd.Series, latex: bool = False) -> str:
    """``mean ± sd``, ``‡`` where it pools versions, ``[n/N]`` where only n of its N runs gave an estimate."""
    text = _fmt(r["mean"], r["sd"]) + (MIXED if _text(r, "mixed") else "")
    text += f" [{r['seeds']}/{r['runs']}]" if r["seeds"] < r["runs"] else ""
    return _tex_color(r["rel_error"]) + text.replace("±", r"$\pm$") if latex else text


def _tex_color(rel: float) -> str:
    """The ``\\cellcolor`` of a relative error: blue under, red over the true MI, deeper with |error| up to 100 %."""
    pct = 0 if math.isnan(rel) else round(60 * min(abs(rel), 1.0))
    return rf"\cellcolor{{{'red' if rel > 0 else 'blue'}!{pct}}}" if pct else ""


def render_bmi(bt: pd.DataFrame, latex: bool = False) -> str:
    """The Beyond-Normal task x estimator table: mean ± sd per cell; in LaTeX coloured by relative error."""
    rows, cols, cells = _bmi_grid(bt)
    lines = [[task, "–" if math.isnan(truth) else f"{truth:.3f}"]
             + [_bmi_cell(cells[task, c], latex) if (task, c) in cells else "" for c in cols] for task, truth in rows]
    return _render(["Task", "true MI"] + cols, lines, latex)




def bmi_suite(bt: pd.DataFrame, path: Path, _: Any = None) -> bool:
    """The Beyond-Normal paper's table as a heat map (from :func:`bmi_table`): tasks (with their true MI) as rows,
    estimators as columns, each cell coloured by its relative error (diverging, centred at 0, clipped to ±1;
    grey without a true MI or an estimate, white without runs) and labelled mean ± sd over seeds."""
    if bt.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, cells = _bmi_grid(bt)
    cmap, norm = plt.get_cmap("RdBu_r"), matplotlib.colors.Normalize(-1, 1)
    rgba = np.ones((len(rows), len(cols), 4))
    fig, ax = plt.subplots(figsize=(3.4 + 1.25 * len(cols), max(3.0, 1.8 + 0.36 * len(rows))), dpi=100,
                           layout="constrained")
    for i, (task, _) in enumerate(rows):
        for j, col in enumerate(cols):
            r = cells.get((task, col))
            if r is None:
                continue
            rel = float(r["rel_error"])
            rgba[i, j] = (0.85, 0.85, 0.85, 1.0) if math.isnan(rel) else cmap(norm(np.clip(rel, -1, 1)))
            ax.text(j, i, _bmi_text(r), ha="center", va="center", fontsize=8,
                    color="white" if abs(rel) > 0.6 else "black")
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), [_wrap(c, 20) for c in cols], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), [f"{t}  ({'no true MI' if math.isnan(m) else f'{m:.2f}'})" for t, m in rows],
                  fontsize=8)
    ax.set_xticks(np.arange(len(cols) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", length=0)
    ax.set_ylabel("task  (true MI, nats)")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, extend="both", fraction=0.04,
                       pad=0.02, aspect=max(20, 2 * len(rows)))
    bar.set_label("relative error, clipped to ±1", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    fig.suptitle("Best held-out estimate: mean ± sd over seeds\ncolour: (mean − true MI) / true MI", fontsize=9)
    save(fig, path)
    return True


def _bmi_text(r: pd.Series) -> str:
    """A heat-map cell: mean over ± sd (one seed: the mean), marked like :func:`_bmi_cell`."""
    text = "–" if math.isnan(r["mean"]) else f"{r['mean']:.2f}" + (MIXED if _text(r, "mixed") else "")
    lower = "" if math.isnan(r["sd"]) else f"± {r['sd']:.2f}"
    if r["seeds"] < r["runs"]:
        lower = f"{lower} [{r['seeds']}/{r['runs']}]".strip()
    return f"{text}\n{lower}" if lower else text


BMI_INTRO = ("Mean ± sd over seeds of the best held-out estimate over evaluation points (the Beyond-Normal protocol, "
             "Czyż et al. 2023) beside the true MI (– where a sample file has none). The final evaluation's estimate, "
             "relative errors, wall times and failure counts are in `bmi.csv`. [n/N]: n of the configuration's N runs "
             "gave an estimate (the others are in the failures table); diverged runs count with the best estimate "
             "they recorded.")

SECTIONS = (
    Section("bmi", "Beyond-Normal and sample-file runs", "Czyż et al. 2023", ("samples",),
            make=lambda runs: bmi_table(runs), render=lambda t, latex: render_bmi(t, latex), intro=BMI_INTRO,
            row_name=lambda r: f"{_bmi_task(r)} / {_bmi_estimator(r)}", tex=BMI_TEX,
            figures=(Figure("bmi_suite.png", lambda runs, t, p: bmi_suite(t, p)),)),
)
