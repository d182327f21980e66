"""Small fake CIFAR-10/100 datasets in the official python-pickle layout, for tests and demos.

Each class c has a fixed random colour and a low-frequency pattern; an image is
``128 + signal_c + noise``, clipped to uint8. The class signal survives random crops and flips,
so a small conv net learns it within a few steps. Classes are balanced (as real CIFAR is).

    python -m mibench.data.fake_cifar <root> --classes 10 [--train-per-class 20 --test-per-class 10]
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

from .cifar import SPECS


def _images(labels: np.ndarray, templates: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    x = 128.0 + templates[labels] + rng.normal(0.0, noise, size=(labels.size, 3, 32, 32))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(labels.size, 3072)


def write_fake_cifar(root: str | Path, classes: int = 10, train_per_class: int = 20, test_per_class: int = 10,
                     seed: int = 0, noise: float = 40.0, strength: float = 60.0) -> Path:
    """Write ``<root>/cifar-10-batches-py`` (classes=10) or ``<root>/cifar-100-python`` (classes=100)."""
    name = {10: "cifar10", 100: "cifar100"}.get(classes)
    if name is None:
        raise ValueError(f"classes={classes} (valid: 10 or 100)")
    spec = SPECS[name]
    rng = np.random.default_rng(seed)
    colour = rng.uniform(-1.0, 1.0, size=(classes, 3, 1, 1))
    yy, xx = np.meshgrid(np.linspace(0, 2 * np.pi, 32), np.linspace(0, 2 * np.pi, 32), indexing="ij")
    freq = rng.integers(1, 3, size=(classes, 2))
    phase = rng.uniform(0, 2 * np.pi, size=classes)
    pattern = np.sin(freq[:, :1, None] * yy + freq[:, 1:, None] * xx + phase[:, None, None])[:, None]
    templates = strength * (colour + 0.5 * pattern)  # [C, 3, 32, 32]
    d = Path(root) / spec.folder
    d.mkdir(parents=True, exist_ok=True)
    train_y = rng.permutation(np.repeat(np.arange(classes), train_per_class))
    test_y = rng.permutation(np.repeat(np.arange(classes), test_per_class))
    train_x, test_x = _images(train_y, templates, noise, rng), _images(test_y, templates, noise, rng)
    key = spec.label_key
    parts = np.array_split(np.arange(train_y.size), len(spec.train_files))
    for fname, part in zip(spec.train_files, parts):
        with open(d / fname, "wb") as f:
            pickle.dump({"data": train_x[part], key: train_y[part].tolist(), "batch_label": fname}, f)
    with open(d / spec.test_file, "wb") as f:
        pickle.dump({"data": test_x, key: test_y.tolist(), "batch_label": "test"}, f)
    meta = "batches.meta" if classes == 10 else "meta"
    with open(d / meta, "wb") as f:
        names = [f"class_{i}" for i in range(classes)]
        pickle.dump({"label_names": names} if classes == 10 else {"fine_label_names": names}, f)
    return d


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--classes", type=int, default=10, choices=(10, 100))
    p.add_argument("--train-per-class", type=int, default=20)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(write_fake_cifar(a.root, a.classes, a.train_per_class, a.test_per_class, a.seed))


if __name__ == "__main__":
    main()
