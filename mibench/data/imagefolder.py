"""ImageNet-style folder trees: ``root/<split>/<class>/<image files>``, decoded and resized with Pillow.

- :func:`scan`: the classes (sorted folder names, shared by all splits through the train split's list) and
  files (sorted); one-line :class:`ImageFolderError` for a missing root / split, no class folder, an empty class.
- :func:`subset_per_class`: the "ImageNet 10%" selection of the eta-MINE paper (Appendix D: "subsample ImageNet
  to 10% within each class for both training and validation sets"): in every class, ``round(fraction * n)``
  files (at least 1) drawn without replacement by ``numpy.random.default_rng([seed, class index])``, so the
  subset depends only on the seed, the class's position and its file list (not on the other classes).
  ImageNet-1k: ~1,281 -> 128K training and 50 -> 5 per class = 5K validation images. This is a seeded draw,
  not Kolesnikov et al.'s published file list (which mibench does not ship).
- :class:`ImageFolder`: a split's (subset of) files; ``load(indices, size)`` -> uint8 [n, 3, size, size]
  (RGB, square resize with bilinear filtering, as Appendix D's "resized to 292x292"), with an optional
  in-memory cache of the decoded arrays (small trees).
- :func:`write_generated_tree`: a tiny ImageNet-style tree of GENERATED JPEG/PNG images (class colour + pattern +
  noise) for tests and CPU presets; its class folders are named ``generated_XX`` and it carries a GENERATED.txt.

    python -m mibench.data.imagefolder <root> [--classes 4 --train-per-class 10 --val-per-class 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .dataset import Dataset, register_dataset

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")


class ImageFolderError(ValueError):
    """A missing / empty folder or an undecodable image (one line)."""


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")


def scan(root: str | Path, split: str, classes: list[str] | None = None) -> tuple[list[str], list[Path], np.ndarray]:
    """(class names, files, labels) of ``root/split``; ``classes`` fixes the class list (e.g. the train split's)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageFolderError(f"image folder root {root} not found (expected root/<split>/<class>/<images>)")
    d = root / split
    if not d.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ImageFolderError(f"split folder {d} not found (root has: {', '.join(have) or 'no folders'})")
    found = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ImageFolderError(f"{d} has no class folders (expected {d}/<class>/<images>)")
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ImageFolderError(f"{d}/{extra[0]} is not a class of the training split")
    files: list[Path] = []
    labels: list[int] = []
    for c, name in enumerate(classes):
        cdir = d / name
        imgs = sorted(p for p in cdir.iterdir() if _is_image(p)) if cdir.is_dir() else []
        if not imgs:
            raise ImageFolderError(f"class folder {cdir} has no images ({', '.join(EXTENSIONS)})")
        files += imgs
        labels += [c] * len(imgs)
    return list(classes), files, np.asarray(labels, dtype=np.int64)


def subset_per_class(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a per-class ``fraction`` (round, at least 1 per class), drawn with ``rng([seed, class])``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} (valid: 0 < fraction <= 1)")
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        keep.append(np.sort(np.random.default_rng([seed, int(c)]).choice(idx, size=k, replace=False)))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def decode(path: Path, size: int) -> np.ndarray:
    """RGB uint8 [3, size, size]: Pillow decode, convert, square bilinear resize (one-line error when undecodable)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageFolderError(f"cannot decode image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def verify(path: Path) -> None:
    """Pillow's header / structure check of one file (one-line error)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageFolderError(f"cannot decode image {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


class ImageFolder:
    """One split of an image folder tree, optionally restricted to a per-class fraction."""

    def __init__(self, root: str | Path, split: str, fraction: float = 1.0, seed: int = 0,
                 classes: list[str] | None = None, cache: bool = False, max_per_class: int | None = None):
        self.root, self.split = Path(root).expanduser(), split
        self.classes, files, labels = scan(root, split, classes)
        idx = subset_per_class(labels, fraction, seed)
        if max_per_class is not None:  # the first max_per_class of each class's subset (cheap CPU runs)
            idx = np.concatenate([idx[labels[idx] == c][:max_per_class] for c in np.unique(labels[idx])])
        self.files = [files[i] for i in idx]
        self.labels = torch.from_numpy(labels[idx])
        self.cache = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def verify(self) -> None:
        for p in self.files:
            verify(p)

    def load(self, indices, size: int) -> Tensor:
        """uint8 [n, 3, size, size] of the files at ``indices``."""
        out = []
        for i in (int(i) for i in indices):
            key = (i, size)
            a = self.cache.get(key) if self.cache is not None else None
            if a is None:
                a = decode(self.files[i], size)
                if self.cache is not None:
                    self.cache[key] = a
            out.append(a)
        return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, 3, size, size, dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------
# generated trees (tests, CPU presets): NOT ImageNet

MARKER = "GENERATED.txt"  # at the root of a tree written by write_generated_tree


def is_generated(root: str | Path) -> bool:
    """True for a tree written by :func:`write_generated_tree` (its ``GENERATED.txt``)."""
    return (Path(root).expanduser() / MARKER).is_file()


def write_generated_tree(root: str | Path, classes: int = 4, train_per_class: int = 10, val_per_class: int = 4,
                         seed: int = 0, size: tuple[int, int] = (120, 100)) -> Path:
    """Write ``root/{train,val}/generated_XX/*.{jpg,png}``: GENERATED images, one colour + stripe pattern per class
    plus noise (a linear probe can separate the classes), sizes varying around ``size``, JPEG and PNG alternating."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, size=(classes, 3))
    freqs = rng.uniform(0.05, 0.3, size=(classes, 2))
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"generated_{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                w, h = size[0] + int(rng.integers(-16, 17)), size[1] + int(rng.integers(-16, 17))
                yy, xx = np.mgrid[0:h, 0:w]
                wave = 40.0 * np.sin(freqs[c, 0] * xx + freqs[c, 1] * yy + rng.uniform(0, 6.3))
                img = colours[c][None, None, :] + wave[..., None] + rng.normal(0, 20, size=(h, w, 3))
                img = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")
                ext = "jpg" if k % 2 == 0 else "png"
                img.save(d / f"gen_{split}_{c:02d}_{k:03d}.{ext}")
    (root / MARKER).write_text("Generated by mibench.data.imagefolder.write_generated_tree: synthetic images, "
                                        "not ImageNet.\n")
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a tiny ImageNet-style tree of GENERATED images.")
    ap.add_argument("root")
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--train-per-class", type=int, default=10)
    ap.add_argument("--val-per-class", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(write_generated_tree(a.root, a.classes, a.train_per_class, a.val_per_class, a.seed))


if __name__ == "__main__":
    main()



@register_dataset("imagenet10")
class ImageNet10(Dataset):
    """An ImageFolder tree of ImageNet classes (train/ and val/); benchmark=jigsaw checks and reads it."""

    provides = ("image_folder",)


__all__ = ["EXTENSIONS", "ImageFolder", "ImageFolderError", "scan", "subset_per_class", "decode", "verify",
           "write_generated_tree", "is_generated", "MARKER"]
