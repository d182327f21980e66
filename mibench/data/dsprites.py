"""dSprites (Matthey et al. 2017) for ``benchmark=dsprites``: the official file, and a GENERATED stand-in.

Factors (the official file's ``latents_classes`` columns 1-5; column 0, colour, is always 0):

==========  =====  ===========================================
factor      sizes  values
==========  =====  ===========================================
shape       3      square, ellipse, heart
scale       6      linearly spaced in [0.5, 1]
orientation 40     radians (official: linspace(0, 2 pi, 40), so the last equals the first (the metadata
                   printed in the repository's dsprites_reloading_example.ipynb);
                   generated: 2 pi k / 40, k = 0..39, i.e. [0, 2 pi))
posX, posY  32     linearly spaced in [0, 1]
==========  =====  ===========================================

**The official file** (``dataset=dsprites``): ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` from
https://github.com/deepmind/dsprites-dataset, read from ``<dataset.root>/dsprites/``; ``imgs`` is
[737280, 64, 64] uint8 with values 0 / 1 and ``latents_classes`` [737280, 6] int64. The arrays' headers
are checked before any training (one-line errors naming the file and what is wrong). The archive is
compressed, so ``imgs`` (3.0 GB unpacked) cannot be memory-mapped inside it: on first use it is streamed,
a chunk at a time, into an uncompressed ``imgs.npy`` beside the file (written atomically) and memory-mapped
from there; batches are gathered by random indices. ``dataset.download=true`` fetches the file (urllib,
timeout, written to a temporary file and renamed only once its MD5 matches).

The MD5, ``7da33b31b13a06f4b04a70402ce90c2e``, is not published by DeepMind; it is the value that public
loaders of this exact file check against, e.g. ``pm25/Regression-Datasets`` (``regsets/vision/dsprites.py``)
and a loader that pins the URL to the repository's latest commit (``fa310c6``); it could not be recomputed
here (no internet). The official repository's git tree records the file as blob
``d98996d3f8ee1550e06b9d4ed78d0beb478910d5`` (git's SHA-1 of ``"blob <size>\\0" + content``), a second
check :func:`git_blob_sha1` can compute on a downloaded copy. (tensorflow_datasets' checksum for dSprites
is the sha256 of the *HDF5* version, a different file.)

**The GENERATED images** (``dataset=dsprites_generated``): :func:`render` draws dSprites-STYLE images over
the same factor grid, vectorised for a whole batch (implicit functions on the 64 x 64 grid of pixel centres,
no loop over images). They are NOT the official images: the shapes' exact outlines, sizes and the position
range are this module's choices (below), so numbers from them are labelled "generated" everywhere.

Geometry of the generated images: pixel (row r, column c) has centre (c + 0.5, r + 0.5); the sprite's
centre is (16.5 + 31 posX, 16.5 + 31 posY) (pixel centres, rows growing downwards); its size is
R = 10.5 scale pixels; a point's sprite coordinates are its offset from the centre rotated by -orientation
(counter-clockwise on screen), divided by R: square max(|u|, |v|) <= 1 (side 2R), ellipse u^2 + (2v)^2 <= 1
(2:1), heart (a^2 + b^2 - 1)^3 <= a^2 b^3 with a = 1.2 u, b = 0.12 - 1.2 v (tip down at orientation 0).
Every shape stays inside the image at every scale, orientation and position.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from ..checks import Bool, ConfigError
from ..precision import full
from ..results import publish
from .dataset import Dataset, register_dataset

FACTORS = ("shape", "scale", "orientation", "posX", "posY")
SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = 2 * math.pi * np.arange(40) / 40  # generated images: [0, 2 pi)
POSITIONS = np.linspace(0.0, 1.0, 32)
IMAGE = 64

FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
URL = f"https://github.com/deepmind/dsprites-dataset/raw/master/{FILENAME}"
MD5 = "7da33b31b13a06f4b04a70402ce90c2e"  # see the module docstring for where it comes from
GIT_BLOB = "d98996d3f8ee1550e06b9d4ed78d0beb478910d5"  # the official repository's tree entry for the file
N_OFFICIAL = 737280
FOLDER = "dsprites"
CACHE = "imgs.npy"
LATENT_SIZES = (1, *SIZES)  # latents_classes columns: colour, shape, scale, orientation, posX, posY


class DSpritesDataError(ValueError):
    """A missing or invalid dSprites file; the message is one line saying what is wrong and how to fix it."""


# ---------------------------------------------------------------------------------------------
# the official file


def data_path(root: str | Path) -> Path:
    return Path(root).expanduser() / FOLDER / FILENAME


def how_to_get(root: str | Path) -> str:
    return (f"run with dataset.download=true, or download {URL} into {Path(root).expanduser() / FOLDER}/ "
            f"(or point dataset.root / $MIBENCH_DATA at a directory holding {FOLDER}/{FILENAME}; "
            f"dataset=dsprites_generated needs no file)")


def check_available(root: str | Path, download: bool) -> None:
    """Raise :class:`DSpritesDataError` (one line) unless the file is there or will be downloaded."""
    r = Path(root).expanduser()
    if r.exists() and not r.is_dir():
        raise DSpritesDataError(f"dataset.root={r} is not a directory (valid: a directory that holds or will "
                                f"hold {FOLDER}/{FILENAME})")
    if not data_path(r).is_file() and not download:
        raise DSpritesDataError(f"dSprites not found: looked for {data_path(r)}; {how_to_get(r)}")


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """git's object id of the file's content (what ``git hash-object`` prints)."""
    h = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, md5: str = MD5) -> None:
    """Raise :class:`DSpritesDataError` unless ``path`` has the official MD5."""
    got = md5sum(path)
    if got != md5:
        raise DSpritesDataError(f"{path} has md5 {got}, expected {md5} (a truncated or different file); "
                                f"delete it and download it again")


def download(root: str | Path, url: str = URL, md5: str = MD5, timeout: float = 60.0) -> Path:
    """Fetch the file into ``<root>/dsprites/``: a temporary file, MD5-checked, then renamed (never half-written)."""
    dest = data_path(root)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{FILENAME}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as resp:
                shutil.copyfileobj(resp, f, 1 << 20)
            got = md5sum(tmp)
            if got != md5:
                raise DSpritesDataError(f"downloaded {url} has md5 {got}, expected {md5}; retry, or "
                                        f"{how_to_get(root)}")
            publish(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except DSpritesDataError:
        raise
    except (OSError, ValueError) as e:  # URLError is an OSError
        detail = str(e).splitlines()[0] if str(e) else "no detail"
        raise DSpritesDataError(f"dSprites: download of {url} failed ({type(e).__name__}: {detail}); "
                                f"{how_to_get(root)}") from None
    return dest


def _member_header(z: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype, bool]:
    """(shape, dtype, fortran_order) of array ``key`` of an .npz, read from its header only."""
    with z.open(f"{key}.npy") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as e:
            raise DSpritesDataError(f"{path}: array {key!r} has an unreadable header ({str(e).splitlines()[0]})") from None
    return tuple(shape), dtype, fortran


def inspect_file(path: str | Path) -> int:
    """Check the arrays' headers (cheap: no data is read): the number of images, or a one-line error."""
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise DSpritesDataError(f"{path} is not a readable .npz archive ({type(e).__name__}); "
                                f"replace it with the official file") from None
    with z:
        names = sorted(n[:-4] for n in z.namelist() if n.endswith(".npy"))
        missing = [k for k in ("imgs", "latents_classes") if k not in names]
        if missing:
            raise DSpritesDataError(f"{path} has no array {missing[0]!r} (found: {', '.join(names) or 'nothing'}; "
                                    f"valid: the official file's imgs and latents_classes)")
        shape, dtype, fortran = _member_header(z, "imgs", path)
        if len(shape) != 3 or shape[1:] != (IMAGE, IMAGE) or dtype != np.uint8 or fortran or shape[0] < 1:
            raise DSpritesDataError(f"{path}: imgs has shape {list(shape)} and dtype {dtype}"
                                    f"{' (Fortran order)' if fortran else ''} (valid: uint8 [N, 64, 64], C order)")
        lshape, ldtype, _ = _member_header(z, "latents_classes", path)
        if lshape != (shape[0], 6) or ldtype.kind not in "iu":
            raise DSpritesDataError(f"{path}: latents_classes has shape {list(lshape)} and dtype {ldtype} "
                                    f"(valid: integers [{shape[0]}, 6], one row per image)")
    return int(shape[0])


