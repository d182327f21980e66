"""Vectorised sweeps through submitit (hydra/launcher=vectorized_slurm, docs/vectorized.md "On a SLURM
cluster"): the launcher plans the groups of hydra/launcher=vectorized, then submits ONE submitit job per
group (and one per job alone), each training its group on the node. Here with submitit's local executor
(no SLURM: a process per job) and, when a SLURM cluster is reachable (SLURM_CONF), on the real one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["dataset.batch_size=8", "dataset.mi_levels=[1,2]", "dataset.steps_per_level=5",
        "benchmark.plot=false", "logger=none", "trainer.enable_progress_bar=false", "hydra.launcher.progress=false"]
SWEEP = ["estimator=infonce,nwj", "dataset.dim=2"]  # one group of 2 runs


def _start(args: list[str], root: Path, sweep_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIBENCH_RUNS": str(root), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "mibench", "-m", *args, *TINY, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(p: subprocess.Popen, timeout: float) -> str:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError(f"sweep did not finish in {timeout} s:\n{out[-3000:]}") from None
    assert p.returncode == 0, out[-3000:]
    return out


def _runs(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/result.json")}


def _submitted_jobs(sweep_dir: Path) -> list[Path]:
    """The submitit job folders, one per submitted job (.submitit/%j: <job id>_0_log.out, ...)."""
    return sorted(p.parent for p in (sweep_dir / ".submitit").glob("*/*_0_log.out"))


def _check_same_as_local(sweep_dir: Path, local_dir: Path, n_runs: int, group_sizes: list[int]) -> None:
    runs, local = _runs(sweep_dir), _runs(local_dir)
    assert len(runs) == n_runs and set(runs) == set(local), (sorted(runs), sorted(local))
    assert sorted(r["vectorized"]["group_size"] for r in runs.values()) == sorted(group_sizes)
    for name, rec in runs.items():
        assert rec["status"] == "completed" and rec["steps_done"] == 10, (name, rec["status"])
        assert rec["vectorized"] == local[name]["vectorized"], name
        got, want = (sweep_dir / name / "steps.csv").read_bytes(), (local_dir / name / "steps.csv").read_bytes()
        assert got.count(b"\n") == 11 and got == want, f"{name}: steps.csv differs from the run under hydra/launcher=vectorized"
        for f in ("summary.csv", "config.yaml", ".hydra/overrides.yaml"):
            assert (sweep_dir / name / f).exists(), (name, f)


def test_one_submitit_job_per_group(tmp_path):
    """2 compatible runs through submitit's debug executor (the job runs in the launching process: the
    fast check; the local executor's processes are the slow test below): one submitted job trains them as
    one group, every run's records are complete and its steps.csv is byte-identical to the same sweep
    trained by hydra/launcher=vectorized (both sweeps run at once)."""
    sweep_dir, local_dir = tmp_path / "submitit", tmp_path / "local"
    sub = _start(["hydra/launcher=vectorized_slurm", "hydra.launcher.submitit=debug", *SWEEP], tmp_path / "runs_a",
                 sweep_dir)
    ref = _start(["hydra/launcher=vectorized", *SWEEP], tmp_path / "runs_b", local_dir)
    out = _finish(sub, 240)
    _finish(ref, 240)
    assert "1 vectorised group(s) of 2 runs, 0 alone" in out, out[-3000:]
    assert "Submitted 1 submitit 'debug' job(s)" in out, out[-3000:]
    assert len(_submitted_jobs(sweep_dir)) == 1
    assert out.count("] estimator=") == 2  # the sweep's progress lines, one per run, printed by the launcher
    _check_same_as_local(sweep_dir, local_dir, 2, [2] * 2)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.skipif(not os.environ.get("SLURM_CONF"), reason="a long end-to-end check: `make test-slurm` runs it "
                    "(the fast debug-executor test above covers the launcher in `make test`)")
def test_local_executor_one_process_per_group(tmp_path):
    """2 groups of 2 runs (two data dimensions) through submitit's local executor: 2 jobs, each a process
    that unpickles the launcher and trains its group (what a SLURM node does); the records and steps.csv
    equal the same sweep under hydra/launcher=vectorized."""
    sweep_dir, local_dir = tmp_path / "submitit", tmp_path / "local"
    sweep = [*SWEEP[:-1], "dataset.dim=2,3"]
    sub = _start(["hydra/launcher=vectorized_slurm", "hydra.launcher.submitit=local", "hydra.launcher.timeout_min=5",
                  *sweep], tmp_path / "runs_a", sweep_dir)
    ref = _start(["hydra/launcher=vectorized", *sweep], tmp_path / "runs_b", local_dir)
    out = _finish(sub, 300)
    _finish(ref, 300)
    assert "2 vectorised group(s) of 2, 2 runs, 0 alone" in out, out[-3000:]
    assert "Submitted 2 submitit 'local' job(s)" in out, out[-3000:]
    jobs = _submitted_jobs(sweep_dir)
    assert len(jobs) == 2 and all(list(j.glob("*_result.pkl")) for j in jobs), jobs
    _check_same_as_local(sweep_dir, local_dir, 4, [2] * 4)


def test_executor_parameters(tmp_path, monkeypatch):
    """hydra.launcher's SLURM keys (those of Hydra's submitit_slurm) reach sbatch: generic ones as submitit's
    shared parameters, the others as slurm_<key>, max_num_timeout to the executor; nodes > 1 is refused.

    Needs no SLURM: submitit's SlurmExecutor refuses to start where ``srun`` is not on PATH (its only look at
    the machine), so the test says srun is there; the job script is written, never submitted (``make
    test-slurm`` submits to a real SLURM: test_real_slurm_one_job_per_group)."""
    import submitit
    from omegaconf import OmegaConf

    from hydra_plugins.mibench_launcher.vectorized_launcher import VectorizedLauncher

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    launcher = VectorizedLauncher(submitit="slurm", submitit_folder=str(tmp_path / "%j"), partition="gpu",
                                  timeout_min=30, cpus_per_task=4, gpus_per_node=1, mem_gb=16, account="acc",
                                  qos="high", additional_parameters=OmegaConf.create({"mail-type": "END"}),
                                  signal_delay_s=90, max_num_timeout=7, array_parallelism=3, tasks_per_node=1)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    ex = launcher._executor()
    p = ex._executor.parameters
    assert (p["partition"], p["time"], p["cpus_per_task"], p["gpus_per_node"], p["mem"], p["account"], p["qos"],
            p["signal_delay_s"], p["array_parallelism"]) == ("gpu", 30, 4, 1, "16GB", "acc", "high", 90, 3)
    assert p["additional_parameters"] == {"mail-type": "END"} and ex._executor.max_num_timeout == 7
    script = ex._executor._make_submission_file_text("python -m mibench", "uid").splitlines()  # what sbatch reads
    for flag in ("partition=gpu", "time=30", "cpus-per-task=4", "gpus-per-node=1", "mem=16GB", "account=acc",
                 "qos=high", "signal=USR2@90", "mail-type=END", "ntasks-per-node=1"):
        assert f"#SBATCH --{flag}" in script, (flag, script)
    with pytest.raises(ValueError, match="one process"):
        VectorizedLauncher(submitit="slurm", nodes=2)
    with pytest.raises(ValueError, match="unknown key"):
        VectorizedLauncher(submitit="slurm", partion="gpu")


def _slurm_partition() -> str | None:
    if not os.environ.get("SLURM_CONF") or shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    parts = out.split()
    return next((p.rstrip("*") for p in parts if p.endswith("*")), parts[0] if parts else None)


@pytest.mark.slurm
@pytest.mark.slow
def test_real_slurm_one_job_per_group(tmp_path):
    """On a real SLURM (SLURM_CONF set, sinfo answers; tests/slurm/cluster.sh starts a one-node one):
    2 groups of 4 runs (two data dimensions) become 2 SLURM jobs; the runs' records and steps.csv equal
    the same sweep trained locally under hydra/launcher=vectorized."""
    partition = _slurm_partition()
    if partition is None:
        pytest.skip("no SLURM cluster (SLURM_CONF unset, or sinfo/sbatch missing or not answering)")
    sweep_dir, local_dir = tmp_path / "slurm", tmp_path / "local"
    sweep = [*SWEEP[:-1], "dataset.dim=2,3"]
    sub = _start(["hydra/launcher=vectorized_slurm", f"hydra.launcher.partition={partition}",
                  "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
                  *sweep], tmp_path / "runs_a", sweep_dir)
    ref = _start(["hydra/launcher=vectorized", *sweep], tmp_path / "runs_b", local_dir)
    _finish(ref, 600)
    out = _finish(sub, 600)
    assert "2 vectorised group(s) of 2, 2 runs, 0 alone" in out, out[-3000:]
    jobs = _submitted_jobs(sweep_dir)
    assert len(jobs) == 2 and all(list(j.glob("*_result.pkl")) for j in jobs), (jobs, out[-3000:])
    assert "Submitted 2 SLURM job(s)" in out, out[-3000:]
    _check_same_as_local(sweep_dir, local_dir, 4, [2] * 4)


def _configs(tmp_path: Path, n: int) -> list:
    from omegaconf import OmegaConf

    return [OmegaConf.create({"hydra": {"overrides": {"task": [f"seed={k}"]}, "job": {"name": "app"},
                                        "sweep": {"dir": str(tmp_path), "subdir": f"{k}_nwj_s{k}"}}})
            for k in range(n)]


def test_a_failed_job_fails_its_runs(tmp_path, monkeypatch):
    """A job whose callable raised makes each of its runs a FAILED JobReturn carrying the error, after the other
    jobs' results are in (Hydra raises it when it reads the result); a job that ended without any result
    (submitit's UncompletedJobError: cancelled, where sacct says so) is lost: its runs are recorded killed and
    the sweep goes on (COMPLETED, no value)."""
    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf
    from submitit.core.utils import UncompletedJobError

    from hydra_plugins.mibench_launcher.vectorized_launcher import VectorizedLauncher
    from mibench.records import write_record

    class Job:
        def __init__(self, fn, kind, jobs, state, unit):
            from submitit.core.utils import JobPaths

            self.job_id, self.jobs = f"j{jobs[0][0]}", jobs
            self.paths = JobPaths(tmp_path / "%j", job_id=self.job_id)

        def results(self):
            if self.jobs[0][0] == 0:
                raise RuntimeError("boom in the job")
            if self.jobs[0][0] == 2:
                raise UncompletedJobError("Job j2 has not produced any output (state: CANCELLED)")
            return [[JobReturn(overrides=[], cfg=c, status=JobStatus.COMPLETED, _return_value=1.5)
                     for _, c in self.jobs]]

    class Executor:
        folder = tmp_path

        def submit(self, fn, *args):
            return Job(fn, *args)

    launcher = VectorizedLauncher(submitit="local")
    launcher.config = OmegaConf.create({"hydra": {"job": {"name": "app"}}})
    monkeypatch.setattr(launcher, "_executor", lambda name=None: Executor())
    cfg = _configs(tmp_path, 4)
    (tmp_path / "2_nwj_s2").mkdir()
    write_record(tmp_path / "2_nwj_s2", {"status": "running"})
    rets = launcher._submit(list(enumerate(cfg)), [[0, 1], [2], [3]], alone={2, 3})
    assert [r.status for r in rets] == [JobStatus.FAILED, JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.COMPLETED]
    assert rets[3].return_value == 1.5 and rets[1].overrides == ["seed=1"] and rets[2].return_value is None
    with pytest.raises(RuntimeError, match="boom"):
        rets[0].return_value
    rec = json.loads((tmp_path / "2_nwj_s2" / "result.json").read_text())
    assert rec["status"] == "killed" and rec["error"].startswith("SLURM job j2 ended without a result"), rec


def test_a_group_job_that_leaves_the_queue_is_noticed(tmp_path, monkeypatch, capsys):
    """hydra.launcher.submitit=slurm: the group job 4_0 leaves the queue (a stub squeue stops listing it) without a
    result: within the poll interval and grace its runs' records say killed with the reason, one line names the
    job and its runs, and the launcher returns with the other job's result."""
    import pickle
    import time
    from contextlib import contextmanager

    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    from hydra_plugins.mibench_launcher import slurm_jobs
    from hydra_plugins.mibench_launcher.vectorized_launcher import VectorizedLauncher
    from mibench.records import write_record
    from test_slurm_jobs import FakeJob, stub

    stub(tmp_path / "bin", "squeue", "echo '4_1|RUNNING'\n")
    stub(tmp_path / "bin", "sacct", "exit 1\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(slurm_jobs, "POLL_S", 0.2)
    monkeypatch.setattr(slurm_jobs, "GRACE_S", 0.5)
    cfg = _configs(tmp_path, 3)
    for k in (0, 1):
        (tmp_path / f"{k}_nwj_s{k}").mkdir()
        write_record(tmp_path / f"{k}_nwj_s{k}", {"status": "running"})

    class Executor:
        folder = tmp_path
        submitted: list = []

        @contextmanager
        def batch(self):
            yield

        def submit(self, fn, kind, jobs, state, unit):
            job = FakeJob(tmp_path / ".submitit", f"4_{unit}")
            if unit == 1:
                job.paths.result_pickle.write_bytes(pickle.dumps(("success", [JobReturn(
                    overrides=[], cfg=c, status=JobStatus.COMPLETED, _return_value=2.5) for _, c in jobs])))
            return job

    launcher = VectorizedLauncher(submitit="slurm")
    launcher.config = OmegaConf.create({"hydra": {"job": {"name": "app"}}})
    monkeypatch.setattr(launcher, "_executor", lambda name=None: Executor())
    t0 = time.monotonic()
    rets = launcher._submit(list(enumerate(cfg)), [[0, 1], [2]], alone={2})
    took = time.monotonic() - t0
    assert took < 0.5 + 0.2 + 2, took
    assert [r.status for r in rets] == [JobStatus.COMPLETED] * 3 and [r.return_value for r in rets] == [None, None, 2.5]
    for k in (0, 1):
        rec = json.loads((tmp_path / f"{k}_nwj_s{k}" / "result.json").read_text())
        assert rec["status"] == "killed" and rec["error"] == "SLURM job 4_0 left the queue without a result", rec
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "left the queue" in ln]
    assert line.startswith("mibench: warning: SLURM job 4_0 left the queue without a result: seed=0 (0_nwj_s0: "
                           "marked killed); seed=1 (1_nwj_s1: marked killed); the other jobs go on"), line
