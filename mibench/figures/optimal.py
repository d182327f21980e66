"""Poole et al. Fig. 3 from the optimal-critic sweep table (benchmark=optimal)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..results import save_figure


def label(row: pd.Series | dict) -> str:
    a = row["alpha"]
    return f"alpha={a:g}" if isinstance(a, float) and not math.isnan(a) else str(row["estimator"])


def plot_optimal(df: pd.DataFrame, path: str | Path, title: str) -> None:
    """Fig. 3 layout: rows bias / variance / MSE, one column per batch size, MI on x, one line per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = df.assign(label=[label(r) for _, r in df.iterrows()])
    labels = list(dict.fromkeys(df["label"]))
    sizes = sorted(df["batch_size"].unique())
    colors = {lab: plt.cm.tab10(i % 10) for i, lab in enumerate(labels)}
    fig, axes = plt.subplots(3, len(sizes), figsize=(3.0 * len(sizes) + 1.5, 8), dpi=100, sharex=True,
                             sharey="row", squeeze=False)
    for c, b in enumerate(sizes):
        sub = df[df["batch_size"] == b]
        for r, q in enumerate(("bias", "variance", "mse")):
            ax = axes[r, c]
            for lab in labels:
                d = sub[sub["label"] == lab].sort_values("true_mi")
                # tuba = nwj exactly with the optimal critic: nwj wide underneath, tuba dashed on top
                ls, lw = ("--", 1.0) if lab == "tuba" else ("-", 3.0 if lab == "nwj" else 1.3)
                ax.plot(d["true_mi"], d[q], ls, marker="o", ms=2.5, lw=lw, color=colors[lab], label=lab)
            if q == "bias":
                ax.axhline(0, color="black", lw=0.6)
            else:
                ax.set_yscale("symlog", linthresh=1e-2)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(f"batch {b}")
            if c == 0:
                ax.set_ylabel({"bias": "bias (nats)", "variance": "variance", "mse": "MSE"}[q])
            if r == 2:
                ax.set_xlabel("true MI (nats)")
    axes[0, -1].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