def _extract_imgs(path: Path, cache: Path, rows: int = 16384) -> None:
    """Stream ``imgs`` out of the (compressed) archive into an uncompressed .npy, a chunk of rows at a time."""
    with zipfile.ZipFile(path) as z:
        shape, dtype, _ = _member_header(z, "imgs", path)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".tmp")
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            with z.open("imgs.npy") as f:
                version = np.lib.format.read_magic(f)
                (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
                row = IMAGE * IMAGE
                for lo in range(0, shape[0], rows):
                    k = min(rows, shape[0] - lo)
                    buf = f.read(k * row)
                    if len(buf) != k * row:
                        raise DSpritesDataError(f"{path}: imgs is truncated (ends in row {lo + len(buf) // row} "
                                                f"of {shape[0]}); delete it and download it again")
                    out[lo: lo + k] = np.frombuffer(buf, dtype=np.uint8).reshape(k, IMAGE, IMAGE)
            out.flush()
            del out
            publish(tmp, cache)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


@dataclass
class DSpritesFile:
    """The official arrays: ``imgs`` [N, 64, 64] uint8 (memory-mapped), ``factors`` [N, 5] int64 (no colour)."""

    path: Path
    imgs: np.ndarray
    factors: np.ndarray
    binary: bool = True  # pixels 0 / 1 (the official file); False: 0..255, scaled to [0, 1]

    @property
    def n(self) -> int:
        return int(self.imgs.shape[0])

    def images(self, idx: Tensor) -> Tensor:
        """float [k, 1, 64, 64] in [0, 1] of the images at ``idx`` (a gather from the memory map)."""
        rows = idx.cpu().numpy()
        order = np.argsort(rows, kind="stable")  # read the map in file order, then put the rows back
        got = np.empty((len(rows), IMAGE, IMAGE), dtype=np.uint8)
        got[order] = self.imgs[rows[order]]
        x = full(torch.from_numpy(got)).unsqueeze(1)
        return x if self.binary else x / 255.0


def load(root: str | Path, download_missing: bool = False) -> DSpritesFile:
    """The official file under ``root`` (downloaded first when asked and missing), validated, ``imgs`` mapped."""
    path = data_path(root)
    if not path.is_file():
        if not download_missing:
            check_available(root, False)
        download(root)
    n = inspect_file(path)
    cache = path.parent / CACHE
    fresh = False
    if cache.is_file() and cache.stat().st_mtime >= path.stat().st_mtime:
        try:
            imgs = np.load(cache, mmap_mode="r")
            fresh = imgs.shape == (n, IMAGE, IMAGE) and imgs.dtype == np.uint8
        except (OSError, ValueError):
            fresh = False
    if not fresh:
        try:
            _extract_imgs(path, cache)
        except OSError as e:
            raise DSpritesDataError(f"cannot write the uncompressed copy {cache} ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0] if str(e) else 'no detail'}; it needs "
                                    f"{n * IMAGE * IMAGE / 1e9:.1f} GB beside the file)") from None
        imgs = np.load(cache, mmap_mode="r")
    with np.load(path) as z:  # (the pickled metadata is never touched: no allow_pickle)
        classes = np.asarray(z["latents_classes"]).astype(np.int64)
    bad = [(k, name) for k, name in enumerate(("colour", *FACTORS))
           if classes[:, k].min() < 0 or classes[:, k].max() >= LATENT_SIZES[k]]
    if bad:
        k, name = bad[0]
        raise DSpritesDataError(f"{path}: latents_classes column {k} ({name}) holds "
                                f"{classes[:, k].min()}..{classes[:, k].max()} (valid: 0..{LATENT_SIZES[k] - 1})")
    top = int(imgs[: min(n, 4096)].max())  # the official images are 0 / 1; a 0 / 255 copy is scaled to [0, 1]
    return DSpritesFile(path, imgs, np.ascontiguousarray(classes[:, 1:]), binary=top <= 1)


# ---------------------------------------------------------------------------------------------
# generated dSprites-style images


def sample_factors(n: int, gen: torch.Generator) -> Tensor:
    """[n, 5] int64 factor classes (shape, scale, orientation, posX, posY), each uniform over its grid."""
    return torch.stack([torch.randint(s, (n,), generator=gen) for s in SIZES], dim=1)


_TRIG = torch.tensor(np.stack([np.cos(ORIENTATIONS), np.sin(ORIENTATIONS)], 1))  # float64, rounded once


def render(factors: Tensor, size: int = IMAGE) -> Tensor:
    """GENERATED dSprites-style images of the factor classes ``factors`` [n, 5]: float [n, 1, 64, 64], 0 / 1.

    One batched evaluation of the three shapes' implicit functions on the grid of pixel centres (see the
    module docstring for the geometry); no loop over images.
    """
    f = factors.long().cpu()
    if f.ndim != 2 or f.shape[1] != 5:
        raise ValueError(f"factors must be [n, 5] (shape, scale, orientation, posX, posY), got {list(f.shape)}")
    for k, (name, s) in enumerate(zip(FACTORS, SIZES)):
        if len(f) and (f[:, k].min() < 0 or f[:, k].max() >= s):
            raise ValueError(f"factor {name} must be in 0..{s - 1}")
    scale = torch.as_tensor(SCALES, dtype=torch.float32)[f[:, 1]]
    cos, sin = _TRIG[f[:, 2]].float().unbind(1)
    cx = 16.5 + 31.0 * torch.as_tensor(POSITIONS, dtype=torch.float32)[f[:, 3]]
    cy = 16.5 + 31.0 * torch.as_tensor(POSITIONS, dtype=torch.float32)[f[:, 4]]
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dx = grid.view(1, 1, size) - cx.view(-1, 1, 1)  # [n, 1, W]: column offset
    dy = grid.view(1, size, 1) - cy.view(-1, 1, 1)  # [n, H, 1]: row offset (downwards)
    r = (10.5 * scale).view(-1, 1, 1)
    c, s = cos.view(-1, 1, 1), sin.view(-1, 1, 1)
    # screen coordinates with y up are (dx, -dy); rotating them by -theta gives the sprite's frame
    u = (c * dx - s * dy) / r
    v = (s * dx + c * dy) / r  # v grows downwards in the sprite's frame
    img = torch.empty(len(f), size, size)
    for k, inside in enumerate((_square, _ellipse, _heart)):  # each shape on its own images (3 batched calls)
        sel = f[:, 0] == k
        if sel.any():
            img[sel] = inside(u[sel], v[sel]).float()
    return img.unsqueeze(1)


def _square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) <= 1.0


