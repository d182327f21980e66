"""The jigsaw pipeline of the eta-MINE paper (Appendix D, "Jigsaw Task Preprocessing"), on batches in torch.

Training puzzles (Appendix D, after Noroozi & Favaro 2016 / Kolesnikov et al. 2019):
    image resized to 292x292 (Pillow, :mod:`mibench.data.imagefolder`) -> random 255x255 crop
    -> grayscale with probability 1/3 (the whole 255 crop, before patch extraction)
    -> 3x3 cells of 85x85 -> a random 64x64 patch inside each cell (no easy edge matching)
    -> every patch's RGB channels normalised to zero mean, unit variance (per patch, per channel).
Test time: the 255 crop is the centre crop and (left open by the paper) the 64 patch is each cell's centre,
no grayscale. Target task (Appendix D, "ImageNet 10% Target Task"): resize 232x232, centre 192x192 crop,
3x3 cells of 64x64 (no gap), the same per-patch normalisation.

Scrambling: puzzle ``x_pi = (x_pi(1), ..., x_pi(9))``, i.e. ``scrambled[k] = patches[pi[k]]``
(:func:`scramble`); ``unscramble`` with the inverse permutation (``argsort``) recovers the order.

The permutation set: ``n`` permutations of 0..8 chosen greedily for maximal Hamming distance
(Noroozi & Favaro 2016, Algorithm 1, with the max-min criterion): start from a random permutation, then
repeatedly add the one of all 9! = 362,880 that maximises the minimal Hamming distance to the chosen set
(ties broken at random by the seeded generator). Vectorised over the candidates with numpy; cached as
``<cache_dir>/jigsaw_perms_n<n>_seed<seed>.npy``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from ..precision import full

GRID = 3
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, Pillow's "L" conversion


@dataclass(frozen=True)
class Geometry:
    """Sizes of the pipeline (Appendix D defaults)."""

    resize: int = 292       # images resized to 292x292
    crop: int = 255         # random (train) / centre (test) crop
    patch: int = 64         # random (train) / centre (test) patch inside each 85x85 cell
    gray_p: float = 1.0 / 3.0  # the whole crop turned grayscale with this probability (train only)
    target_resize: int = 232   # target task: resize, centre crop, 3x3 cells of 64
    target_crop: int = 192

    @property
    def cell(self) -> int:
        return self.crop // GRID  # 85

    def check(self) -> None:
        if self.crop > self.resize:
            raise ValueError(f"crop={self.crop} exceeds resize={self.resize}")
        if self.patch > self.cell:
            raise ValueError(f"patch={self.patch} exceeds the cell crop/3={self.cell}")
        if self.target_crop > self.target_resize:
            raise ValueError(f"target_crop={self.target_crop} exceeds target_resize={self.target_resize}")
        if self.target_crop // GRID < 1:
            raise ValueError(f"target_crop={self.target_crop} is smaller than the 3x3 grid")


# ---------------------------------------------------------------------------------------------
# permutations


def all_permutations(k: int = 9) -> np.ndarray:
    """All k! permutations of 0..k-1, [k!, k] uint8, built by inserting m = 1..k-1 at every position of the
    permutations of 0..m-1 (numpy, no Python loop over the permutations)."""
    perms = np.zeros((1, 1), dtype=np.uint8)
    for m in range(1, k):
        parts = [np.insert(perms, pos, m, axis=1) for pos in range(m + 1)]
        perms = np.concatenate(parts, axis=0)
    return perms


def min_hamming(perms: np.ndarray) -> int:
    """Minimal pairwise Hamming distance of a set of permutations (vectorised)."""
    p = np.asarray(perms)
    d = (p[:, None, :] != p[None, :, :]).sum(-1)
    d[np.diag_indices(len(p))] = p.shape[1] + 1
    return int(d.min())


def max_hamming_set(n: int = 100, seed: int = 0, k: int = 9) -> np.ndarray:
    """Greedy max-min Hamming permutation set (no cache), [n, k] int64."""
    cand = all_permutations(k)
    if not 1 <= n <= len(cand):
        raise ValueError(f"n={n} permutations (valid: 1 to {len(cand)})")
    cols = np.ascontiguousarray(cand.T)  # [k, k!]: one contiguous row per position

    def dist(j: int) -> np.ndarray:  # Hamming distance of every candidate to candidate j, vectorised
        d = np.zeros(len(cand), dtype=np.uint8)
        for pos in range(k):
            d += cols[pos] != cols[pos, j]
        return d

    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(cand)))]
    dmin = dist(chosen[0])  # min distance of every candidate to the chosen set
    for _ in range(n - 1):
        best = np.flatnonzero(dmin == dmin.max())
        j = int(best[rng.integers(len(best))])
        chosen.append(j)
        np.minimum(dmin, dist(j), out=dmin)
    return cand[chosen].astype(np.int64)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIBENCH_CACHE", Path.home() / ".cache" / "mibench")) / "jigsaw"


def permutation_set(n: int = 100, seed: int = 0, cache_dir: str | Path | None = None) -> tuple[np.ndarray, int]:
    """The ``n`` permutations (cached per (n, seed)) and their minimal pairwise Hamming distance."""
    d = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = d / f"jigsaw_perms_n{n}_seed{seed}.npy"
    perms = None
    if path.exists():
        try:
            perms = np.load(path)
        except (OSError, ValueError):
            perms = None
        if perms is not None and (perms.shape != (n, 9) or len({tuple(p) for p in perms}) != n):
            perms = None  # a damaged cache file: rebuild it
    if perms is None:
        perms = max_hamming_set(n, seed)
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
            np.save(tmp, perms)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache: the set is cheap to rebuild (~1 s)
    return perms.astype(np.int64), min_hamming(perms)


def scramble(patches: Tensor, perms: Tensor) -> Tensor:
    """``out[b, k] = patches[b, perms[b, k]]`` (patches [B, 9, ...], perms [B, 9] long)."""
    idx = perms.view(*perms.shape, *([1] * (patches.dim() - 2))).expand(*perms.shape, *patches.shape[2:])
    return torch.gather(patches, 1, idx)


def unscramble(scrambled: Tensor, perms: Tensor) -> Tensor:
    """The inverse of :func:`scramble`: scramble with ``argsort(perms)``."""
    return scramble(scrambled, torch.argsort(perms, dim=1))


# ---------------------------------------------------------------------------------------------
# the patch pipeline


def crop(x: Tensor, top: Tensor, left: Tensor, size: int) -> Tensor:
    """Per-image crops: ``out[b] = x[b, :, top[b]:top[b]+size, left[b]:left[b]+size]`` (x [B, C, H, W])."""
    b, c = x.shape[:2]
    ar = torch.arange(size, device=x.device)
    rows = (top.view(b, 1) + ar).view(b, 1, size, 1).expand(b, c, size, x.shape[-1])
    x = torch.gather(x, 2, rows)
    cols = (left.view(b, 1) + ar).view(b, 1, 1, size).expand(b, c, size, size)
    return torch.gather(x, 3, cols)


def grayscale(x: Tensor) -> Tensor:
    """Luma replicated over the three channels (x [B, 3, H, W])."""
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def cells(x: Tensor, cell: int) -> Tensor:
    """[B, C, >=3*cell, >=3*cell] -> the 3x3 grid of cells, row-major, [B, 9, C, cell, cell]."""
    b, c = x.shape[:2]
    x = x[:, :, : GRID * cell, : GRID * cell].reshape(b, c, GRID, cell, GRID, cell)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, GRID * GRID, c, cell, cell)


def normalise_patches(p: Tensor, eps: float = 1e-6) -> Tensor:
    """Each patch's channels to zero mean, unit (population) std over its pixels (p [..., C, H, W])."""
    mean = p.mean(dim=(-2, -1), keepdim=True)
    std = p.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (p - mean) / std.clamp_min(eps)


