"""The dataset interface: one module and one YAML per ``dataset=<name>`` choice.

A dataset says which kinds of data it gives (``provides``, from :data:`KINDS`); a benchmark says the one kind
it needs (``Task.needs_data``) and asks the dataset for it, never for its name. Adding a dataset is a class
registered here (``@register_dataset("name")``) in a module of ``mibench/data/`` and ``conf/dataset/<name>.yaml``;
every benchmark that needs a kind it provides accepts it, and the error for a dataset that does not fit lists
the datasets that do (from this registry: no benchmark keeps a list).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

# the kinds of data a benchmark can ask for, and what each offers (the methods a dataset of that kind has)
KINDS: dict[str, str] = {
    "gaussian": "correlated Gaussian pairs with a closed-form true MI and optimal critic (the dataset's keys)",
    "staircase": "pairs whose true MI steps through dataset.mi_levels (the dataset's keys)",
    "pairs": "paired samples from a file: source(cfg) -> (path, label), described(cfg)",
    "cifar": "CIFAR-10/100 (mibench.data.cifar.SPECS): labelled 32x32 images, a train and a test split",
    "images32": "labelled 32x32 images, a train and a test split: loader(...), check_files(root, download)",
    "factor_images": "64x64 images with known generative factors: source(cfg) -> FactorSource",
    "onehot": "one-hot pairs x = y, I = log N (the dataset's keys)",
    "mixture": "a mixture of Gaussians on a grid (the dataset's keys)",
    "random_gaussian": "pairs of a random-covariance Gaussian, closed-form MI (the dataset's keys)",
    "image_folder": "an ImageFolder tree of classes (train/ and val/)",
}


class Dataset:
    """A ``dataset=<name>`` choice: the kinds of data it gives and the checks of its files and keys."""

    name: ClassVar[str] = ""
    provides: ClassVar[tuple[str, ...]] = ()
    generated: ClassVar[bool] = False  # drawn by mibench as a stand-in for a published data set (labelled GENERATED)

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Raise one line (ConfigError) when the data cannot be had: files missing and no download, bad keys."""


class ImageFiles(Dataset):
    """A dataset of image files under ``dataset.root`` (downloaded with ``dataset.download=true``): the kinds
    ``cifar`` and ``images32`` read it through :meth:`loader`."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        cls.check_files(cfg.dataset.root, cfg.dataset.download)

    @classmethod
    def check_files(cls, root: Any, download: Any) -> None:
        """One line (ConfigError) unless the files are under ``root`` or will be downloaded."""
        raise NotImplementedError

    @classmethod
    def loader(cls, root: Any, batch_size: int, seed: int, download: bool, augment: bool, crop_pad: int,
               flip: bool, num_workers: int = 0) -> Any:
        """The data module (batches, augmentation, ``normalise``, train and test arrays)."""
        raise NotImplementedError


DATASETS: dict[str, type[Dataset]] = {}


def register_dataset(name: str) -> Callable[[type[Dataset]], type[Dataset]]:
    def wrap(cls: type[Dataset]) -> type[Dataset]:
        unknown = [k for k in cls.provides if k not in KINDS]
        if unknown:
            raise ValueError(f"dataset {name!r} provides unknown kinds {unknown} (valid: {', '.join(KINDS)})")
        cls.name = name
        DATASETS[name] = cls
        return cls
    return wrap


def providing(kind: str) -> list[str]:
    """The registered datasets that give ``kind``."""
    return sorted(n for n, d in DATASETS.items() if kind in d.provides)


__all__ = ["DATASETS", "Dataset", "ImageFiles", "KINDS", "providing", "register_dataset"]
