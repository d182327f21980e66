"""STL-10 (Coates et al. 2011) at 32 x 32 for the layer-pair DIM benchmark (eta-MINE Table 2), without torchvision.

Files: the official binary archive ``stl10_binary.tar.gz`` (URL and md5 below; the md5 is the
``tgz_md5`` torchvision's ``STL10`` class records) extracted under ``<root>/stl10_binary``:
``train_X.bin`` / ``test_X.bin`` hold uint8 images of 3 x 96 x 96 bytes each, channel by channel and,
within a channel, **column-major** (byte ``c*9216 + col*96 + row`` is pixel (row, col) of channel c);
``train_y.bin`` / ``test_y.bin`` one uint8 label 1..10 per image (stored 1-based, read 0-based).
The labelled splits only (5,000 train / 8,000 test); the 100,000 ``unlabeled_X.bin`` images are not read.

Resampling (eta-MINE: "STL10 images were scaled down to match CIFAR10 resolution"): 96 -> 32 is an
exact factor 3, so each output pixel is the **average of its 3 x 3 input block** (area resampling,
what Pillow's ``Image.reduce(3)`` and ``resize(..., BOX)`` compute), rounded to the nearest
integer (a mean of 9 integers is never a tie), kept as uint8. No cropping, no anti-alias beyond the box.

Normalisation constants: the per-channel mean / std of the loaded 32 x 32 train split (computed at load,
so generated data gets its own). A generated copy (:func:`write_fake_stl10`) carries a ``GENERATED``
marker file and is reported as such (:func:`is_generated`).

    python -m mibench.data.stl10 <root> [--train-per-class 20 --test-per-class 10]   # writes generated files
"""
from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..checks import ConfigError
from ..precision import full
from .cifar import CifarBatches, CifarData, md5sum
from .dataset import ImageFiles, register_dataset

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
MD5 = "91f7769df0f17e558f3565bffb0c7dfb"  # of stl10_binary.tar.gz (torchvision.datasets.STL10.tgz_md5)
FOLDER = "stl10_binary"
FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}
NUM_CLASSES = 10
SIDE = 96                       # stored images: 3 x 96 x 96
IMAGE_BYTES = 3 * SIDE * SIDE   # 27,648
SIZE = 32                       # scaled down to CIFAR's resolution
FACTOR = SIDE // SIZE           # 3: each 32 x 32 pixel is the mean of a 3 x 3 block
MARKER = "GENERATED"            # present only in a copy written by write_fake_stl10


class STL10DataError(ValueError):
    """Missing or invalid STL-10 files; the message is one line saying where and how to fix it."""


def data_dir(root: str | Path) -> Path:
    return Path(root).expanduser() / FOLDER


def missing_files(root: str | Path) -> list[str]:
    d = data_dir(root)
    return [f for pair in FILES.values() for f in pair if not (d / f).is_file()]


def is_generated(root: str | Path) -> bool:
    """True for files written by :func:`write_fake_stl10` (never for the official archive)."""
    return (data_dir(root) / MARKER).is_file()


def how_to_get(root: str | Path) -> str:
    return (f"run with dataset.download=true, or download {URL} and extract it into {Path(root).expanduser()} "
            f"(or point dataset.root / $MIBENCH_DATA at a directory holding {FOLDER}/)")


def check_available(root: str | Path, download: bool) -> None:
    """Raise :class:`STL10DataError` (one line) unless the files are there or will be downloaded."""
    r = Path(root).expanduser()
    if r.exists() and not r.is_dir():
        raise STL10DataError(f"dataset.root={r} is not a directory (valid: a directory that holds or will hold {FOLDER}/)")
    missing = missing_files(r)
    if missing and not download:
        raise STL10DataError(f"stl10 not found: looked for {data_dir(r)}/{{{','.join(missing)}}}; " + how_to_get(r))


def extract_archive(archive: Path, root: str | Path, md5: str = MD5) -> Path:
    """Check ``archive``'s md5 against ``md5`` (default: the official one), then extract ``stl10_binary/``
    into ``root`` (replacing an older copy). One-line :class:`STL10DataError` on a mismatch."""
    r = Path(root).expanduser()
    r.mkdir(parents=True, exist_ok=True)
    got = md5sum(archive)
    if got != md5:
        raise STL10DataError(f"{archive.name} has md5 {got}, expected {md5}; delete it and retry, or {how_to_get(r)}")
    with tempfile.TemporaryDirectory(dir=r) as tmp:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if not (Path(tmp) / FOLDER).is_dir():
            raise STL10DataError(f"{archive.name} holds no {FOLDER}/ folder (valid: the official {URL})")
        dest = r / FOLDER
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(Path(tmp) / FOLDER), dest)
    return r / FOLDER


