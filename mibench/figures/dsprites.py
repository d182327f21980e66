"""Feature selectivity on dSprites in the layout of Poole et al. (2019) Fig. 5 (after Chen et al. 2018).

One row per active latent: (1) its mean activation (posterior mean) over the evaluation images at each of
the 32 x 32 positions (diverging colours centred on the latent's overall mean: red high, blue low);
(2) mean activation against scale, one line per shape; (3) against orientation, one line per shape.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.dsprites import ORIENTATIONS, SCALES, SHAPES
from ..results import save_figure

SHAPE_COLOURS = ("tab:blue", "tab:orange", "tab:green")


def plot_selectivity(tables: dict[str, Any], path: str | Path, title: str, tracked: Sequence[str]) -> None:
    """``tables``: what ``DSpritesInfoMax.evaluate`` keeps: ``active`` (latent indices), ``position``
    [32 posY, 32 posX, latent], ``scale`` [3, 6, latent], ``orientation`` [3, 40, latent], ``mean`` [latent]
    and ``factors`` (the factor table, for the eta^2 labels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    active = list(tables["active"])
    rows = max(1, len(active))
    fig, axes = plt.subplots(rows, 3, figsize=(9.5, 0.6 + 2.3 * rows), dpi=100, squeeze=False,
                             gridspec_kw={"width_ratios": [1.0, 1.25, 1.25]})
    fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=8.5)
    if not active:
        for ax in axes[0]:
            ax.axis("off")
        axes[0, 1].text(0.5, 0.5, "no active latent", ha="center", va="center", fontsize=12)
    table = tables["factors"]
    deg = np.degrees(ORIENTATIONS)
    for r, k in enumerate(active):
        pos = tables["position"][:, :, k].numpy()
        centre = float(tables["mean"][k])
        half = float(np.nanmax(np.abs(pos - centre))) if np.isfinite(pos).any() else 1.0
        half = half if half > 0 else 1.0
        ax = axes[r, 0]
        im = ax.imshow(pos, cmap="RdBu_r", vmin=centre - half, vmax=centre + half, origin="upper",
                       extent=(-0.5 / 31, 1 + 0.5 / 31, 1 + 0.5 / 31, -0.5 / 31))
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        eta = {c[5:]: float(table.loc[k, c]) for c in table.columns if c.startswith("eta2_")}
        best = max(eta, key=eta.get)
        ax.set_ylabel(f"z{k}: {tracked[k]}\n(eta² {best} {eta[best]:.2f})\nposY", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
        for s, name in enumerate(SHAPES):
            axes[r, 1].plot(SCALES, tables["scale"][s, :, k].numpy(), marker=".", color=SHAPE_COLOURS[s], label=name)
            axes[r, 2].plot(deg, tables["orientation"][s, :, k].numpy(), color=SHAPE_COLOURS[s], label=name)
        axes[r, 1].set_ylabel("mean activation", fontsize=8)
        for ax in axes[r]:
            ax.tick_params(labelsize=7)
        for ax in axes[r, 1:]:
            ax.grid(alpha=0.3)
        if r == 0:
            axes[r, 0].set_title("position (mean activation)", fontsize=9)
            axes[r, 1].set_title("scale", fontsize=9)
            axes[r, 2].set_title("orientation", fontsize=9)
            axes[r, 2].legend(fontsize=7, loc="best")
        if r == len(active) - 1:
            axes[r, 0].set_xlabel("posX", fontsize=8)
            axes[r, 1].set_xlabel("scale", fontsize=8)
            axes[r, 2].set_xlabel("orientation (degrees)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (0.6 + 2.3 * rows)))
    save_figure(fig, path)
