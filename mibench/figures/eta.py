"""η-MINE Fig. 3a from a folder of eta_gaussian runs: ``python -m mibench.figures eta_fig3a <runs dir>``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..results import atomic_write_csv, save_figure


def collect_eta_runs(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, finals) of every eta_gaussian run under ``root`` (one folder per run with result.json)."""
    curves, finals = [], []
    for res in sorted(Path(root).rglob("result.json")):
        rec = json.loads(res.read_text())
        if rec.get("benchmark") != "eta_gaussian" or not (res.parent / "curve.csv").exists():
            continue
        summ = pd.read_csv(res.parent / "summary.csv")
        c = pd.read_csv(res.parent / "curve.csv")
        dim, seed = int(summ["dim"].iloc[0]), int(summ["seed"].iloc[0])
        curves.append(c.assign(estimator=rec["estimator"], dim=dim, seed=seed))
        finals.append(summ)
    if not curves:
        raise FileNotFoundError(f"no eta_gaussian runs (result.json + curve.csv) under {root}")
    return pd.concat(curves, ignore_index=True), pd.concat(finals, ignore_index=True)


def eta_fig3a(root: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """η-MINE Fig. 3a: test estimate (mean ± std over seeds) vs iteration, one panel per dim; writes
    ``eta_fig3a.png`` and ``eta_fig3a.csv`` (final test estimate per estimator and dim: mean, std,
    mean error, mean |error|, seeds) into ``out`` (default: ``root``). Returns that table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, finals = collect_eta_runs(root)
    out = Path(out) if out is not None else Path(root)
    table = (finals.assign(abs_error=finals["error"].abs())
             .groupby(["dim", "estimator"], sort=True)
             .agg(true_mi=("true_mi", "first"), mean=("test_estimate", "mean"), std=("test_estimate", "std"),
                  mean_error=("error", "mean"), mean_abs_error=("abs_error", "mean"), seeds=("seed", "nunique"))
             .reset_index())
    atomic_write_csv(out / "eta_fig3a.csv", table)
    dims = sorted(curves["dim"].unique())
    names = list(dict.fromkeys(curves["estimator"]))
    fig, axes = plt.subplots(1, len(dims), figsize=(4.5 * len(dims), 3.8), dpi=110, squeeze=False)
    for ax, d in zip(axes[0], dims):
        sub = curves[curves["dim"] == d]
        for i, name in enumerate(names):
            g = sub[sub["estimator"] == name].groupby("step")["test_estimate"]
            m, s = g.mean(), g.std().fillna(0.0)
            color = plt.cm.tab10([0, 1, 2, 4, 5, 6, 8, 9][i % 8])  # no red: red is the true MI
            ax.plot(m.index, m.values, color=color, lw=1.5, label=name)
            ax.fill_between(m.index, m - s, m + s, color=color, alpha=0.2)
        cx = table[(table["dim"] == d) & (table["estimator"] == "eta_mine_convex")]
        if len(cx):
            ax.errorbar([sub["step"].max()], cx["mean"], yerr=cx["std"].fillna(0.0), fmt="k*", ms=9,
                        label="eta_mine_convex (final)")
        true = float(sub["true_mi"].iloc[0])
        ax.axhline(true, color="red", lw=1.2, label="true MI")
        n = int(table[table["dim"] == d]["seeds"].max())
        ax.set_title(f"dim {d}, true MI {true:.2f} ({n} seed{'s' if n != 1 else ''}, mean ± std)", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test-set MI estimate (nats)")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out / "eta_fig3a.png")
    return table


def make_figures(root: Path, out: Path) -> list[Path]:
    """``python -m mibench.figures eta_fig3a RUNS``: the figure and its table; prints the table."""
    table = eta_fig3a(root, out)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}" if math.isfinite(v) else "nan"))
    return [Path(out) / "eta_fig3a.png", Path(out) / "eta_fig3a.csv"]


def plot_curves(curves: dict[str, pd.DataFrame], path: str | Path, title: str, true_mi: float,
                convex: float | None = None, bands: dict[str, pd.DataFrame] | None = None) -> None:
    """Test estimate vs step per estimator (mean ± std band when ``bands`` gives std), truth in red (Fig. 3a)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for i, (name, c) in enumerate(curves.items()):
        color = plt.cm.tab10([0, 1, 2, 4, 5, 6, 8, 9][i % 8])  # no red: red is the true MI
        ax.plot(c["step"], c["test_estimate"], color=color, lw=1.5, label=name)
        if bands is not None and name in bands:
            sd = bands[name]["test_estimate"]
            ax.fill_between(c["step"], c["test_estimate"] - sd, c["test_estimate"] + sd, color=color, alpha=0.2)
    if convex is not None and math.isfinite(convex):
        ax.axhline(convex, color="black", ls="--", lw=1, label=f"eta_mine_convex {convex:.3f}")
    ax.axhline(true_mi, color="red", lw=1.2, label=f"true MI {true_mi:.3f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test-set MI estimate (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
