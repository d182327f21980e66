"""Poole et al. Fig. 4 from the gradient sweep tables (benchmark=gradients)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..results import save_figure
from .optimal import label


def alpha_norm(alphas: list[float]):
    """The log colour scale of alpha shared by the I_alpha lines and the best-alpha heat map."""
    from matplotlib.colors import LogNorm

    positive = [a for a in alphas if a > 0] or [1e-3]
    return LogNorm(vmin=min(positive), vmax=max(1.0, max(positive)))


def colours(labels: list[str], alphas: list[float]) -> dict[str, tuple]:
    """figures/optimal.py's assignment for the bounds (tab10 in order of appearance); the I_alpha lines, many
    here, take the heat map's colour of their alpha (viridis on a log scale), so the two panels read alike."""
    import matplotlib.pyplot as plt

    plain = [lab for lab in labels if not lab.startswith("alpha=")]
    out = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(plain)}
    norm = alpha_norm(alphas)
    for lab in labels:
        if lab.startswith("alpha="):
            out[lab] = plt.cm.viridis(float(norm(float(lab.split("=", 1)[1]))))
    return out


def draw_best_alpha(ax, best: pd.DataFrame, alphas: list[float]) -> None:
    """Heat map of the best alpha, MI on x and batch size on y, log colour scale; alpha = 0 (NWJ) drawn grey."""
    import matplotlib.pyplot as plt

    mis = sorted(best["true_mi"].unique())
    sizes = sorted(best["batch_size"].unique())
    grid = best.pivot(index="batch_size", columns="true_mi", values="best_alpha").reindex(index=sizes, columns=mis)
    z = grid.to_numpy(dtype=float)
    norm = alpha_norm(alphas)
    cmap = plt.get_cmap("viridis").with_extremes(under="0.55", bad="white")  # under: alpha = 0, NWJ
    shown = np.where(z == 0, norm.vmin * 1e-3, z)  # below vmin: the "under" colour
    im = ax.imshow(np.ma.masked_invalid(shown), origin="lower", aspect="auto", cmap=cmap, norm=norm)
    for i in range(len(sizes)):
        for j in range(len(mis)):
            v = z[i, j]
            text = "" if math.isnan(v) else ("0\nNWJ" if v == 0 else f"{v:g}")
            dark = not math.isnan(v) and (v == 0 or norm(v) < 0.6)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ax.set_xticks(range(len(mis)), [f"{m:g}" for m in mis])
    ax.set_yticks(range(len(sizes)), [str(int(s)) for s in sizes])
    ax.set_xlabel("true MI (nats)")
    ax.set_ylabel("batch size")
    ax.set_title("best alpha by gradient MSE\n(grey: 0 = NWJ)")
    cb = ax.figure.colorbar(im, ax=ax, extend="min", fraction=0.08)
    cb.set_label("alpha (log scale)")


def plot_gradients(df: pd.DataFrame, best: pd.DataFrame, path: str | Path, title: str) -> None:
    """Fig. 4 layout: left, gradient MSE vs true MI (log y), one panel per batch size, one colour per bound;
    right, the best alpha per (MI, batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.assign(label=[label(r) for _, r in df.iterrows()])
    labels = list(dict.fromkeys(df["label"]))
    alphas = sorted(df.loc[df["estimator"] == "alpha", "alpha"].unique())
    col = colours(labels, list(alphas))
    sizes = sorted(df["batch_size"].unique())
    ncol = min(3, len(sizes))
    nrow = math.ceil(len(sizes) / ncol)
    fig = plt.figure(figsize=(3.4 * ncol + 5.5, 3.0 * nrow + 1.2), dpi=100)
    gs = fig.add_gridspec(nrow, ncol + 1, width_ratios=[1.0] * ncol + [1.45])
    first = None
    for n, b in enumerate(sizes):
        ax = fig.add_subplot(gs[n // ncol, n % ncol], sharex=first, sharey=first)
        first = first or ax
        sub = df[df["batch_size"] == b]
        for lab in labels:
            d = sub[sub["label"] == lab].sort_values("true_mi")
            d = d[d["mse"] > 0]
            alpha = lab.startswith("alpha=")
            # tuba = nwj exactly with the optimal critic: nwj wide underneath, tuba dashed on top
            ls, lw = ("--", 1.2) if lab == "tuba" else ("-", 3.2 if lab == "nwj" else (1.0 if alpha else 2.0))
            ax.plot(d["true_mi"], d["mse"], ls, marker="o" if alpha else "s", ms=2.0 if alpha else 3.5, lw=lw,
                    color=col[lab], label=lab, zorder=2 if alpha else 3)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.set_title(f"batch {int(b)}", fontsize=10)
        if n % ncol == 0:
            ax.set_ylabel("gradient MSE")
        if n // ncol == nrow - 1 or n + ncol >= len(sizes):
            ax.set_xlabel("true MI (nats)")
    handles, names = first.get_legend_handles_labels()
    if len(best) and best["best_alpha"].notna().any():
        draw_best_alpha(fig.add_subplot(gs[:, ncol]), best, list(alphas))
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 7), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    # fixed margins in inches (tight_layout costs seconds on these log axes)
    w, h = fig.get_size_inches()
    legend_h = 0.25 * math.ceil(len(names) / 7) + 0.35
    fig.subplots_adjust(left=0.75 / w, right=1 - 0.95 / w, bottom=(legend_h + 0.45) / h, top=1 - 0.75 / h,
                        wspace=0.28, hspace=0.42)
    save_figure(fig, path)
