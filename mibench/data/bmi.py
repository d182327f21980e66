"""The Beyond-Normal benchmark's tasks (Czyż et al., NeurIPS 2023; the ``benchmark-mi`` package) as sample files.

``dataset=bmi dataset.task=<id>`` draws ``n`` samples of a task with its own sampler
(``task.sample(n, seed)``) once per (task, n, seed) and caches them as a mibench sample file
``<cache>/<task id>/n<n>-seed<seed>.npz`` (x, y, true_mi), which every later run reads; the package is
needed only to draw a sample that is not cached yet. It is an optional extra (it pins numpy < 2 and
jax < 0.4.34), see :data:`INSTALL`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..checks import Int, check_rules
from .dataset import Dataset, register_dataset
from .samples import save_samples

INSTALL = 'make install-bmi, or in a checkout: pip install -c requirements/bmi.txt -e ".[bmi]"'


def tasks() -> dict[str, Any]:
    """The package's 40 benchmark tasks by id (raises a one-line error when the extra is not installed)."""
    try:
        from bmi.benchmark import BENCHMARK_TASKS
    except ImportError as e:
        raise ValueError(f"dataset=bmi needs the Beyond-Normal package (benchmark-mi), which is not installed here "
                         f"({str(e).splitlines()[0]}): {INSTALL}") from None
    return dict(BENCHMARK_TASKS)


def cache_file(cache: str | Path, task: str, n: int, seed: int) -> Path:
    return Path(cache) / task / f"n{n}-seed{seed}.npz"


def sample_file(task: str, n: int, seed: int, cache: str | Path) -> Path:
    """The cached sample file of (task, n, seed), drawn with the package's sampler on first use."""
    path = cache_file(cache, task, n, seed)
    if path.is_file():
        return path
    known = tasks()
    if task not in known:
        raise ValueError(f"dataset.task={task!r} is not a Beyond-Normal task (valid: {', '.join(known)})")
    t = known[task]
    x, y = t.sample(n, seed)
    return save_samples(path, x, y, float(t.mutual_information), task=task, task_name=str(t.name))


@register_dataset("bmi")
class BeyondNormal(Dataset):
    """A Beyond-Normal task's samples (dataset.task, dataset.n), drawn with its own sampler once per (task, n,
    seed) and cached as a sample file."""

    provides = ("pairs",)

    @classmethod
    def check(cls, cfg: Any) -> None:
        check_rules(cfg, {"dataset": {"n": Int(2)}})

    @classmethod
    def source(cls, cfg: Any) -> tuple[Path, str]:
        """The cached sample file (drawn on first use) and the task's id."""
        d = cfg.dataset
        seed = int(d.sample_seed if d.get("sample_seed") is not None else cfg.seed)
        return sample_file(str(d.task), int(d.n), seed, d.cache), str(d.task)

    @classmethod
    def described(cls, cfg: Any) -> str:
        return f"dataset.n={cfg.dataset.n} samples of {cfg.dataset.task}"


__all__ = ["BeyondNormal", "INSTALL", "tasks", "cache_file", "sample_file"]
