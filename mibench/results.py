"""Writing results: atomic files, per-level summaries, the staircase figure."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

STEP_COLUMNS = ["step", "level", "true_mi", "estimate", "loss", "joint", "marginal"]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_csv(path: str | Path, df: pd.DataFrame) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.9g"))


def level_summary(steps: pd.DataFrame) -> pd.DataFrame:
    """Bias, variance and MSE of the estimate over each level's steps (Poole et al. Fig. 3 quantities).

    variance uses ddof=0 so that mse = bias^2 + variance. Non-finite estimates are counted and
    left out of the moments; a level with none finite has NaN moments.
    """
    rows = []
    for level, g in steps.groupby("level", sort=True):
        est = g["estimate"].to_numpy(dtype=float)
        ok = np.isfinite(est)
        true = float(g["true_mi"].iloc[0])
        e = est[ok]
        mean = float(e.mean()) if e.size else math.nan
        var = float(e.var()) if e.size else math.nan
        mse = float(((e - true) ** 2).mean()) if e.size else math.nan
        rows.append({"level": int(level), "true_mi": true, "steps": int(len(g)), "mean": mean,
                     "bias": mean - true, "variance": var, "mse": mse, "nonfinite": int((~ok).sum())})
    return pd.DataFrame(rows)


def draw_staircase(ax, steps: pd.DataFrame, ema_span: int = 200, batch_size: int | None = None,
                   legend: bool = True) -> None:
    """Estimate vs true MI on ``ax``: raw (light), EMA-smoothed (dark), truth (black), and InfoNCE's
    log-batch ceiling (dashed) when ``batch_size`` is given, as in Poole Fig. 2."""
    est = steps["estimate"].replace([np.inf, -np.inf], np.nan)
    ax.plot(steps["step"], est, color="tab:blue", alpha=0.3, lw=0.6, label="estimate")
    ax.plot(steps["step"], est.ewm(span=ema_span).mean(), color="tab:blue", lw=1.6, label=f"EMA (span {ema_span})")
    ax.plot(steps["step"], steps["true_mi"], color="black", lw=1.2, label="true MI")
    if batch_size:
        ax.axhline(math.log(batch_size), color="gray", ls="--", lw=1, label=f"log batch = {math.log(batch_size):.2f}")
    top = float(steps["true_mi"].max())
    ax.set_ylim(-1.0, top * 1.5 + 1)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(loc="upper left", fontsize=8)


def save_figure(fig, path: str | Path) -> None:
    """Save atomically (a reader never sees half a PNG) and close."""
    import matplotlib.pyplot as plt

    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def plot_staircase(steps: pd.DataFrame, path: str | Path, title: str, ema_span: int = 200,
                   batch_size: int | None = None) -> None:
    """One run's staircase figure (see :func:`draw_staircase`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    draw_staircase(ax, steps, ema_span, batch_size)
    ax.set_xlabel("step")
    ax.set_ylabel("MI (nats)")
    ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path)


def format_summary(summary: pd.DataFrame, header: str = "") -> str:
    cols = ["level", "true_mi", "mean", "bias", "variance", "mse", "nonfinite"]
    text = summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return f"{header}\n{text}" if header else text


def write_steps(path: str | Path, rows: Sequence[np.ndarray] | np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(rows), columns=STEP_COLUMNS)
    df["step"] = df["step"].astype(int)
    df["level"] = df["level"].astype(int)
    atomic_write_csv(path, df)
    return df
