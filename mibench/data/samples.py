"""Sample files: paired samples (x_i, y_i) of any distribution, with their true MI when it is known.

Formats (by suffix):

* ``.npz``: arrays ``x`` [n] or [n, d_x] and ``y`` [n] or [n, d_y], optional scalar ``true_mi`` (nats);
* ``.pt``: a dict with the same keys (tensors, arrays or numbers), read with ``torch.load(weights_only=True)``;
* ``.csv``: a header row; ``dataset.x`` and ``dataset.y`` list the columns of x and of y.

Every problem is a one-line ``ValueError`` naming the file, the array and what would be valid, raised
before any training: a path that is not a readable regular file, missing keys or columns, CSV column keys
on an array file, mismatched lengths, NaN or infinite values, fewer than two samples, wrong shapes,
non-numeric values, a negative true MI; unstandardised values beyond float32's range.

Values are read in float64 and standardised there (:func:`standardize`), so that any finite scale gives
the same standardised float32 inputs: a run never sees a column that overflowed or underflowed float32.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .dataset import Dataset, register_dataset

FORMATS = (".npz", ".pt", ".csv")


@dataclass
class Samples:
    x: np.ndarray  # [n, d_x] float64, finite
    y: np.ndarray  # [n, d_y] float64, finite
    true_mi: float | None = None
    name: str = "samples"  # the file's name, for messages

    @property
    def n(self) -> int:
        return self.x.shape[0]


def load_samples(path: str | Path, x_cols: Sequence[str] | None = None, y_cols: Sequence[str] | None = None,
                 true_mi: float | None = None) -> Samples:
    """Read and check a sample file; ``true_mi`` (if given) overrides the file's."""
    path = Path(path)
    name = path.name
    check_file(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"dataset.path={path} has an unknown format {path.suffix or '(no suffix)'!r} "
                         f"(valid: {', '.join(FORMATS)})")
    if path.suffix == ".csv":
        arrays = _read_csv(path, x_cols, y_cols)
    else:
        for key, cols in (("x", x_cols), ("y", y_cols)):
            if cols is not None:
                raise ValueError(f"dataset.{key}={list(cols)} names CSV columns, but {name} is a {path.suffix} file "
                                 f"whose arrays 'x' and 'y' are read (valid: dataset.{key}=null)")
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
    return Samples(x, y, _true_mi(mi, name), name)


def check_file(path: Path) -> None:
    """Raise one line unless ``path`` is an existing regular file: say what it is instead."""
    import errno
    import stat

    valid = f"(valid: an existing {', '.join(FORMATS)} file)"
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"dataset.path={path} is a symlink loop {valid}") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ValueError(f"dataset.path={path} does not exist {valid}") from None
        raise ValueError(f"dataset.path={path} cannot be read: {e.strerror} {valid}") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"dataset.path={path} is a directory {valid}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ValueError(f"dataset.path={path} is not a regular file (it is {kind}) {valid}")


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
    return a.astype(np.float64)


def _true_mi(v: Any, name: str) -> float | None:
    if v is None:
        return None
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "biuf" or not math.isfinite(float(a)) or float(a) < 0:
        raise ValueError(f"{name}: true_mi={v!r} is invalid (valid: one finite number >= 0, in nats)")
    return float(a)


def standardize(x: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1 (population sd; a constant column is only centred, to 0),
    over all samples before the split, as the Beyond-Normal estimators do; in float32.

    Each column is first scaled by a power of two to a largest magnitude in [0.5, 1), in float64: exact, so
    any finite scale (1e-300 .. 1e300) is standardised like scale 1, where float32 arithmetic on the raw values
    overflowed (sd inf) or underflowed (sd 0) and the run saw constant columns. The float32 computation of
    earlier versions then runs on the scaled column (the same numbers as before for every column float32
    could already hold); a column where it strays from the float64 result by more than ``STANDARDIZE_TOL``
    (its digits lost under a large offset, e.g. 1e8 + noise) takes the float64 result."""
    x = np.asarray(x, dtype=np.float64)
    _, exp = np.frexp(np.abs(x).max(axis=0, initial=0.0))
    u = np.ldexp(x, -exp)
    sd64 = u.std(axis=0)
    z64 = (u - u.mean(axis=0)) / np.where(sd64 > 0, sd64, 1.0)
    v = u.astype(np.float32)
    sd = v.std(axis=0)
    z = ((v - v.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)
    lost = np.abs(z - z64).max(axis=0, initial=0.0) > STANDARDIZE_TOL
    z[:, lost] = z64[:, lost].astype(np.float32)
    return z


STANDARDIZE_TOL = 1e-4  # float32's error on a standardised value is ~1e-7 x (|mean| / sd + |z|)
F32 = np.finfo(np.float32)


def inputs(s: Samples, standardized: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The float32 x and y a run trains on (:func:`standardize`\ d, or the values as they are), and notes
    (constant columns). Raises one line for values that float32 cannot hold without standardising."""
    out, notes = [], []
    for key, a in (("x", s.x), ("y", s.y)):
        peak = np.abs(a).max(axis=0, initial=0.0)
        if standardized:
            const = [j for j in range(a.shape[1]) if a.shape[0] and (a[:, j] == a[0, j]).all()]
            if const:
                cols = ", ".join(map(str, const[:5])) + (", ..." if len(const) > 5 else "")
                notes.append(f"{s.name}: {key} column(s) {cols} of {a.shape[1]} constant: standardised to 0 "
                             f"(a constant carries no information)")
            out.append(standardize(a))
            continue
        j = int(peak.argmax()) if peak.size else 0
        if peak.size and peak[j] > F32.max:
            raise ValueError(f"{s.name}: {key} column {j} reaches {peak[j]:.3g}, beyond float32's range (valid with "
                             f"dataset.standardize=false: magnitudes <= {F32.max:.3g}; or dataset.standardize=true)")
        tiny = [j for j in range(peak.size) if 0 < peak[j] < F32.tiny]
        if tiny:
            raise ValueError(f"{s.name}: {key} column {tiny[0]} is at most {peak[tiny[0]]:.3g} in magnitude, below "
                             f"float32's smallest normal {F32.tiny:.3g}, so it would lose its digits (valid with "
                             f"dataset.standardize=false: magnitudes >= {F32.tiny:.3g}; or dataset.standardize=true)")
        out.append(a.astype(np.float32))
    return out[0], out[1], notes


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



@register_dataset("samples")
class SampleFile(Dataset):
    """Your own paired samples in a file (.npz / .pt arrays x, y; .csv columns dataset.x, dataset.y), with the
    true MI where the file or dataset.true_mi gives it."""

    provides = ("pairs",)

    @classmethod
    def source(cls, cfg: Any) -> tuple[Path, str]:
        """The sample file and its label (raises ValueError when dataset.path is not set)."""
        path = cfg.dataset.get("path")
        if not path:
            raise ValueError("dataset.path is not set (valid: a sample file, e.g. dataset.path=pairs.npz with arrays x, y)")
        return Path(str(path)).expanduser(), Path(str(path)).name

    @classmethod
    def described(cls, cfg: Any) -> str:
        return f"dataset.path={cfg.dataset.path}"

__all__ = ["FORMATS", "SampleFile", "Samples", "check_file", "inputs", "load_samples", "save_samples", "standardize", "split",
           "split_sizes"]
