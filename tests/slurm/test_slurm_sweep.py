"""A real SLURM sweep: ``make test-slurm`` (tests/slurm/cluster.sh starts a one-node SLURM on localhost).

Not part of ``make test`` (pyproject's norecursedirs leaves tests/slurm out; the tests also skip without
SLURM_CONF). A 2-job staircase sweep through Hydra's submitit launcher with ``hardware=slurm_cpu``: both
jobs complete, and each one's steps.csv is byte-identical to the same run executed locally without SLURM.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None,
                       reason="no SLURM cluster (SLURM_CONF unset or sbatch missing): run `make test-slurm`"),
]

ESTIMATORS = ("infonce", "nwj")
TINY = ["hardware=slurm_cpu", "hardware.threads=1", "dataset.dim=2", "dataset.batch_size=8", "dataset.mi_levels=[1,2]",
        "dataset.steps_per_level=50", "benchmark.plot=false", "logger=none"]


def partition() -> str:
    """SLURM_TEST_PARTITION, else the cluster's default partition (sinfo marks it with *)."""
    if p := os.environ.get("SLURM_TEST_PARTITION"):
        return p
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout.split()
    return next((p.rstrip("*") for p in out if p.endswith("*")), out[0])


def mibench(args: list[str], runs: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIBENCH_RUNS": str(runs)}
    return subprocess.Popen([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sweep_on_slurm_matches_local_runs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep = mibench(["-m", "hydra/launcher=submitit_slurm", *TINY, f"estimator={','.join(ESTIMATORS)}",
                     f"hydra.launcher.partition={partition()}", "hydra.launcher.cpus_per_task=1",
                     "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}"],
                    runs=tmp_path / "runs")
    local = {}
    for est in ESTIMATORS:  # the same runs without SLURM, while the sweep's jobs run
        local[est] = tmp_path / f"local_{est}"
        p = mibench([*TINY, f"estimator={est}", f"hydra.run.dir={local[est]}"], runs=tmp_path / "runs")
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out
    assert "Bypassing sacct error" not in out, out  # sacct_quiet: at most one line about sacct
    assert out.count("SLURM accounting (sacct) unavailable") <= 1, out
    assert out.count("Slurm accounting storage is disabled") <= 1, out  # sacct's own stderr, once

    submitit = sweep_dir / ".submitit"
    assert list(submitit.glob("*/*_result.pkl")), f"no submitit job results under {submitit}"
    for n, est in enumerate(ESTIMATORS):
        job = sweep_dir / f"{n}_{est}_s0"
        record = json.loads((job / "result.json").read_text())
        assert record["status"] == "completed", (est, record["status"])
        assert record["hardware"] == "slurm_cpu"
        ref = json.loads((local[est] / "result.json").read_text())
        assert ref["status"] == "completed", (est, ref["status"])
        a, b = (job / "steps.csv").read_bytes(), (local[est] / "steps.csv").read_bytes()
        assert a.count(b"\n") == 101 and a == b, f"{est}: steps.csv differs between SLURM and the local run"


# jobs that need ~150 s of training (2 levels of STEPS_PER_LEVEL at ~190 steps/s) under a 2-minute limit.
# SLURM sends SIGUSR2 (signal_delay_s=30 before the limit) early: slurmctld checks on a coarse tick, and
# here it came 30-60 s before the time asked for, so an attempt trains ~40-80 s (~7 s go to start-up)
# and each job needs 2-3 allocations. (With a 1-minute limit the signal can come before Python has
# started, killing the job before submitit can requeue it: seen once, exit 140.)
LONG_STEPS = int(os.environ.get("SLURM_TEST_STEPS", "14000"))
LONG = [*TINY[:-2], f"dataset.steps_per_level={LONG_STEPS}", "benchmark.plot=false", "logger=none"]


def _training_job(sweep_dir: Path, name: str, after_s: int = 10) -> str | None:
    """The SLURM id of the sweep's job whose run directory is ``name``, once it has run ``after_s`` seconds
    (past mibench's start-up: its run record says running)."""
    rec = sweep_dir / name / "result.json"
    if not rec.exists() or json.loads(rec.read_text()).get("status") != "running":
        return None
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %M"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        jid, used = line.split()
        if jid.endswith("_0") and int(used.split(":")[-1]) + 60 * int(used.split(":")[-2]) >= after_s:
            return jid  # array task 0 is job 0
    return None


def test_jobs_past_their_time_limit_and_preempted_resume_to_the_local_numbers(tmp_path):
    """Each job needs 2-3 times its time limit: SLURM signals it, it checkpoints, submitit requeues it and it
    resumes from the checkpoint, again and again; job 0 is also requeued once by ``scontrol requeue`` (what a
    preemption with PreemptMode=REQUEUE does: SIGTERM, then requeue). Every job completes with the numbers
    of an uninterrupted local run and its record counts both kinds of interruption."""
    import time

    sweep_dir = tmp_path / "sweep"
    sweep = mibench(["-m", "hydra/launcher=submitit_slurm", *LONG, f"estimator={','.join(ESTIMATORS)}",
                     f"hydra.launcher.partition={partition()}", "hydra.launcher.cpus_per_task=1",
                     "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
                     "hydra.launcher.max_num_timeout=30", f"hydra.sweep.dir={sweep_dir}"], runs=tmp_path / "runs")
    t0 = time.monotonic()
    preempted = None
    while preempted is None and time.monotonic() - t0 < 240 and sweep.poll() is None:
        jid = _training_job(sweep_dir, f"0_{ESTIMATORS[0]}_s0")
        if jid is not None and time.monotonic() - t0 > 60:  # (after a time-limit requeue or two)
            subprocess.run(["scontrol", "requeue", jid], check=True)
            preempted = jid
        time.sleep(1)
    local = {}
    for est in ESTIMATORS:  # the same runs without SLURM
        local[est] = tmp_path / f"local_{est}"
        p = mibench([*LONG, f"estimator={est}", f"hydra.run.dir={local[est]}"], runs=tmp_path / "runs")
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out
    idle = 0  # submitit sees a job end only through its result file (no sacct): fail rather than wait forever
    while sweep.poll() is None and idle < 120:
        queued = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.strip()
        idle = 0 if queued else idle + 5
        time.sleep(5)
    if sweep.poll() is None:
        sweep.kill()
        pytest.fail(f"the sweep's jobs left the queue without results: see {sweep_dir / '.submitit'}")
    out, _ = sweep.communicate(timeout=60)
    wall = time.monotonic() - t0
    assert sweep.returncode == 0, out
    print(f"\nrequeue sweep: {wall:.0f} s wall, {2 * LONG_STEPS} steps a job, scontrol requeue of {preempted}")
    for n, est in enumerate(ESTIMATORS):
        job = sweep_dir / f"{n}_{est}_s0"
        rec = json.loads((job / "result.json").read_text())
        print(f"  {est}: {rec['status']}, {rec.get('interruption_counts')}, slurm {rec.get('slurm')}, "
              f"wall {rec['wall_time_s']} s (last attempt)")
        assert rec["status"] == "completed" and rec["resumed"] is True, (est, rec["status"])
        assert rec["slurm"]["restart_count"] >= 1  # needed more than one allocation
        assert rec["interruption_counts"]["time_limit"] >= 1
        if n == 0 and preempted is not None:
            assert rec["interruption_counts"]["preemption"] >= 1, rec["interruptions"]
        assert not (job / "checkpoint.pt").exists()
        assert (job / "steps.csv").read_bytes() == (local[est] / "steps.csv").read_bytes(), est
        assert (job / "summary.csv").read_bytes() == (local[est] / "summary.csv").read_bytes(), est
