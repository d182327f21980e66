"""Sample files: paired samples (x_i, y_i) of any distribution, with their true MI when it is known.

Formats (by suffix):

* ``.npz``: arrays ``x`` [n] or [n, d_x] and ``y`` [n] or [n, d_y], optional scalar ``true_mi`` (nats);
* ``.pt``: a dict with the same keys (tensors, arrays or numbers), read with ``torch.load(weights_only=True)``;
* ``.csv``: a header row; ``dataset.x`` and ``dataset.y`` list the columns of x and of y.

Every problem is a one-line ``ValueError`` naming the file, the array and what would be valid, raised
before any training: missing keys or columns, mismatched lengths, NaN or infinite values, fewer than
two samples, wrong shapes, non-numeric values, a negative true MI.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FORMATS = (".npz", ".pt", ".csv")


@dataclass
class Samples:
    x: np.ndarray  # [n, d_x] float32
    y: np.ndarray  # [n, d_y] float32
    true_mi: float | None = None

    @property
    def n(self) -> int:
        return self.x.shape[0]


def load_samples(path: str | Path, x_cols: Sequence[str] | None = None, y_cols: Sequence[str] | None = None,
                 true_mi: float | None = None) -> Samples:
    """Read and check a sample file; ``true_mi`` (if given) overrides the file's."""
    path = Path(path)
    name = path.name
    if path.suffix not in FORMATS:
        raise ValueError(f"dataset.path={path} has an unknown format {path.suffix or '(no suffix)'!r} "
                         f"(valid: {', '.join(FORMATS)})")
    if not path.is_file():
        raise ValueError(f"dataset.path={path} does not exist (valid: an existing {', '.join(FORMATS)} file)")
    if path.suffix == ".csv":
        arrays = _read_csv(path, x_cols, y_cols)
    else:
        arrays = _read_arrays(path)
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise ValueError(f"{name} has no array {missing[0]!r} (found: {', '.join(sorted(arrays)) or 'nothing'}; "
                             f"valid: arrays 'x' and 'y', optional 'true_mi')")
    x, y = (_matrix(arrays[k], k, name) for k in ("x", "y"))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x has {x.shape[0]} samples but y has {y.shape[0]} (valid: one y per x)")
    if x.shape[0] < 2:
        raise ValueError(f"{name} has {x.shape[0]} sample (valid: at least 2 pairs, and enough for the batch "
                         f"size and the test split)")
    mi = true_mi if true_mi is not None else arrays.get("true_mi")
    return Samples(x, y, _true_mi(mi, name))


def save_samples(path: str | Path, x: Any, y: Any, true_mi: float | None = None, **meta: Any) -> Path:
    """Write a ``.npz`` sample file atomically (the format :func:`load_samples` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    extra = {"true_mi": np.float64(true_mi)} if true_mi is not None else {}
    np.savez(tmp, x=np.asarray(x), y=np.asarray(y), **extra, **{k: np.asarray(v) for k, v in meta.items()})
    os.replace(tmp, path)
    return path


def _read_arrays(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        import torch

        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 -- any unreadable file is the same one-line error
        raise ValueError(f"{path.name} cannot be read as {path.suffix}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name} holds a {type(obj).__name__} (valid: a dict with 'x', 'y' and optional 'true_mi')")
    return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in obj.items()}


def _read_csv(path: Path, x_cols: Sequence[str] | None, y_cols: Sequence[str] | None) -> dict[str, Any]:
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{path.name} cannot be read as CSV: {str(e).splitlines()[0]}") from None
    cols = ", ".join(map(str, df.columns))
    if not x_cols or not y_cols:
        raise ValueError(f"{path.name}: dataset.x and dataset.y must list the CSV columns of x and of y "
                         f"(columns: {cols})")
    out = {}
    for key, want in (("x", x_cols), ("y", y_cols)):
        want = [str(c) for c in want]
        bad = [c for c in want if c not in df.columns]
        if bad:
            raise ValueError(f"{path.name} has no column {bad[0]!r} (dataset.{key}; columns: {cols})")
        out[key] = df[want].to_numpy()
    return out


def _matrix(a: Any, key: str, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name}: {key} has dtype {a.dtype} (valid: numbers)")
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] == 0:
        raise ValueError(f"{name}: {key} has shape {tuple(a.shape)} (valid: [n] or [n, d] with d >= 1)")
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"{name}: {key} has {int(bad.sum())} NaN or infinite value(s), the first in row "
                         f"{int(bad.any(axis=1).argmax())} (valid: finite numbers)")
    return a.astype(np.float32)


def _true_mi(v: Any, name: str) -> float | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "biuf" or not math.isfinite(float(a)) or float(a) < 0:
        raise ValueError(f"{name}: true_mi={v!r} is invalid (valid: one finite number >= 0, in nats)")
    return float(a)


def standardize(x: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1 (population sd; a constant column is only centred),
    over all samples before the split, as the Beyond-Normal estimators do."""
    sd = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def split_sizes(n: int, train_fraction: float, test_fraction: float | None) -> tuple[int, int]:
    """(train, test) pair counts: round(n * fraction) each (test: the rest when None)."""
    n_train = int(round(n * train_fraction))
    return n_train, n - n_train if test_fraction is None else int(round(n * test_fraction))


def split(n: int, train_fraction: float, test_fraction: float | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint random train / test index sets of :func:`split_sizes` pairs."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    n_train, n_test = split_sizes(n, train_fraction, test_fraction)
    return perm[:n_train], perm[n_train:n_train + n_test]


__all__ = ["FORMATS", "Samples", "load_samples", "save_samples", "standardize", "split", "split_sizes"]
