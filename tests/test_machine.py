"""The compute environment in result.json (``machine``) and the rule for a run's CPU threads (mibench.threads)."""
import json
import os
import platform

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mibench import app, estimate
from mibench import records as rec_mod
from mibench.benchmarks.staircase import Staircase
from mibench.checks import ConfigError
from mibench.compose import compose_config
from mibench.records import iter_records
from mibench.threads import available_cores, concurrent_runs, thread_rule

from test_cli import mibench

TINY = ["dataset.steps_per_level=5", "dataset.mi_levels=[2]", "dataset.dim=2", "dataset.batch_size=8", "logger=none",
        "trainer.enable_progress_bar=false", "benchmark.plot=false"]
ONEHOT = ["benchmark=onehot", "estimator=nwj", "benchmark.steps=4", "dataset.batch_size=8", "dataset.n_classes=4", "logger=none",
          "trainer.enable_progress_bar=false", "benchmark.plot=false"]
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


# ----------------------------------------------------------------------------------------- the record
def test_machine_record_matches_torch(tmp_path, monkeypatch):
    seen = []
    step = Staircase.step

    def spy(self, batch):
        seen.append(torch.get_num_threads())
        return step(self, batch)

    monkeypatch.setattr(Staircase, "step", spy)
    cfg = compose_config(TINY, out_dir=tmp_path)
    app.run(cfg, echo=False)
    m = json.loads((tmp_path / "result.json").read_text())["machine"]
    assert set(seen) == {m["threads"]} and m["threads"] == torch.get_num_threads()
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["torch"] == str(torch.__version__) and m["platform"] == platform.machine() and m["device"] == "cpu"
    assert m["cpu"] == rec_mod.cpu_name() and m["blas"] and m["lapack"]
    if torch.backends.mkl.is_available():
        assert m["blas"].startswith("mkl ") and m["lapack"] == "mkl"
    assert m["env"] == {k: os.environ[k] for k in rec_mod.MACHINE_ENV if k in os.environ}


def test_machine_records_the_threads_training_used(tmp_path):
    """The one-hot task trains on one thread whatever the process's setting: the record says 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        app.run(compose_config(ONEHOT, out_dir=tmp_path), echo=False)
    finally:
        torch.set_num_threads(before)
    assert json.loads((tmp_path / "result.json").read_text())["machine"]["threads"] == 1


def test_vectorised_group_records_its_machine(tmp_path):
    preps = [app.prepare(compose_config(TINY + [f"seed={s}"], out_dir=tmp_path / f"s{s}"), echo=False)
             for s in (0, 1)]
    results = app.run_group(preps)
    assert not any(isinstance(r, Exception) for r in results)
    for s in (0, 1):
        rec = json.loads((tmp_path / f"s{s}" / "result.json").read_text())
        assert rec["vectorized"] == {"group_size": 2}
        assert rec["machine"] == rec_mod.machine(preps[0].cfg, torch.get_num_threads())


def test_api_records_its_machine():
    x, noise = np.random.default_rng(0).normal(size=(2, 200, 2))
    r = estimate(x, x + noise, steps=20, overrides=["benchmark.batch_size=32", "benchmark.eval_every=10"])
    assert r.record["machine"]["threads"] == torch.get_num_threads()
    assert r.record["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_cuda_device_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Fake GPU")
    assert rec_mod.machine(OmegaConf.create({"hardware": {"accelerator": "gpu"}}), 4)["device"] == "Fake GPU"
    assert rec_mod.machine(OmegaConf.create({"hardware": {"accelerator": "cpu"}}), 4)["device"] == "cpu"


@pytest.mark.slow
def test_fresh_process_records_aten_default_and_the_rules_threads(runs_dir):
    """A CLI run in its own process, ATEN_CPU_CAPABILITY=default and no thread variables: the record says DEFAULT
    kernels and the thread count of the rule (the cores this process may use, one run at a time)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
           and not k.startswith("SLURM_")}
    env["ATEN_CPU_CAPABILITY"] = "default"
    p = mibench(*TINY, runs=runs_dir, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    ((_, rec),) = iter_records(runs_dir)
    m = rec["machine"]
    assert m["cpu_capability"] == "DEFAULT" and m["env"] == {k: env[k] for k in rec_mod.MACHINE_ENV if k in env}
    assert m["threads"] == thread_rule(None, env, available_cores(), 1)
