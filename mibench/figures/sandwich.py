"""The structured sandwich (benchmark=sandwich): eq. 12 and eq. 13 against the true MI, one panel per batch size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..results import save_figure
from .optimal import label


def plot_sandwich(df: pd.DataFrame, path: str | Path, title: str) -> None:
    """Mean ± 1 sd over batches of the lower (eq. 12) and upper (eq. 13) bound vs the true MI (dashed
    diagonal); other bounds of the table as thin grey lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(df["batch_size"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(2.8 * len(sizes) + 1.0, 3.4), dpi=100, sharey=True,
                             squeeze=False)
    style = {"tnce": ("tab:blue", "eq. 12: InfoNCE, tractable p(y|x)"),
             "loo_upper": ("tab:red", "eq. 13: leave-one-out upper bound")}
    top = float(df["true_mi"].max())
    for ax, b in zip(axes[0], sizes):
        sub = df[df["batch_size"] == b]
        ax.plot([0, top], [0, top], "k--", lw=1.0, label="true MI")
        for lab in dict.fromkeys(label(r) for _, r in sub.iterrows()):
            d = sub[[label(r) == lab for _, r in sub.iterrows()]].sort_values("true_mi")
            mean, sd = d["mean"].to_numpy(), np.sqrt(d["variance"].to_numpy())
            color, name = style.get(lab, ("0.6", f"{lab}, q = p(y)"))
            ax.plot(d["true_mi"], mean, marker="o", ms=3, lw=1.8 if lab in style else 0.8, color=color, label=name)
            if lab in style:
                ax.fill_between(d["true_mi"], mean - sd, mean + sd, color=color, alpha=0.15, lw=0)
        ax.axhline(np.log(b), color="tab:blue", lw=0.6, ls=":")
        ax.set_title(f"batch {b} (log K = {np.log(b):.1f})", fontsize=9)
        ax.set_xlabel("true MI (nats)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("estimate (nats), mean ± sd")
    axes[0, 0].set_ylim(-1.0, 2.5 * top + 1.0)
    axes[0, -1].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