def download(root: str | Path, url: str = URL, md5: str = MD5, timeout: float = 60.0) -> Path:
    """Download the archive (2.6 GB), check its md5, extract it under ``root``. One-line error on failure."""
    r = Path(root).expanduser()
    try:
        r.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=r) as tmp:
            archive = Path(tmp) / Path(url).name
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(archive, "wb") as f:
                shutil.copyfileobj(resp, f)
            return extract_archive(archive, r, md5)
    except STL10DataError:
        raise
    except (OSError, tarfile.TarError, ValueError) as e:
        raise STL10DataError(f"stl10: download of {url} failed ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else 'no detail'}); {how_to_get(r)}") from None


# ---------------------------------------------------------------------------------------------
# the binary format


def decode_images(raw: np.ndarray) -> np.ndarray:
    """Bytes of ``*_X.bin`` -> uint8 [N, 3, 96, 96] (row, col) images: each channel is stored column-major."""
    return raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2)


def downscale(x: np.ndarray) -> np.ndarray:
    """uint8 [N, 3, 96, 96] -> uint8 [N, 3, 32, 32]: the mean of each 3 x 3 block, rounded to nearest.

    Integer arithmetic: (sum + 4) // 9 rounds sum / 9 to nearest (a fraction k/9 is never 1/2)."""
    n, c = x.shape[:2]
    s = x.reshape(n, c, SIZE, FACTOR, SIZE, FACTOR).sum(axis=(3, 5), dtype=np.int32)
    return ((s + 4) // 9).astype(np.uint8)


def read_split(root: str | Path, split: str, chunk: int = 1000) -> tuple[Tensor, Tensor]:
    """(uint8 [N, 3, 32, 32] images, int64 labels 0..9) of ``split`` (train | test), validated."""
    d = data_dir(root)
    xf, yf = (d / f for f in FILES[split])
    for f in (xf, yf):
        if not f.is_file():
            raise STL10DataError(f"stl10 not found: looked for {f}; {how_to_get(root)}")
    size = xf.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise STL10DataError(f"{xf} has {size} bytes, not a multiple of {IMAGE_BYTES} (3x96x96 uint8 images); "
                             "replace it with the file from the official archive")
    n = size // IMAGE_BYTES
    y = np.fromfile(yf, dtype=np.uint8)
    if y.size != n:
        raise STL10DataError(f"{yf}: {y.size} labels for {n} images in {xf.name}")
    if y.min() < 1 or y.max() > NUM_CLASSES:
        raise STL10DataError(f"{yf}: labels outside 1..{NUM_CLASSES} (STL-10 stores them 1-based)")
    raw = np.memmap(xf, dtype=np.uint8, mode="r")
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for i in range(0, n, chunk):  # 96 x 96 decoded a chunk at a time: the 32 x 32 copy is all that stays
        j = min(n, i + chunk)
        out[i:j] = downscale(decode_images(np.asarray(raw[i * IMAGE_BYTES: j * IMAGE_BYTES])))
    return torch.from_numpy(out), torch.from_numpy(y.astype(np.int64) - 1)


def load_stl10(root: str | Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(train_x, train_y, test_x, test_y) at 32 x 32, as :func:`mibench.data.cifar.load_cifar` returns CIFAR."""
    missing = missing_files(root)
    if missing:
        raise STL10DataError(f"stl10 not found: looked for {data_dir(root)}/{{{','.join(missing)}}}; {how_to_get(root)}")
    return (*read_split(root, "train"), *read_split(root, "test"))


class STL10Data(CifarData):
    """STL-10 at 32 x 32 behind :class:`~mibench.data.cifar.CifarData`'s interface (batches, augmentation,
    ``normalise``, ``train_x`` ...): only where the arrays come from and their statistics differ."""

    def __init__(self, root: str | Path, batch_size: int, seed: int = 0, download: bool = False,
                 augment: bool = True, crop_pad: int = 4, flip: bool = True, num_workers: int = 0):
        # CifarData's batching / augmentation state; name, spec, mean and std are STL-10's (set below / in setup)
        super().__init__("cifar10", root, batch_size, seed, download, augment, crop_pad, flip, num_workers=num_workers)
        self.name, self.spec, self.num_classes = "stl10", None, NUM_CLASSES
        self.generated = False

    def prepare_data(self) -> None:
        if missing_files(self.root):
            if not self.download:
                check_available(self.root, False)
            download(self.root)

    def setup(self) -> None:
        """Load, downscale and validate the arrays (or download them): raises STL10DataError with one line."""
        if self.train_x is None:
            self.prepare_data()
            self.train_x, self.train_y, self.test_x, self.test_y = load_stl10(self.root)
            self.generated = is_generated(self.root)
            x = full(self.train_x).div_(255.0)
            self.mean, self.std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)
            self.train_batches = CifarBatches(self.train_x, self.train_y, self.batch_size, self.seed)


@register_dataset("stl10")
class STL10(ImageFiles):
    """STL-10 (Coates et al. 2011) at 32 x 32: 5,000 + 8,000 labelled images of 10 classes."""

    provides = ("images32",)

    @classmethod
    def check_files(cls, root: str | Path, download: Any) -> None:
        try:
            check_available(root, bool(download))
        except STL10DataError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def loader(cls, root: str | Path, batch_size: int, seed: int, download: bool, augment: bool, crop_pad: int,
               flip: bool, num_workers: int = 0) -> STL10Data:
        return STL10Data(root, batch_size, seed=seed, download=download, augment=augment, crop_pad=crop_pad,
                         flip=flip, num_workers=num_workers)


# ---------------------------------------------------------------------------------------------
# generated files (tests, demos): the real on-disk format, learnable content


def encode_images(x: np.ndarray) -> bytes:
    """uint8 [N, 3, 96, 96] (row, col) -> the bytes of ``*_X.bin`` (column-major per channel)."""
    return np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes()


def write_fake_stl10(root: str | Path, train_per_class: int = 20, test_per_class: int = 10, seed: int = 0,
                     noise: float = 120.0, strength: float = 60.0) -> Path:
    """GENERATED data in STL-10's binary layout under ``<root>/stl10_binary`` (with a ``GENERATED`` marker).

    Each class has a fixed random colour and a low-frequency pattern at 96 x 96; an image is
    ``128 + signal_c + noise``, clipped to uint8 (pixel-wise noise of std ``noise``, about ``noise / 3``
    after the 3 x 3 downscale: as noisy at 32 x 32 as :mod:`mibench.data.fake_cifar`'s images). Labels are written 1-based, in shuffled order, like the official files.
    """
    rng = np.random.default_rng(seed)
    colour = rng.uniform(-1.0, 1.0, size=(NUM_CLASSES, 3, 1, 1))
    yy, xx = np.meshgrid(np.linspace(0, 2 * np.pi, SIDE), np.linspace(0, 2 * np.pi, SIDE), indexing="ij")
    freq = rng.integers(1, 3, size=(NUM_CLASSES, 2))
    phase = rng.uniform(0, 2 * np.pi, size=NUM_CLASSES)
    pattern = np.sin(freq[:, :1, None] * yy + freq[:, 1:, None] * xx + phase[:, None, None])[:, None]
    templates = strength * (colour + 0.5 * pattern)  # [C, 3, 96, 96]
    d = data_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    for split, per in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(NUM_CLASSES), per))
        x = 128.0 + templates[labels] + rng.normal(0.0, noise, size=(labels.size, 3, SIDE, SIDE))
        xf, yf = FILES[split]
        (d / xf).write_bytes(encode_images(np.clip(np.rint(x), 0, 255).astype(np.uint8)))
        (d / yf).write_bytes((labels + 1).astype(np.uint8).tobytes())
    (d / "class_names.txt").write_text("".join(f"class_{i}\n" for i in range(NUM_CLASSES)))
    (d / MARKER).write_text("generated by mibench.data.stl10.write_fake_stl10: NOT the STL-10 dataset\n")
    return d


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="write GENERATED files in the STL-10 binary format")
    p.add_argument("root")
    p.add_argument("--train-per-class", type=int, default=20)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(write_fake_stl10(a.root, a.train_per_class, a.test_per_class, a.seed))


if __name__ == "__main__":
    main()
