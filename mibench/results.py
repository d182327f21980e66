"""Writing results: atomic files, per-level summaries, the staircase figure."""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .log import first_line  # noqa: F401  (results' callers: one-line errors)

STEP_COLUMNS = ["step", "level", "true_mi", "estimate", "loss", "joint", "marginal"]


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask (0o644 under the usual 022, 0o640 under
    027). Read from /proc where it can be (``os.umask`` can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp: str | Path, path: str | Path) -> None:
    """Rename the finished temporary file ``tmp`` over ``path`` (atomic), with the mode any file the user creates
    gets (:func:`new_file_mode`): a temporary file from ``mkstemp`` is private (0o600), and a result others in the
    group cannot read cannot be aggregated. Every atomic writer of mibench ends here."""
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and an atomic rename (never half-written); the file gets the
    mode of any new file under the process umask (:func:`publish`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        publish(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # e.g. a full disk: the one line names the file
            raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
        raise


def atomic_write_csv(path: str | Path, df: pd.DataFrame) -> None:
    """``df`` as CSV (9 significant digits), written as :func:`atomic_write_text` writes."""
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
    try:
        fig.savefig(tmp)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


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


def plot_epochs(history: pd.DataFrame, path: str | Path, title: str, generated: str | None = None) -> bool:
    """A run's training curve per epoch (SLB / CLB, DIM, layer-pair DIM, the Jigsaw: their epochs.csv), one panel per
    ``<column>_mean`` (and ``pretext_top1``) against the epoch; the title says GENERATED where the data was (the
    task's ``generated_data``). False when there is no epoch to draw."""
    cols = [c for c in history.columns if c.endswith("_mean") or c == "pretext_top1"] if len(history) else []
    if not cols:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cols), figsize=(2.6 * len(cols) + 0.6, 3.0), dpi=100, squeeze=False)
    for ax, c in zip(axes[0], cols):
        ax.plot(history["epoch"] + 1, history[c], marker="o", ms=3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(c.removesuffix("_mean"), fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    text = f"{title} | {generated}" if generated else title
    width = max(20, int(fig.get_figwidth() * 12))
    fig.suptitle("\n".join(text[i:i + width] for i in range(0, len(text), width)), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def format_summary(summary: pd.DataFrame, header: str = "") -> str:
    cols = ["level", "true_mi", "mean", "bias", "variance", "mse", "nonfinite"]
    text = summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
    return f"{header}\n{text}" if header else text


def read_steps(path: str | Path, levels: Sequence[float] | None = None) -> tuple[pd.DataFrame | None, str | None]:
    """A staircase ``steps.csv`` (STEP_COLUMNS, numbers; NaN / inf are recorded values), or (None, why it cannot be
    used): missing, empty, ragged, not text, a column missing or holding a non-number, or a level that is not one of
    ``levels`` (the run's dataset.mi_levels) or whose true_mi is not that level's."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        return None, "missing"
    except pd.errors.EmptyDataError:
        return None, "empty"
    except pd.errors.ParserError as e:
        return None, f"ragged ({first_line(e).split('C error: ')[-1]})"
    except UnicodeDecodeError:
        return None, "not text (binary data)"
    except (OSError, ValueError) as e:
        return None, f"cannot be read ({first_line(e)})"
    missing = [c for c in STEP_COLUMNS[:4] if c not in df]
    if missing:
        return None, f"no {', '.join(missing)} column (header: {', '.join(map(str, df.columns[:8]))[:80]})"
    if df.empty:
        return None, "no rows"
    for c in [c for c in STEP_COLUMNS if c in df]:
        x = pd.to_numeric(df[c], errors="coerce")
        odd = (x.isna() & (df[c].notna() | (c in ("step", "level")))).to_numpy()  # (step and level: never NaN)
        if odd.any():
            i = int(odd.argmax())
            return None, f"{c} holds {df[c].iloc[i]!r} in line {i + 2}"
        df[c] = x
    why = _level_problem(df, levels) if levels is not None else None
    return (None, why) if why else (df, None)


def _level_problem(df: pd.DataFrame, levels: Sequence[float]) -> str | None:
    """Why ``df``'s levels contradict ``levels`` (the run's dataset.mi_levels), or None."""
    lv, n = df["level"].to_numpy(), len(levels)
    bad = (lv != np.round(lv)) | (lv < 0) | (lv >= n)
    if bad.any():
        i = int(bad.argmax())
        return f"level {lv[i]:g} in line {i + 2} is not one of this run's {n} levels (0-{n - 1}, dataset.mi_levels)"
    truth = np.asarray(levels, dtype=float)[lv.astype(int)]
    off = ~np.isclose(df["true_mi"].to_numpy(), truth, rtol=1e-6, atol=1e-9)
    if off.any():
        i = int(off.argmax())
        return (f"true_mi {df['true_mi'].iloc[i]:g} in line {i + 2} is not level {int(lv[i])}'s {truth[i]:g} "
                f"(dataset.mi_levels)")
    return None


def write_steps(path: str | Path, rows: Sequence[np.ndarray] | np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(rows), columns=STEP_COLUMNS)
    df["step"] = df["step"].astype(int)
    df["level"] = df["level"].astype(int)
    atomic_write_csv(path, df)
    return df