def _ellipse(u: Tensor, v: Tensor) -> Tensor:
    return u**2 + (2.0 * v) ** 2 <= 1.0


def _heart(u: Tensor, v: Tensor) -> Tensor:
    a, b = 1.2 * u, 0.12 - 1.2 * v  # b points up: the lobes on top, the tip at v = 0.93 (down)
    return (a**2 + b**2 - 1.0) ** 3 <= a**2 * b**3


class FactorSource:
    """Where images with known factors come from: ``sample(n, gen) -> (x [n, 1, 64, 64] float, factors [n, 5])``."""

    generated: bool = True
    label: str = ""

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def eval_chunks(self, n: int, gen: torch.Generator, chunk: int) -> Iterator[tuple[Tensor, Tensor]]:
        """An evaluation set of ``n`` images with their factors (fixed by ``gen``), ``chunk`` at a time."""
        for lo in range(0, n, chunk):
            yield self.sample(min(chunk, n - lo), gen)


class GeneratedSprites(FactorSource):
    """GENERATED dSprites-style images (not the official file): uniform factor classes, rendered on the fly."""

    generated = True
    label = "GENERATED dSprites-style images (not the official file)"

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        f = sample_factors(n, gen)
        return render(f), f


class OfficialSprites(FactorSource):
    """The official file: batches are images at uniformly drawn indices (with replacement across batches)."""

    generated = False
    label = "dSprites (official file)"

    def __init__(self, data: DSpritesFile):
        self.data = data

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(self.data.n, (n,), generator=gen)
        return self.data.images(idx), torch.from_numpy(self.data.factors[idx.numpy()])

    def eval_chunks(self, n: int, gen: torch.Generator, chunk: int) -> Iterator[tuple[Tensor, Tensor]]:
        """A random subset of ``n`` images of the file, drawn without replacement."""
        idx = torch.randperm(self.data.n, generator=gen)[:n]
        for lo in range(0, len(idx), chunk):
            part = idx[lo: lo + chunk]
            yield self.data.images(part), torch.from_numpy(self.data.factors[part.numpy()])



