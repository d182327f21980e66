"""η-MINE Fig. 3a's per-run curve (``benchmark=eta_gaussian``); the figure over many runs is
:func:`mibench.reports.eta_mine.eta_fig3a` (``python -m mibench.figures eta_fig3a <runs dir>``)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..results import save_figure


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
