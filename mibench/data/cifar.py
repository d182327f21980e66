"""CIFAR-10 / CIFAR-100 for the SLB and CLB benchmarks (Choi & Lee §5.1), without torchvision.

Files: the standard "python version" layout (pickled dicts with ``data`` N x 3072 uint8,
channel-major, and ``labels`` / ``fine_labels``) under ``<root>/cifar-10-batches-py`` or
``<root>/cifar-100-python``. Arrays are validated (shapes, dtype, label range, balanced label
counts) rather than md5-checked, so a re-pickled copy (e.g. without ``filenames``) loads; the
official md5 is checked only on a downloaded archive. Files written by :mod:`mibench.data.fake_cifar` carry a
``GENERATED`` marker and are reported as such (:func:`is_generated`, :func:`generated_note`).

Images live in memory as one uint8 tensor [N, 3, 32, 32]. The loader yields uint8 batches
(4x less to move than float); :func:`augment` turns them into normalised float batches on the
training device (random crop with zero padding, horizontal flip), all as batched tensor ops.
"""
from __future__ import annotations

import hashlib
import math
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from ..checks import ConfigError
from ..precision import full
from .dataset import ImageFiles, register_dataset


@dataclass(frozen=True)
class CifarSpec:
    name: str
    num_classes: int
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    url: str
    md5: str  # of the official archive (same values as torchvision.datasets.CIFAR10/100)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    n_train: int = 50_000


SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec("cifar10", 10, "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                         "test_batch", "labels", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                         "c58f30108f718f92721af3b95e74349a", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": CifarSpec("cifar100", 100, "cifar-100-python", ("train",), "test", "fine_labels",
                          "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                          "eb9058c3a382ffc7106e4002c42a8d85", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


class CifarDataError(ValueError):
    """Missing or invalid CIFAR files; the message is one line saying where and how to fix it."""


def data_dir(root: str | Path, name: str) -> Path:
    return Path(root).expanduser() / SPECS[name].folder


MARKER = "GENERATED"  # present only in a copy written by mibench.data.fake_cifar


def is_generated(root: str | Path, name: str) -> bool:
    """True for files written by :func:`mibench.data.fake_cifar.write_fake_cifar` (never for the official archive)."""
    return (data_dir(root, name) / MARKER).is_file()


def generated_note(datas: Any) -> str | None:
    """In words, which of ``datas`` (CifarData / STL10Data, loaded) are GENERATED files rather than the datasets
    (``GENERATED cifar10, stl10 files, not the datasets``); None when none is (mibench.engine.Task.generated_data)."""
    names = list(dict.fromkeys(d.name for d in datas if getattr(d, "generated", False)))
    return f"GENERATED {', '.join(names)} files, not the real dataset{'s' if len(names) > 1 else ''}" if names else None


def missing_files(root: str | Path, name: str) -> list[str]:
    """The files of ``name`` absent under ``root`` (cheap: existence only)."""
    spec, d = SPECS[name], data_dir(root, name)
    return [f for f in (*spec.train_files, spec.test_file) if not (d / f).is_file()]


def how_to_get(root: str | Path, name: str) -> str:
    spec = SPECS[name]
    return (f"run with dataset.download=true, or download {spec.url} and extract it into {Path(root).expanduser()} "
            f"(or point dataset.root / $MIBENCH_DATA at a directory holding {spec.folder}/)")


def check_available(root: str | Path, name: str, download: bool) -> None:
    """Raise :class:`CifarDataError` (one line) unless the files are there or will be downloaded."""
    r = Path(root).expanduser()
    if r.exists() and not r.is_dir():
        raise CifarDataError(f"dataset.root={r} is not a directory (valid: a directory that holds or will hold "
                             f"{SPECS[name].folder}/)")
    missing = missing_files(r, name)
    if missing and not download:
        raise CifarDataError(f"{name} not found: looked for {data_dir(r, name)}/{{{','.join(missing)}}}; "
                             + how_to_get(r, name))


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def download(root: str | Path, name: str, timeout: float = 60.0) -> Path:
    """Download the official archive, check its md5, extract it under ``root``. One-line error on failure."""
    spec, r = SPECS[name], Path(root).expanduser()
    try:
        r.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=r) as tmp:
            archive = Path(tmp) / Path(spec.url).name
            with urllib.request.urlopen(spec.url, timeout=timeout) as resp, open(archive, "wb") as f:
                shutil.copyfileobj(resp, f)
            got = md5sum(archive)
            if got != spec.md5:
                raise CifarDataError(f"downloaded {spec.url} has md5 {got}, expected {spec.md5}; "
                                     f"delete it and retry, or {how_to_get(r, name)}")
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
            dest = r / spec.folder
            if dest.exists():
                shutil.rmtree(dest)
            shutil.move(str(Path(tmp) / spec.folder), dest)
    except CifarDataError:
        raise
    except (OSError, tarfile.TarError, ValueError) as e:
        raise CifarDataError(f"{name}: download of {spec.url} failed ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'no detail'}); {how_to_get(r, name)}") from None
    return r / spec.folder


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated / not a pickle
        raise CifarDataError(f"{path} is not a readable CIFAR pickle ({type(e).__name__}); "
                             "replace it with the file from the official archive") from None
    if not isinstance(d, dict) or "data" not in d or label_key not in d:
        raise CifarDataError(f"{path} lacks the keys 'data' and {label_key!r} of the CIFAR python format")
    return np.asarray(d["data"]), np.asarray(d[label_key])


def _validate(x: np.ndarray, y: np.ndarray, spec: CifarSpec, where: str) -> None:
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise CifarDataError(f"{where}: data has dtype {x.dtype} and shape {x.shape} (valid: uint8, N x 3072)")
    if y.shape != (x.shape[0],):
        raise CifarDataError(f"{where}: {y.shape[0] if y.ndim else 0} labels for {x.shape[0]} images")
    if y.size == 0 or y.min() < 0 or y.max() >= spec.num_classes:
        raise CifarDataError(f"{where}: labels outside 0..{spec.num_classes - 1}")
    counts = np.bincount(y, minlength=spec.num_classes)
    if counts.min() != counts.max():
        raise CifarDataError(f"{where}: label counts range {counts.min()}..{counts.max()} "
                             f"(valid: all {spec.num_classes} classes equally often, as in CIFAR)")


def load_cifar(root: str | Path, name: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train_x, train_y, test_x, test_y): uint8 [N, 3, 32, 32] images and int64 labels, validated."""
    spec, d = SPECS[name], data_dir(root, name)
    missing = missing_files(root, name)
    if missing:
        raise CifarDataError(f"{name} not found: looked for {d}/{{{','.join(missing)}}}; {how_to_get(root, name)}")
    out = []
    for files, split in ((spec.train_files, "train"), ((spec.test_file,), "test")):
        parts = [_read_batch(d / f, spec.label_key) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        _validate(x, y, spec, f"{d} ({split})")
        out += [torch.from_numpy(x.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y)]
    return out[0], out[1], out[2], out[3]


# ---------------------------------------------------------------------------------------------
# batches


def random_batches(n: int, batch_size: int, gen: torch.Generator, drop_last: bool = True) -> Tensor:
    """One epoch of shuffled indices as [n_batches, batch_size] (last partial batch dropped)."""
    perm = torch.randperm(n, generator=gen)
    nb = n // batch_size if drop_last else math.ceil(n / batch_size)
    return perm[: nb * batch_size].view(nb, batch_size)


def balanced_batches(labels: Tensor, batch_size: int, per_class: int, gen: torch.Generator) -> Tensor:
    """One epoch of batches made of ``batch_size // per_class`` groups of ``per_class`` same-label samples.

    Every batch therefore holds at least one positive pair (CLB's joint). Each class's samples are
    shuffled and cut into groups; the groups of all classes are shuffled and dealt into batches,
    so every sample appears at most once per epoch. Vectorised: no loop over samples.
    """
    if per_class < 2 or batch_size % per_class:
        raise ValueError(f"per_class={per_class} must be >= 2 and divide batch_size={batch_size}")
    n_cls = int(labels.max()) + 1
    order = torch.randperm(labels.numel(), generator=gen)
    order = order[torch.argsort(labels[order], stable=True)]  # grouped by class, shuffled within
    counts = torch.bincount(labels, minlength=n_cls)
    starts = torch.cumsum(counts, 0) - counts
    g_per_class = counts // per_class
    cls = torch.repeat_interleave(torch.arange(n_cls), g_per_class)  # class of each group
    first = torch.cumsum(g_per_class, 0) - g_per_class
    k = torch.arange(cls.numel()) - first[cls]  # group number within its class
    groups = order[(starts[cls] + k * per_class).unsqueeze(1) + torch.arange(per_class)]  # [G, per_class]
    groups = groups[torch.randperm(groups.shape[0], generator=gen)]
    m = batch_size // per_class
    nb = groups.shape[0] // m
    return groups[: nb * m].reshape(nb, batch_size)


def has_positive(batch_labels: Tensor) -> Tensor:
    """[n_batches] bool: does each row hold two equal labels? (sort, compare neighbours)."""
    s = batch_labels.sort(dim=1).values
    return (s[:, 1:] == s[:, :-1]).any(dim=1)


class CifarBatches(IterableDataset):
    """Yields (uint8 images [B, 3, 32, 32], labels [B]) for one epoch per ``iter``.

    sampler: ``random`` (shuffled, last partial batch dropped) or ``balanced`` (see
    :func:`balanced_batches`). ``require_positive`` drops batches without a same-label pair
    (CLB, as in the authors' code; counted in ``skipped``). Under DDP each rank takes every
    world_size-th batch of the same (seeded) epoch order, and DataLoader workers split a rank's share.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed: int, sampler: str = "random",
                 per_class: int = 2, require_positive: bool = False, shuffle: bool = True):
        self.x, self.y, self.batch_size, self.seed = x, y, int(batch_size), int(seed)
        self.sampler, self.per_class, self.require_positive, self.shuffle = sampler, per_class, require_positive, shuffle
        self.epoch = 0
        self.skipped = 0

    def epoch_batches(self, epoch: int) -> Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if not self.shuffle:
            nb = self.x.shape[0] // self.batch_size
            return torch.arange(nb * self.batch_size).view(nb, self.batch_size)
        if self.sampler == "balanced":
            return balanced_batches(self.y, self.batch_size, self.per_class, gen)
        return random_batches(self.x.shape[0], self.batch_size, gen)

    def __len__(self) -> int:
        return int(self.epoch_batches(0).shape[0]) if self.sampler == "balanced" else self.x.shape[0] // self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self.epoch_batches(self.epoch)
        self.epoch += 1
        if self.require_positive:
            keep = has_positive(self.y[idx])
            self.skipped += int((~keep).sum())
            idx = idx[keep]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            idx = idx[torch.distributed.get_rank():: torch.distributed.get_world_size()]
        info = torch.utils.data.get_worker_info()
        if info is not None:  # DataLoader workers split the epoch's batches (``skipped`` then stays per worker)
            idx = idx[info.id:: info.num_workers]
        for b in idx:
            yield self.x[b], self.y[b]


def augment(x: Tensor, mean: Tensor, std: Tensor, crop_pad: int = 0, flip: bool = False,
            gen: torch.Generator | None = None) -> Tensor:
    """uint8 [B, 3, H, W] -> normalised float, with random crop (zero padding) and horizontal flip.

    Batched on x's device: one gather for the crops, one ``where`` for the flips.
    """
    b, _, h, w = x.shape
    out = full(x).div_(255.0)
    if crop_pad > 0:
        p = crop_pad
        padded = torch.nn.functional.pad(out, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, b), device=x.device, generator=gen)
        rows = (off[0].unsqueeze(1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (off[1].unsqueeze(1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        ci = torch.arange(3, device=x.device).view(1, 3, 1, 1)
        out = padded[bi, ci, rows, cols]
    if flip:
        mask = torch.rand(b, device=x.device, generator=gen) < 0.5
        out = torch.where(mask.view(b, 1, 1, 1), out.flip(3), out)
    return (out - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


class CifarData:
    """CIFAR-10/100 from ``root``: uint8 batches from memory, augmented on the device by :meth:`normalise`.

    ``epoch`` and ``rank`` (set by the task) seed the augmentation, so an epoch's crops and flips are
    the same whether or not the run was resumed before it.
    """

    def __init__(self, name: str, root: str | Path, batch_size: int, seed: int = 0, download: bool = False,
                 augment: bool = True, crop_pad: int = 4, flip: bool = True, sampler: str = "random",
                 per_class: int = 2, require_positive: bool = False, num_workers: int = 0):
        if name not in SPECS:
            raise CifarDataError(f"unknown CIFAR dataset {name!r} (valid: {', '.join(SPECS)})")
        self.spec = SPECS[name]
        self.name, self.root, self.batch_size, self.seed = name, Path(root).expanduser(), int(batch_size), int(seed)
        self.download, self.do_augment, self.crop_pad, self.flip = download, augment, crop_pad, flip
        self.sampler, self.per_class, self.require_positive = sampler, per_class, require_positive
        self.num_workers = num_workers
        self.num_classes = self.spec.num_classes
        self.mean = torch.tensor(self.spec.mean)
        self.std = torch.tensor(self.spec.std)
        self.train_x = self.train_y = self.test_x = self.test_y = None
        self.generated = False  # files written by mibench.data.fake_cifar (set when loaded)
        self.train_batches: CifarBatches | None = None
        self.epoch, self.rank = 0, 0
        self._aug_gen: torch.Generator | None = None
        self._aug_key: tuple | None = None
        self._loader: DataLoader | None = None

    def prepare_data(self) -> None:
        if missing_files(self.root, self.name):
            if not self.download:
                check_available(self.root, self.name, False)
            download(self.root, self.name)

    def setup(self) -> None:
        """Load and validate the arrays (or download them): raises CifarDataError with one line."""
        if self.train_x is None:
            self.prepare_data()
            self.train_x, self.train_y, self.test_x, self.test_y = load_cifar(self.root, self.name)
            self.generated = is_generated(self.root, self.name)
            self.train_batches = CifarBatches(self.train_x, self.train_y, self.batch_size, self.seed, self.sampler,
                                              self.per_class, self.require_positive)

    def epoch_loader(self, epoch: int) -> DataLoader:
        """The training batches of ``epoch`` (its order depends only on (seed, epoch))."""
        self.epoch = self.train_batches.epoch = epoch
        if self._loader is None:
            self._loader = DataLoader(self.train_batches, batch_size=None, num_workers=self.num_workers,
                                      persistent_workers=self.num_workers > 0)
        return self._loader

    def normalise(self, x: Tensor, train: bool) -> Tensor:
        """uint8 batch on its device -> the network's input (augmented when ``train`` and enabled)."""
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        if train and self.do_augment:
            return augment(x, mean, std, self.crop_pad, self.flip, self._augment_generator(x.device))
        return augment(x, mean, std)

    def augment_state(self) -> dict[str, Any] | None:
        """The crop/flip generator's position (a checkpoint inside an epoch needs it), or None before any."""
        if self._aug_gen is None:
            return None
        return {"key": list(self._aug_key), "state": self._aug_gen.get_state()}

    def load_augment_state(self, st: dict[str, Any] | None) -> None:
        if st is None:
            return
        epoch, rank, device = st["key"]
        self._aug_gen = torch.Generator(device=device)
        self._aug_gen.set_state(st["state"].cpu() if hasattr(st["state"], "cpu") else st["state"])
        self._aug_key = (epoch, rank, device)

    def _augment_generator(self, device: torch.device) -> torch.Generator:
        """Crops and flips draw from a generator seeded by (seed, epoch, rank), not the global RNG."""
        key = (self.epoch, self.rank, str(device))
        if self._aug_key != key:
            self._aug_gen = torch.Generator(device=device).manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 1009 + self.rank)
            self._aug_key = key
        return self._aug_gen


class _Cifar(ImageFiles):
    """CIFAR-10/100 (Krizhevsky 2009) from ``dataset.root``: :data:`SPECS` gives their sizes and statistics."""

    provides = ("cifar", "images32")

    @classmethod
    def check_files(cls, root: str | Path, download: Any) -> None:
        try:
            check_available(root, cls.name, download)
        except CifarDataError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def loader(cls, root: str | Path, batch_size: int, seed: int, download: bool, augment: bool, crop_pad: int,
               flip: bool, num_workers: int = 0) -> "CifarData":
        return CifarData(cls.name, root, batch_size, seed=seed, download=download, augment=augment,
                         crop_pad=crop_pad, flip=flip, num_workers=num_workers)


@register_dataset("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10: 50,000 + 10,000 images of 10 classes."""


@register_dataset("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100: 50,000 + 10,000 images of 100 classes."""
