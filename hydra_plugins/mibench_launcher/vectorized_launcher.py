"""``hydra/launcher=vectorized``: mibench's Hydra launcher plugin that trains the compatible jobs of a sweep together.

    python -m mibench -m experiment=remine_fig7 hydra/launcher=vectorized

Jobs whose configs differ only in per-run keys (seed, estimator, lambda, C*, learning rate; see
:func:`mibench.engine.plan.group_key`) form a group and train as one batched model in this process
(:mod:`mibench.engine.group`, :func:`mibench.app.run_group`); a group too large for the device's free memory is split. Every other job
runs alone, one after the other, as under Hydra's basic launcher. Each job still gets its own directory,
``.hydra/`` files, config.yaml, result.json, steps.csv, summary.csv and figure, so leaderboards, ``resume``
and skipping of finished runs work as for any other launcher.

``hydra/launcher=vectorized_slurm`` (``hydra.launcher.submitit: slurm``) plans the same groups, then
submits ONE submitit job per group and one per job that trains alone, each running on its node what this
launcher otherwise runs here (the group's preparation and batched training, or the lone job), waits for
them all and returns their JobReturns. The SLURM keys are those of Hydra's ``submitit_slurm`` launcher
(partition, timeout_min, ..., so ``hardware=slurm_gpu`` composes with it); ``submitit: local`` or
``debug`` runs the jobs through submitit without SLURM (tests). A job is requeue-able (``checkpoint``):
after a timeout or preemption SLURM runs the same group again. See docs/vectorized.md.

(Hydra instantiates launchers from the ``hydra_plugins`` namespace only, hence this package beside mibench/;
it imports nothing heavy: Hydra scans it on every start.)
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


# submitit's executor-independent parameters (AutoExecutor); the other keys of Hydra's SlurmQueueConf are
# SLURM's own (passed as slurm_<key>), max_num_timeout goes to the executor's constructor
GENERIC = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
           "stderr_to_stdout"}
SLURM_KEYS = {"partition", "qos", "comment", "constraint", "exclude", "gres", "cpus_per_gpu", "gpus_per_task",
              "mem_per_gpu", "mem_per_cpu", "account", "signal_delay_s", "additional_parameters",
              "array_parallelism", "setup"}
CLUSTERS = ("slurm", "local", "debug")


def settings_rules() -> dict:
    """What ``hydra.launcher.max_group_size`` / ``memory_fraction`` / ``progress`` / ``submitit`` may hold (rules
    of mibench.checks; the CLI checks them with the rest of the config before any job starts)."""
    from mibench.checks import Bool, Choice, Int, Maybe, Number

    return {"max_group_size": Maybe(Int(1), "null for as many runs as fit memory_fraction"),
            "memory_fraction": Number(0.0, 1.0, lo_open=True, text="a fraction 0 < f <= 1 of the free memory"),
            "progress": Bool(), "submitit": Maybe(Choice(*CLUSTERS), "null to train here")}


def check_settings(launcher: Any) -> None:
    """Raise a one-line ConfigError (a ValueError) for a bad launcher setting, naming the key and what is valid."""
    from mibench.checks import check_rules

    check_rules(OmegaConf.create({"hydra": {"launcher": launcher}}), {"hydra.launcher": settings_rules()})


class VectorizedLauncher(Launcher):
    _rename = False  # SLURM: each job renames itself when it starts (set at submission, pickled with the launcher)

    def __init__(self, max_group_size: int | None = None, memory_fraction: float = 0.5, progress: bool = True,
                 submitit: str | None = None, **queue: Any) -> None:
        """``submitit``: None trains here; "slurm" (or "local", "debug": submitit without SLURM) submits one
        job per group. ``queue``: the keys of Hydra's SlurmQueueConf (submitit_folder, timeout_min,
        partition, ...); without ``submitit`` they are ignored (``hardware=slurm_gpu`` sets them)."""
        super().__init__()
        check_settings({"max_group_size": max_group_size, "memory_fraction": memory_fraction, "progress": progress,
                        "submitit": submitit})
        self.max_group_size, self.memory_fraction, self.progress = max_group_size, float(memory_fraction), progress
        unknown = set(queue) - GENERIC - SLURM_KEYS - {"submitit_folder", "max_num_timeout"}
        if unknown:
            raise ValueError(f"hydra.launcher: unknown key(s) {', '.join(sorted(unknown))} (SLURM keys: "
                             f"{', '.join(sorted(GENERIC | SLURM_KEYS | {'submitit_folder', 'max_num_timeout'}))})")
        for k in ("nodes", "tasks_per_node"):  # a group trains in one process
            if queue.get(k) not in (None, 1):
                raise ValueError(f"hydra.launcher.{k}={queue[k]}: a vectorised group trains in one process (1)")
        self.submitit = submitit
        self.queue = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                      for k, v in queue.items()}
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
        from mibench.engine.plan import group_key, why_alone

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs: list[tuple[int, DictConfig]] = []
        sweep_dir = str(self.config.hydra.sweep.dir)  # resolved here: ${uid:} differs in every process
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = idx
                cfg.hydra.job.num = idx
                cfg.hydra.sweep.dir = sweep_dir
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
        if self.submitit is not None:
            units = [members for members in groups.values()] + [[i] for i in sorted(alone)]
            return self._submit(jobs, units, alone=set(alone))
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
            from .sweep_progress import report_record, report_summary

            for (k, p), res in zip(ready, results):
                report_record(list(jobs[k][1].hydra.overrides.task), p.record)
                if isinstance(res, Exception):
                    print(f"mibench: error: run crashed: {type(res).__name__}: {res}".splitlines()[0], file=sys.stderr)
                    rets[k].return_value, rets[k].status = None, JobStatus.COMPLETED  # recorded; the sweep goes on
                else:
                    rets[k].return_value = res.objective
            report_summary()
        for r in rets:  # a skipped job (already ran) returns its RunResult from prepare_job
            if r.status == JobStatus.COMPLETED and not isinstance(r._return_value, (float, int, type(None))):
                r.return_value = getattr(r._return_value, "objective", None)
        return rets


    # ---- one submitit job per group (hydra.launcher.submitit) -------------------------------------------

    def _executor(self, name: str | None = None) -> Any:
        """The submitit executor of ``hydra.launcher.submitit``, its keys set; ``name``: the SLURM job (array) name
        when ``hydra.launcher.name`` is the default (the Hydra job's name)."""
        import submitit

        assert self.config is not None
        params = {k: v for k, v in self.queue.items() if v is not None}
        if name is not None and params.get("name") in (None, str(self.config.hydra.job.name)):
            params["name"] = name
        folder = params.pop("submitit_folder", f"{self.config.hydra.sweep.dir}/.submitit/%j")
        init = {f"{self.submitit}_max_num_timeout": params.pop("max_num_timeout")} \
            if "max_num_timeout" in params and self.submitit != "debug" else {}
        params.pop("max_num_timeout", None)
        executor = submitit.AutoExecutor(folder=folder, cluster=self.submitit, **init)
        executor.update_parameters(**{k if k in GENERIC else f"slurm_{k}": v for k, v in params.items()
                                      if k in GENERIC or self.submitit == "slurm"})
        return executor

    def _submit(self, jobs: list[tuple[int, DictConfig]], units: list[list[int]], alone: set[int]) -> list[JobReturn]:
        """Submit one job per unit (a group, or one job alone), wait for all, return the JobReturns in the
        sweep's order. A unit whose job left the queue without a result (cancelled, its node lost) returns
        COMPLETED JobReturns with no value, its runs recorded ``killed`` and said on one line (slurm_jobs.watch);
        one whose callable raised returns FAILED JobReturns carrying the error, which Hydra raises once every
        job has finished."""
        from . import slurm_jobs
        from .sweep_progress import report_summary

        self._rename = self.submitit == "slurm" and self.queue.get("name") in (None, str(self.config.hydra.job.name))
        executor = self._executor(slurm_jobs.array_name(
            [str(slurm_jobs.get(cfg, "benchmark.name") or "run") for _, cfg in jobs]))
        state = Singleton.get_state()
        self._submitter = _process()
        args = [("alone" if u[0] in alone else "group", [jobs[i] for i in u], state, k) for k, u in enumerate(units)]
        slurm_jobs.one_line_per_message()
        if self.submitit == "slurm":  # one sbatch: a job array (array_parallelism at once)
            with executor.batch():
                submitted = [executor.submit(self, *a) for a in args]
            log.info(f"Submitted {slurm_jobs.logs_line(submitted)}: one per group and one per job alone")
            ended = slurm_jobs.watch(submitted)
        else:
            submitted = [executor.submit(self, *a) for a in args]
            log.info(f"Submitted {len(submitted)} submitit '{self.submitit}' job(s), one per group and one per job "
                     f"alone: {' '.join(str(j.job_id) for j in submitted)} (logs: "
                     f"{' '.join(str(j.paths.stdout) for j in submitted[:2])}{' ...' if len(submitted) > 2 else ''})")
            ended = ((k, slurm_jobs.collect(j)) for k, j in enumerate(submitted))
        returns: list[JobReturn | None] = [None] * len(jobs)
        for k, end in ended:
            for i, r in zip(units[k], self._unit_returns(submitted[k], [jobs[i] for i in units[k]], end)):
                returns[i] = r
            if self.submitit != "debug":  # (debug: ran here, the job printed its runs' lines and summary)
                report_summary()
        return returns  # type: ignore[return-value]

    def _unit_returns(self, job: Any, unit: list[tuple[int, DictConfig]], end: Any) -> list[JobReturn]:
        """The JobReturns of one ended unit (slurm_jobs.Ended), each run's progress line printed."""
        from . import slurm_jobs
        from .sweep_progress import report, report_record

        if end.lost is not None:
            outs = [slurm_jobs.run_dir(cfg) for _, cfg in unit]
            statuses = [slurm_jobs.mark_killed(out, end.lost) for out in outs]
            said = [(slurm_jobs.swept(filter_overrides(list(cfg.hydra.overrides.task))), out, st)
                    for (_, cfg), out, st in zip(unit, outs, statuses)]
            print(slurm_jobs.lost_line(end.lost, said), file=sys.stderr, flush=True)
            for (_, cfg), st in zip(unit, statuses):
                report(list(cfg.hydra.overrides.task), st or "killed", None)
            return [_lost(cfg) for _, cfg in unit]
        if end.error is not None:
            log.error(f"submitit job {job.job_id} ({len(unit)} run(s)) failed: {slurm_jobs.first_line(end.error)}")
            rets = [_failed(cfg, end.error) for _, cfg in unit]
        else:
            rets = end.value
        for (_, cfg), r in zip(unit, rets):
            if self.submitit == "debug":
                continue  # ran here: the job already printed its runs' progress lines
            report_record(list(cfg.hydra.overrides.task), slurm_jobs.run_record(r),
                          "failed" if r.status == JobStatus.FAILED else None)
        return rets

    def __call__(self, kind: str, jobs: list[tuple[int, DictConfig]],
                 singleton_state: dict[Any, Any], unit: int | None = None) -> list[JobReturn]:
        """On the node: a group's preparation and batched training, or one job alone, as ``launch`` runs
        them without submitit. The configs come composed from the submitting process (with the sweep
        directory resolved there); a requeued job runs the same group again (``checkpoint``). ``unit``: the
        job's index in the sweep's array (its SLURM name ``mibench:<benchmark>:group<unit>``)."""
        from .slurm_jobs import job_name, one_line_per_message, rename_this_job

        assert self.config is not None and self.task_function is not None
        if _process() != getattr(self, "_submitter", None):  # (the debug executor runs jobs in the launching process)
            Singleton.set_state(singleton_state)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        one_line_per_message()
        if self._rename:
            rename_this_job(job_name(jobs[0][1], group=unit if kind == "group" else None))
        restarts = _restarts()
        log.info(f"{kind} of {len(jobs)} run(s): #{' #'.join(str(i) for i, _ in jobs)}"
                 + (f" (requeued: restart {restarts})" if restarts else ""))
        if kind == "alone":
            return [self._job(job, self.task_function) for job in jobs]
        return self._launch_group(jobs)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """On timeout or preemption (submitit's signal handler): resubmit the same group; its runs resume
        from their checkpoints (or are skipped when they completed)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _process() -> tuple[str, int]:
    import socket

    return socket.gethostname(), os.getpid()


def _restarts() -> int:
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def _failed(cfg: DictConfig, e: BaseException) -> JobReturn:
    return JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=cfg, task_name=str(cfg.hydra.job.name),
                     status=JobStatus.FAILED, _return_value=e)


def _lost(cfg: DictConfig) -> JobReturn:
    """A run whose job left the queue without a result: recorded killed and said; Hydra goes on (no value)."""
    return JobReturn(overrides=list(cfg.hydra.overrides.task), cfg=cfg, task_name=str(cfg.hydra.job.name),
                     status=JobStatus.COMPLETED, _return_value=None)


def _on_task_config(cfg: DictConfig, fn: Any) -> str | None:
    """``fn`` (group_key, why_alone) of a job's config without its ``hydra`` node."""
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    try:
        return fn(task_cfg)
    except Exception:  # noqa: BLE001 -- a config that does not even resolve runs alone and reports its error there
        return None


__all__ = ["VectorizedLauncher", "check_settings"]