@register_dataset("dsprites")
class DSprites(Dataset):
    """The official dSprites file (Matthey et al. 2017): 737,280 64x64 images of five known factors."""

    provides = ("factor_images",)

    @classmethod
    def check(cls, cfg: Any) -> None:
        d = cfg.dataset
        if not Bool().ok(d.get("download")):
            raise ConfigError(f"dataset.download={d.get('download')} is invalid (valid: true or false)")
        try:
            check_available(d.root, bool(d.download))
        except DSpritesDataError as e:
            raise ConfigError(str(e).splitlines()[0]) from None

    @classmethod
    def images(cls, cfg: Any) -> int | None:
        """How many images the file holds (None until it is downloaded)."""
        path = data_path(cfg.dataset.root)
        return inspect_file(path) if path.is_file() else None

    @classmethod
    def described(cls, cfg: Any) -> str:
        return str(data_path(cfg.dataset.root))

    @classmethod
    def source(cls, cfg: Any) -> FactorSource:
        return OfficialSprites(load(cfg.dataset.root, bool(cfg.dataset.download)))


@register_dataset("dsprites_generated")
class DSpritesGenerated(Dataset):
    """GENERATED dSprites-style images on the same factor grid, rendered on the fly: no file, no download."""

    provides = ("factor_images",)
    generated = True

    @classmethod
    def images(cls, cfg: Any) -> int | None:
        return None  # drawn without end

    @classmethod
    def described(cls, cfg: Any) -> str:
        return GeneratedSprites.label

    @classmethod
    def source(cls, cfg: Any) -> FactorSource:
        return GeneratedSprites()

__all__ = ["DSprites", "DSpritesGenerated", "DSpritesDataError", "DSpritesFile", "FACTORS", "FILENAME", "FactorSource", "GeneratedSprites", "MD5",
           "N_OFFICIAL", "OfficialSprites", "ORIENTATIONS", "POSITIONS", "SCALES", "SHAPES", "SIZES", "URL",
           "check_available", "data_path", "download", "git_blob_sha1", "how_to_get", "inspect_file", "load",
           "md5sum", "render", "sample_factors", "verify"]
