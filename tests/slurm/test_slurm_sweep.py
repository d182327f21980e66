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


# The interrupted jobs: 4 levels of LONG_STEPS steps (~10 s a level at ~300 steps/s on a busy 2-core machine)
# under a 2-minute limit with signal_delay_s=30. The test causes the events itself, each at a point where the
# job is training and has a level or more left, so they happen on a fast machine as on a slow one:
#   time limit: once the job's first attempt has streamed a level (its training loop, and with it mibench's
#     signal handlers, runs), `scancel --signal=USR2` -- what SLURM sends signal_delay_s before the limit. With
#     a 2-minute limit every SIGUSR2 is within signal_delay_s + 90 s of it: mibench counts the time limit and
#     submitit requeues the job as timed out (mibench/cluster.py, submitit's has_timed_out).
#   preemption (job 0): once the requeued job has streamed a level more, `scontrol requeue` (what a preemption
#     with PreemptMode=REQUEUE does: SIGTERM, then the requeue).
# SLURM's own SIGUSR2 (30-60 s early on this cluster's coarse tick) adds time-limit requeues on a slow machine.
# (With a 1-minute limit it can come before Python has started, killing the job before submitit can
# requeue it: seen once, exit 140.) SLURM_TEST_STEPS sets the steps per level.
LONG_STEPS = int(os.environ.get("SLURM_TEST_STEPS", "3000"))
LONG_LEVELS = 4
LONG = [*TINY[:4], f"dataset.mi_levels=[{','.join(str(k + 1) for k in range(LONG_LEVELS))}]",
        f"dataset.steps_per_level={LONG_STEPS}", "benchmark.plot=false", "logger=none"]


def _running_job(n: int) -> str | None:
    """The SLURM id of the sweep's job ``n`` (array task n) while it runs, else None."""
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i"], capture_output=True, text=True).stdout
    return next((jid for jid in out.split() if jid.endswith(f"_{n}")), None)


def _streamed_rows(run: Path) -> int:
    """The steps a run has streamed to steps.csv.partial (the staircase writes a level's rows at its end; a
    read while they are written sees part of them)."""
    try:
        return max(0, (run / "steps.csv.partial").read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def _interrupt_each_job(sweep: subprocess.Popen, runs: list[Path], events: list[list[str]],
                        deadline_s: float = 600) -> list[str]:
    """Deliver to job n the events ``events[n]`` in order ("time_limit": SIGUSR2, "preemption": ``scontrol
    requeue``), each once the job's current attempt has streamed rows (a level ended: it trains) and has a
    level left; an event the job's record already counts (SLURM's own SIGUSR2) is not sent. Returns what
    was sent."""
    import time

    total, sent_log = LONG_LEVELS * LONG_STEPS, []
    todo = [list(e) for e in events]
    base = [0] * len(runs)  # rows streamed when the job was last interrupted: a resumed attempt starts from those
    sent: list[str | None] = [None] * len(runs)
    t0 = time.monotonic()
    while any(todo) and sweep.poll() is None:
        assert time.monotonic() - t0 < deadline_s, f"events not delivered in {deadline_s} s: {todo} ({sent_log})"
        for n, run in enumerate(runs):
            try:
                rec = json.loads((run / "result.json").read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if rec["status"] == "interrupted":  # handled: the job checkpointed, submitit or SLURM requeues it
                todo[n] = [k for k in todo[n] if not rec["interruption_counts"].get(k)]
                base[n], sent[n] = _streamed_rows(run), None
                continue
            assert rec["status"] == "running" or not todo[n], \
                f"job {n} ended ({rec['status']}) before it got {todo[n]}: raise SLURM_TEST_STEPS ({LONG_STEPS})"
            rows = _streamed_rows(run)
            if not todo[n] or sent[n] or rec["status"] != "running" or not base[n] < rows < total:
                continue
            jid = _running_job(n)
            if jid is None:
                continue
            cmd = ["scancel", "--signal=USR2", jid] if todo[n][0] == "time_limit" else ["scontrol", "requeue", jid]
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                sent[n] = todo[n][0]
                sent_log.append(f"{' '.join(cmd)} at step {rows} (+{time.monotonic() - t0:.0f} s)")
        time.sleep(0.2)
    return sent_log


def test_jobs_past_their_time_limit_and_preempted_resume_to_the_local_numbers(tmp_path):
    """Each job is stopped as at its time limit (SIGUSR2, signal_delay_s before it) mid-run: it checkpoints,
    submitit requeues it and it resumes from the checkpoint; job 0 is then also preempted (``scontrol
    requeue``: SIGTERM, then SLURM requeues it). Every job completes with the numbers of an uninterrupted
    local run and its record counts each kind of interruption."""
    import time

    sweep_dir = tmp_path / "sweep"
    sweep = mibench(["-m", "hydra/launcher=submitit_slurm", *LONG, f"estimator={','.join(ESTIMATORS)}",
                     f"hydra.launcher.partition={partition()}", "hydra.launcher.cpus_per_task=1",
                     "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
                     "hydra.launcher.max_num_timeout=30", f"hydra.sweep.dir={sweep_dir}"], runs=tmp_path / "runs")
    t0 = time.monotonic()
    jobs = [sweep_dir / f"{n}_{est}_s0" for n, est in enumerate(ESTIMATORS)]
    try:
        sent = _interrupt_each_job(sweep, jobs, [["time_limit", "preemption"]] + [["time_limit"]] * (len(jobs) - 1))
    except BaseException:
        sweep.kill()
        raise
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
    print(f"\nrequeue sweep: {wall:.0f} s wall, {LONG_LEVELS * LONG_STEPS} steps a job; sent: " + "; ".join(sent))
    for n, (est, job) in enumerate(zip(ESTIMATORS, jobs)):
        rec = json.loads((job / "result.json").read_text())
        print(f"  {est}: {rec['status']}, {rec.get('interruption_counts')}, slurm {rec.get('slurm')}, "
              f"wall {rec['wall_time_s']} s (last attempt)")
        assert rec["status"] == "completed" and rec["resumed"] is True, (est, rec["status"])
        assert rec["slurm"]["restart_count"] >= 1  # needed more than one allocation
        counts = rec["interruption_counts"]
        assert counts["time_limit"] >= 1 and (counts["preemption"] >= 1) == (n == 0), (est, rec["interruptions"])
        assert {(e["kind"], e["signal"]) for e in rec["interruptions"]} \
            == {("time_limit", "SIGUSR2"), *([("preemption", "SIGTERM")] if n == 0 else [])}, rec["interruptions"]
        assert not (job / "checkpoint.pt").exists()
        assert (job / "steps.csv").read_bytes() == (local[est] / "steps.csv").read_bytes(), est
        assert (job / "summary.csv").read_bytes() == (local[est] / "summary.csv").read_bytes(), est
