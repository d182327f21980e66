"""One sample-file / Beyond-Normal run's curve: train and held-out estimates per evaluation, the best one marked."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..results import save_figure


def plot_run(curve: pd.DataFrame, path: str | Path, title: str, true_mi: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(curve["step"], curve["train_estimate"], color="tab:gray", lw=1, marker=".", label="train (block mean)")
    ax.plot(curve["step"], curve["test_estimate"], color="tab:blue", lw=1.5, marker="o", ms=3, label="test (held out)")
    finite = curve[curve["test_estimate"].map(math.isfinite)]
    if len(finite):
        best = finite.loc[finite["test_estimate"].idxmax()]
        ax.plot([best["step"]], [best["test_estimate"]], "k*", ms=10,
                label=f"best test {best['test_estimate']:.3f} (reported)")
    if true_mi is not None and math.isfinite(true_mi):
        ax.axhline(true_mi, color="red", lw=1.2, label=f"true MI {true_mi:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("MI estimate (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
