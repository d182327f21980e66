"""``hardware=slurm_gpu`` / ``slurm_cpu``: Hydra's submitit SLURM launcher, with what a person watching needs.

The same launcher as ``hydra/launcher=submitit_slurm`` (same keys, one sbatch job array, one run per job,
requeue on timeout or preemption), and:

- each job's name in squeue is ``mibench:<benchmark>:<estimator>:s<seed>`` once it runs (the array's pending
  tasks show ``mibench:<benchmark>``), unless ``hydra.launcher.name`` is set to something else;
- the launcher logs the job ids and their log files with the ids in the paths;
- it waits in :func:`.slurm_jobs.watch`: a job that leaves the queue without a result (``scancel``, a lost
  node) is noticed within a minute, its run's record is marked ``killed`` with the reason, one line says so,
  and the other jobs are waited for; each finished job prints its line ``[k/N done, f failed] ...``;
- in the job, each submitit message is written once to its log (not twice).

``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml: Hydra's ``submitit_slurm`` config, this class as its
``_target_``), which the hardware presets choose (conf/hardware/slurm_*.yaml).
(Hydra scans this module on every start: it imports nothing heavy.)
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as HydraSlurmLauncher
from omegaconf import open_dict

log = logging.getLogger(__name__)


class SlurmLauncher(HydraSlurmLauncher):
    """Hydra's ``submitit_slurm`` launcher with job names, expanded log paths and lost-job detection."""

    rename = False  # whether each job renames itself when it starts (set at launch, pickled with the launcher)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit one array task per job, as Hydra's launcher does, then wait for them in slurm_jobs.watch and
        return their JobReturns in the sweep's order."""
        from . import slurm_jobs

        assert self.config is not None and self.hydra_context is not None
        executor = self._executor(job_overrides)
        sweep_dir = self._sweep_dir()
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        job_params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        slurm_jobs.one_line_per_message()
        jobs = executor.map_array(self, *zip(*job_params))
        log.info(f"Submitted {slurm_jobs.logs_line(jobs)}")
        returns: List[JobReturn | None] = [None] * len(jobs)
        from .sweep_progress import report_summary

        for k, ended in slurm_jobs.watch(jobs):
            returns[k] = self._ended(str(jobs[k].job_id), ended, list(job_overrides[k]), initial_job_idx + k)
            report_summary()  # the sweep's [sweep] line (at most every 10 s, and after the last job)
        return returns  # type: ignore[return-value]

    def _executor(self, job_overrides: Sequence[Sequence[str]]) -> Any:
        """submitit's SLURM executor with the launcher's keys, as Hydra's launcher sets them; the job array named
        ``mibench:<benchmark>`` unless ``hydra.launcher.name`` is the user's own."""
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        from .slurm_jobs import array_name, swept_benchmarks

        assert self.config is not None
        params = dict(self.params)
        self.rename = params.get("name") in (None, str(self.config.hydra.job.name))
        if self.rename:
            params["name"] = array_name(swept_benchmarks(job_overrides, str(self.config.benchmark.name)))
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor

    def _sweep_dir(self) -> Path:
        """The sweep directory, made (with ``hydra.sweep.mode`` when set), as Hydra's launcher makes it."""
        import os

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        return sweep_dir

    def _ended(self, job_id: str, ended: Any, overrides: List[str], idx: int) -> JobReturn:
        """The JobReturn of an ended job (slurm_jobs.Ended), its line printed: the job's own; for a lost job a
        COMPLETED one with no value (its run is recorded killed; Hydra goes on with the sweep); for a job whose
        code raised, a FAILED one carrying the error (Hydra raises it once every job has ended)."""
        from .slurm_jobs import first_line, lost_line, mark_killed, run_dir, run_record, swept
        from .sweep_progress import report, report_record

        if ended.lost is not None:
            out = run_dir(self._job_config(overrides, idx))
            status = mark_killed(out, ended.lost)
            print(lost_line(ended.lost, [(swept(filter_overrides(overrides)), out, status)]), file=sys.stderr,
                  flush=True)
            report(overrides, status or "killed", None)
            return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None)
        if ended.error is not None:
            log.error(f"SLURM job {job_id} failed: {first_line(ended.error)}")
            report(overrides, "failed", None)
            return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=ended.error)
        ret: JobReturn = ended.value
        report_record(overrides, run_record(ret), "failed" if ret.status == JobStatus.FAILED else None)  # (all attempts)
        return ret

    def _job_config(self, overrides: List[str], idx: int) -> Any:
        """Job ``idx``'s composed config as its node composed it (for its run directory); None if it fails."""
        assert self.hydra_context is not None and self.config is not None
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg):
                cfg.hydra.job.num = idx
            return cfg
        except Exception:  # noqa: BLE001 -- the line then names the job without its directory
            return None

    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Dict[type, Singleton]) -> JobReturn:
        """On the node: the job under its own name, submitit's messages once each, then Hydra's job."""
        import submitit

        from .slurm_jobs import job_name, one_line_per_message, rename_this_job

        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        one_line_per_message()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        if self.rename:
            rename_this_job(job_name(sweep_config))
        return run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                       job_dir_key=job_dir_key, job_subdir_key="hydra.sweep.subdir")


__all__ = ["SlurmLauncher"]

