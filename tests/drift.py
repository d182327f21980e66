"""One principle for "these two records are the same run" when the arithmetic differs only in rounding (a run
trained in a vectorised group against the same run alone; the same run on another CPU's float kernels):
training amplifies rounding, so the two records agree to ``tight_atol`` only over the first ``tight_steps`` steps
-- after that a ~1e-7 difference has grown past it (Adam turns rounding noise in a near-zero gradient into
full-size steps) -- and from then on only statistically: over windows of ``window`` steps, the two runs' mean
estimate (and loss) agree within ``z`` standard errors, the standard error from the step-to-step spread of both
runs in the window. Only the columns the bound determines are compared (estimate, loss): the joint / marginal
terms of shift-invariant bounds (DV, MINE, SMILE, InfoNCE) wander along a direction the estimate does not see.

``tight_steps`` is measured per setting by tests/calibration/calibrate_drift.py on the AVX512 and the plain
(``ATEN_CPU_CAPABILITY=default``) kernels and passed by each test with its figures. A run that genuinely differs
fails: another seed or estimator at step 0, another learning rate from step 1 on, a bias in a later window
(tests/test_drift.py).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TIGHT_ATOL = 1e-5  # estimates of a few nats in float32: steps 0-2 differ by ~1e-7 grouped (measured)
WINDOW = 50
Z = 4.0  # grouped and alone see the same batches: their window means differ by < 0.1 standard errors (measured)
COLUMNS = ("estimate", "loss")


def compare_runs(got: pd.DataFrame, want: pd.DataFrame, *, tight_steps: int, columns=COLUMNS,
                 tight_atol: float = TIGHT_ATOL, window: int = WINDOW) -> dict:
    """What :func:`assert_same_run` checks, measured: ``first_over`` (the first step at which a column differs by
    more than tight_atol; the common length if none), ``tight_max`` (the largest difference over the first
    tight_steps), ``windows`` ([(column, first step, last step, |mean difference|, standard error)]) over
    windows of ``window`` steps from tight_steps on (a last window shorter than ``window`` joins the one before),
    and ``window_z`` (the largest |difference| / standard error)."""
    cols = [c for c in columns if c in want.columns]
    assert cols and all(c in got.columns for c in cols), f"columns {list(columns)}: got {list(got.columns)}"
    n = min(len(got), len(want))
    k = min(tight_steps, n)
    out = {"n": n, "first_over": n, "tight_max": 0.0, "windows": [], "window_z": 0.0}
    for c in cols:
        a, b = got[c].to_numpy(float)[:n], want[c].to_numpy(float)[:n]
        d = np.where(np.isnan(a) & np.isnan(b), 0.0, np.abs(a - b))
        over = np.flatnonzero(~(d <= tight_atol))
        out["first_over"] = min(out["first_over"], int(over[0]) if len(over) else n)
        out["tight_max"] = max(out["tight_max"], float(np.max(d[:k], initial=0.0)))  # (nan: one of them is nan)
        starts = list(range(k, n - window + 1, window)) or ([k] if n - k >= 2 else [])
        for i, lo in enumerate(starts):
            hi = starts[i + 1] if i + 1 < len(starts) else n
            wa, wb = a[lo:hi], b[lo:hi]
            se = float(np.sqrt((wa.var(ddof=1) + wb.var(ddof=1)) / len(wa)))
            diff = abs(float(wa.mean() - wb.mean()))
            out["windows"].append((c, lo, hi - 1, diff, se))
            z = diff / se if se > 0 else (0.0 if diff <= tight_atol else np.inf)
            out["window_z"] = max(out["window_z"], z if not np.isnan(z) else np.inf)
    return out


def assert_same_run(got: pd.DataFrame, want: pd.DataFrame, *, tight_steps: int, columns=COLUMNS,
                    tight_atol: float = TIGHT_ATOL, window: int = WINDOW, z: float = Z, same_length: bool = True,
                    where: str = "") -> dict:
    """Assert that ``got`` and ``want`` (per-step records) are one run up to rounding: ``columns`` within
    ``tight_atol`` over steps [0, tight_steps), then every window's means within ``z`` standard errors (plus
    tight_atol, for windows without spread). ``same_length=False``: compare the common first rows (runs that stop
    early stop at different steps once they have drifted apart). Returns :func:`compare_runs`' figures."""
    if same_length:
        assert len(got) == len(want), f"{where}: {len(got)} steps, {len(want)} alone"
    r = compare_runs(got, want, tight_steps=tight_steps, columns=columns, tight_atol=tight_atol, window=window)
    assert r["first_over"] >= min(tight_steps, r["n"]), (
        f"{where}: differs by more than {tight_atol:g} at step {r['first_over']} (tight over the first {tight_steps})")
    for c, lo, hi, diff, se in r["windows"]:
        assert diff <= z * se + tight_atol, (f"{where}: {c} mean over steps {lo}-{hi} differs by {diff:.3g} "
                                             f"= {diff / se if se else np.inf:.1f} standard errors of {se:.2g} (limit {z:g})")
    return r
