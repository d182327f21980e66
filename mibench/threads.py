"""How many intra-op CPU threads a run computes with: one rule (:func:`thread_rule`), applied once per process
where Hydra starts a run (:func:`set_threads`).

Several runs sharing a machine (joblib's parallel jobs, a SLURM node, processes started by hand) must not each
take every core: OpenMP threads that outnumber the cores spin and wait on each other and slow every run down
(10-50x measured on a busy 2-core machine). A run alone still gets every core it may use.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .checks import ConfigError

SYSFS_CPU = Path("/sys/devices/system/cpu")
# what torch itself reads at start-up for its intra-op thread count, in its order
TORCH_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def thread_rule(configured: Any, env: Mapping[str, str], cores: int, concurrent: int = 1) -> int:
    """The intra-op thread count of a run.

    1. ``hardware.threads`` (``configured``) when set;
    2. else ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``) when set: torch already honours it, and joblib's
       workers get it set to CPUs // n_jobs;
    3. else the CPUs available divided by the runs started at once (``concurrent``), at least 1, where the
       CPUs available are ``cores`` (the physical cores this process may run on), or fewer inside a SLURM
       job that states ``SLURM_CPUS_PER_TASK``.

    A value that is not a positive integer raises :class:`ConfigError` naming it.
    """
    if configured is not None:
        return _count("hardware.threads", configured)
    for var in TORCH_THREAD_VARS:
        if env.get(var, "").strip():
            return _count(var, env[var].split(",")[0])  # OpenMP's nested form "4,2": the outer level
    if env.get("SLURM_JOB_ID") and env.get("SLURM_CPUS_PER_TASK"):
        cores = min(cores, _count("SLURM_CPUS_PER_TASK", env["SLURM_CPUS_PER_TASK"]))
    return max(1, cores // max(1, concurrent))


def _count(name: str, value: Any) -> int:
    """``value`` as a positive integer, or a one-line :class:`ConfigError` naming ``name``."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name}={value!r} is invalid (valid: an integer >= 1)")
    return int(text)


def allowed_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask, which taskset, cgroups and SLURM narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def available_cores(cpus: Iterable[int] | None = None, sysfs: Path = SYSFS_CPU) -> int:
    """Physical cores among ``cpus`` (default :func:`allowed_cpus`): hyperthread siblings count once, as in
    torch's own default thread count. Where the topology cannot be read, the number of CPUs."""
    cpus = allowed_cpus() if cpus is None else list(cpus)
    try:
        siblings = {(sysfs / f"cpu{c}" / "topology" / "thread_siblings_list").read_text().strip() for c in cpus}
    except OSError:
        return max(1, len(cpus))
    return max(1, len(siblings))


def concurrent_runs(launcher: Any, cpus: int) -> int:
    """How many runs the Hydra launcher (its config, ``hydra.launcher``) starts at once on this machine:
    joblib's ``n_jobs`` (a negative one counted back from the ``cpus`` logical CPUs, as joblib does), else 1
    (the basic and vectorized launchers run one at a time; a SLURM job is a machine share of its own)."""
    if launcher is None or "joblib" not in str(launcher.get("_target_", "")):
        return 1
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return 1
    return max(1, cpus + 1 + int(n_jobs)) if n_jobs < 0 else max(1, int(n_jobs))


def set_threads(configured: Any, launcher: Any = None) -> int:
    """Set torch's intra-op threads by :func:`thread_rule` for this process and return the count."""
    import torch

    cpus = allowed_cpus()
    threads = thread_rule(configured, os.environ, available_cores(cpus), concurrent_runs(launcher, len(cpus)))
    torch.set_num_threads(threads)
    return threads
