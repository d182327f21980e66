"""``hydra/launcher=vectorized``: mibench's Hydra launcher plugin that trains the compatible jobs of a sweep together.

    python -m mibench -m experiment=remine_fig7 hydra/launcher=vectorized

Jobs whose configs differ only in per-run keys (seed, estimator, lambda, C*, learning rate; see
:func:`mibench.engine.group.group_key`) form a group and train as one batched model in this process
(:mod:`mibench.engine.group`, :func:`mibench.app.run_group`); a group too large for the device's free memory is split. Every other job
runs alone, one after the other, as under Hydra's basic launcher. Each job still gets its own directory,
``.hydra/`` files, config.yaml, result.json, steps.csv, summary.csv and figure, so leaderboards, ``resume``
and skipping of finished runs work as for any other launcher.

(Hydra instantiates launchers from the ``hydra_plugins`` namespace only, hence this package beside mibench/;
it imports nothing heavy: Hydra scans it on every start.)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


class VectorizedLauncher(Launcher):
    def __init__(self, max_group_size: int | None = None, memory_fraction: float = 0.5, progress: bool = True) -> None:
        super().__init__()
        self.max_group_size, self.memory_fraction, self.progress = max_group_size, float(memory_fraction), progress
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job(self, job: tuple[int, DictConfig], task_function: TaskFunction) -> JobReturn:
        ret = run_job(hydra_context=self.hydra_context, task_function=task_function, config=job[1],
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from mibench.engine.group import group_key, why_alone

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs: list[tuple[int, DictConfig]] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
            jobs.append((idx, cfg))
        groups: dict[str, list[int]] = {}
        alone: list[int] = []
        for i, (_, cfg) in enumerate(jobs):
            key = _on_task_config(cfg, group_key)
            (groups.setdefault(key, []) if key is not None else alone).append(i)
        for key in [k for k, v in groups.items() if len(v) == 1]:
            alone.extend(groups.pop(key))
        log.info(f"Launching {len(jobs)} jobs: {len(groups)} vectorised group(s) of "
                 f"{', '.join(str(len(v)) for v in groups.values()) or '-'} runs, {len(alone)} alone")
        reasons = {_on_task_config(jobs[i][1], why_alone) or "no other job of its group" for i in alone}
        for why in sorted(reasons):
            log.info(f"\talone: {why}")
        returns: list[JobReturn | None] = [None] * len(jobs)
        for members in groups.values():
            for i, ret in zip(members, self._launch_group([jobs[i] for i in members])):
                returns[i] = ret
        for i in sorted(alone):
            returns[i] = self._job(jobs[i], self.task_function)
        return returns  # type: ignore[return-value]

    def _launch_group(self, jobs: list[tuple[int, DictConfig]]) -> list[JobReturn]:
        """Prepare every job in its own directory (through run_job: .hydra/, logging), train the prepared
        ones together, then hand each job's objective back to Hydra."""
        from mibench.app import Prepared, prepare_job, run_group

        rets = [self._job(job, prepare_job) for job in jobs]
        ready = [(k, r.return_value) for k, r in enumerate(rets)
                 if r.status == JobStatus.COMPLETED and isinstance(r._return_value, Prepared)]
        if ready:
            results = run_group([p for _, p in ready], self.max_group_size, self.memory_fraction,
                                progress=self.progress and sys.stderr.isatty())
            from .sweep_progress import report

            for (k, p), res in zip(ready, results):
                report(list(jobs[k][1].hydra.overrides.task), str(p.record.get("status", "completed")),
                       p.record.get("wall_time_s"))
                if isinstance(res, Exception):
                    print(f"mibench: error: run crashed: {type(res).__name__}: {res}".splitlines()[0], file=sys.stderr)
                    rets[k].return_value, rets[k].status = None, JobStatus.COMPLETED  # recorded; the sweep goes on
                else:
                    rets[k].return_value = res.objective
        for r in rets:  # a skipped job (already ran) returns its RunResult from prepare_job
            if r.status == JobStatus.COMPLETED and not isinstance(r._return_value, (float, int, type(None))):
                r.return_value = getattr(r._return_value, "objective", None)
        return rets


def _on_task_config(cfg: DictConfig, fn: Any) -> str | None:
    """``fn`` (group_key, why_alone) of a job's config without its ``hydra`` node."""
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    try:
        return fn(task_cfg)
    except Exception:  # noqa: BLE001 -- a config that does not even resolve runs alone and reports its error there
        return None


__all__ = ["VectorizedLauncher"]
