"""The rule for a run's CPU threads (mibench.threads)."""
import os

import pytest
from omegaconf import OmegaConf

from mibench.checks import ConfigError
from mibench.threads import available_cores, concurrent_runs, thread_rule

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}


# ----------------------------------------------------------------------------------------- the thread rule
@pytest.mark.parametrize("configured, env, cores, concurrent, want", [
    (None, {}, 8, 1, 8),                                                   # alone: every core
    (None, {}, 8, 4, 2),                                                   # joblib n_jobs=4: cores / 4
    (None, {}, 8, 3, 2),                                                   # rounded down
    (None, {}, 2, 4, 1),                                                   # at least 1
    (3, {"OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "2"}, 8, 4, 3),  # hardware.threads wins
    (None, {"OMP_NUM_THREADS": "5"}, 8, 4, 5),                             # torch honours OMP_NUM_THREADS: kept
    (None, {"OMP_NUM_THREADS": "6,2"}, 8, 1, 6),                           # OpenMP's nested form: the outer level
    (None, {"MKL_NUM_THREADS": "3"}, 8, 1, 3),                             # ... and MKL_NUM_THREADS
    (None, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "3"}, 8, 1, 2),     # OMP first, as torch reads them
    (None, {"OMP_NUM_THREADS": ""}, 8, 1, 8),                              # set but empty: not set
    (None, {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4"}, 64, 1, 4),   # a SLURM job: its CPUs
    (None, {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4"}, 64, 2, 2),   # joblib inside a SLURM job
    (None, {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "16"}, 8, 1, 8),   # no more than the cores it may use
    (None, {"SLURM_CPUS_PER_TASK": "4"}, 8, 1, 8),                         # not inside a job: ignored
    (None, {"SLURM_JOB_ID": "7"}, 8, 1, 8),                                # a job without --cpus-per-task
])
def test_thread_rule(configured, env, cores, concurrent, want):
    assert thread_rule(configured, env, cores, concurrent) == want


@pytest.mark.parametrize("configured, env, name", [
    (0, {}, "hardware.threads=0"), (True, {}, "hardware.threads=True"), ("2.5", {}, "hardware.threads='2.5'"),
    (None, {"OMP_NUM_THREADS": "many"}, "OMP_NUM_THREADS='many'"), (None, {"MKL_NUM_THREADS": "0"}, "MKL_NUM_THREADS='0'"),
    (None, {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "-1"}, "SLURM_CPUS_PER_TASK='-1'")])
def test_thread_rule_bad_values_are_one_line_errors(configured, env, name):
    with pytest.raises(ConfigError, match=f"^{name.replace('.', '[.]')} is invalid \\(valid: an integer >= 1\\)$"):
        thread_rule(configured, env, 8)


@pytest.mark.parametrize("launcher, cpus, want", [
    (None, 8, 1), ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8, 1),
    ({"_target_": "hydra_plugins.mibench_launcher.vectorized_launcher.VectorizedLauncher"}, 8, 1),
    ({**JOBLIB, "n_jobs": 4}, 8, 4), ({**JOBLIB, "n_jobs": 1}, 8, 1), ({**JOBLIB, "n_jobs": None}, 8, 1),
    ({**JOBLIB, "n_jobs": -1}, 8, 8), ({**JOBLIB, "n_jobs": -2}, 8, 7), ({**JOBLIB, "n_jobs": -16}, 8, 1)])
def test_concurrent_runs_follow_the_launcher(launcher, cpus, want):
    cfg = None if launcher is None else OmegaConf.create(launcher)
    assert concurrent_runs(cfg, cpus) == want


def test_available_cores_count_hyperthread_siblings_once(tmp_path):
    for cpu, siblings in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3", 4: "4"}.items():
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert available_cores([0, 1, 2, 3, 4], tmp_path) == 3
    assert available_cores([0, 2], tmp_path) == 1
    assert available_cores([0, 9], tmp_path) == 2  # a topology it cannot read: the CPUs
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