def puzzle_patches(images: Tensor, geometry: Geometry = Geometry(), train: bool = True,
                   generator: torch.Generator | None = None) -> Tensor:
    """uint8 images [B, 3, resize, resize] -> normalised patches [B, 9, 3, patch, patch] in grid order.

    train: random crop, grayscale with ``gray_p``, a random patch per cell (all from ``generator``);
    otherwise the centre crop and each cell's centre patch, no grayscale.
    """
    g = geometry
    if images.shape[-1] != g.resize or images.shape[-2] != g.resize:
        raise ValueError(f"images are {tuple(images.shape[-2:])}, the pipeline expects {g.resize}x{g.resize}")
    x = full(images) / 255.0
    b, dev = x.shape[0], x.device
    if train:
        top = torch.randint(0, g.resize - g.crop + 1, (b,), generator=generator).to(dev)
        left = torch.randint(0, g.resize - g.crop + 1, (b,), generator=generator).to(dev)
        gray = (torch.rand(b, generator=generator) < g.gray_p).to(dev)
    else:
        top = left = torch.full((b,), (g.resize - g.crop) // 2, device=dev, dtype=torch.long)
        gray = torch.zeros(b, dtype=torch.bool, device=dev)
    x = crop(x, top, left, g.crop)
    x = torch.where(gray.view(b, 1, 1, 1), grayscale(x), x)
    c = cells(x, g.cell).reshape(b * GRID * GRID, 3, g.cell, g.cell)
    n = c.shape[0]
    if train:
        ptop = torch.randint(0, g.cell - g.patch + 1, (n,), generator=generator).to(dev)
        pleft = torch.randint(0, g.cell - g.patch + 1, (n,), generator=generator).to(dev)
    else:
        ptop = pleft = torch.full((n,), (g.cell - g.patch) // 2, device=dev, dtype=torch.long)
    p = crop(c, ptop, pleft, g.patch)
    return normalise_patches(p).view(b, GRID * GRID, 3, g.patch, g.patch)


def target_patches(images: Tensor, geometry: Geometry = Geometry()) -> Tensor:
    """Target task: uint8 [B, 3, 232, 232] -> centre 192 crop -> 3x3 cells of 64, normalised, [B, 9, 3, 64, 64]."""
    g = geometry
    if images.shape[-1] != g.target_resize or images.shape[-2] != g.target_resize:
        raise ValueError(f"images are {tuple(images.shape[-2:])}, the target pipeline expects "
                         f"{g.target_resize}x{g.target_resize}")
    x = full(images) / 255.0
    b = x.shape[0]
    off = torch.full((b,), (g.target_resize - g.target_crop) // 2, dtype=torch.long, device=x.device)
    x = crop(x, off, off, g.target_crop)
    return normalise_patches(cells(x, g.target_crop // GRID))


__all__ = ["Geometry", "GRID", "all_permutations", "min_hamming", "max_hamming_set", "permutation_set",
           "scramble", "unscramble", "crop", "grayscale", "cells", "normalise_patches", "puzzle_patches",
           "target_patches", "default_cache_dir"]
