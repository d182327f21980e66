"""A real SLURM sweep: ``make test-slurm`` (tests/slurm/cluster.sh starts a one-node SLURM on localhost).

Not part of ``make test`` (pyproject's norecursedirs leaves tests/slurm out; the tests also skip without
SLURM_CONF). A 2-job staircase sweep through mibench's SLURM launcher (``hardware=slurm_cpu``: Hydra's submitit
launcher, subclassed): both jobs complete, and each one's steps.csv is byte-identical to the same run executed
locally without SLURM (``hardware=cpu``). Jobs stopped at their time limit and preempted resume to the same numbers.
A job cancelled mid-run (``scancel``) is noticed within a minute under both SLURM launchers, its run recorded
``killed``; the preflight refuses a sweep when the controller is down.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
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


def here(args: list[str]) -> list[str]:
    """The same run trained here: ``hardware=cpu`` (hardware=slurm_* without -m is refused: it would train here)."""
    return ["hardware=cpu" if a == "hardware=slurm_cpu" else a for a in args]


def mibench(args: list[str], runs: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIBENCH_RUNS": str(runs)}
    return subprocess.Popen([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sweep_on_slurm_matches_local_runs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep = mibench(["-m", *TINY, f"estimator={','.join(ESTIMATORS)}",
                     f"hydra.launcher.partition={partition()}", "hydra.launcher.cpus_per_task=1",
                     "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}"],
                    runs=tmp_path / "runs")
    local = {}
    for est in ESTIMATORS:  # the same runs without SLURM, while the sweep's jobs run
        local[est] = tmp_path / f"local_{est}"
        p = mibench([*here(TINY), f"estimator={est}", f"hydra.run.dir={local[est]}"], runs=tmp_path / "runs")
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out
    assert "Bypassing sacct error" not in out, out  # sacct_quiet: at most one line about sacct
    assert out.count("SLURM accounting (sacct) unavailable") <= 1, out
    assert out.count("Slurm accounting storage is disabled") <= 1, out  # sacct's own stderr, once
    assert "%j" not in out and "/.submitit/" in out, out  # the log paths, with the job ids
    for est in ESTIMATORS:
        assert f"estimator={est} -> completed" in out, out  # one line per finished job

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
    sweep = mibench(["-m", *LONG, f"estimator={','.join(ESTIMATORS)}",
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
        p = mibench([*here(LONG), f"estimator={est}", f"hydra.run.dir={local[est]}"], runs=tmp_path / "runs")
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


def _sweep_lines(sweep: subprocess.Popen, lines: list[tuple[float, str]]) -> "threading.Thread":
    """Read the sweep's output in a thread: (time.monotonic(), line) into ``lines`` as each line comes."""
    import threading
    import time

    def read() -> None:
        for line in sweep.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("launcher", ["slurm", "vectorized_slurm"])
def test_a_cancelled_job_is_noticed_within_a_minute(tmp_path, launcher):
    """Job 1 (a run of a million steps a level) is cancelled with ``scancel`` while it trains; this cluster keeps no
    accounting, so only squeue can tell. The launcher prints one line naming the job and its run within a minute,
    the run's record says killed with the reason, job 0 completes, and the sweep ends (exit 0). While job 1 ran,
    squeue showed it under its own name."""
    import time

    sweep_dir = tmp_path / "sweep"
    extra = ["hydra/launcher=vectorized_slurm", "hydra.launcher.progress=false"] if launcher == "vectorized_slurm" else []
    # two jobs: the two step counts never share a vectorised group, so under vectorized_slurm each is a job alone
    args = ["-m", *TINY[:3], "dataset.batch_size=8", "dataset.mi_levels=[1,2]", "dataset.steps_per_level=20,1000000",
            "benchmark.plot=false", "logger=none", *extra, f"hydra.launcher.partition={partition()}",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
            f"hydra.sweep.dir={sweep_dir}"]
    lines: list[tuple[float, str]] = []
    sweep = mibench(args, runs=tmp_path / "runs")
    reader = _sweep_lines(sweep, lines)
    run1 = next(iter(sorted(sweep_dir.glob("1_*"))), None)
    t0 = time.monotonic()
    jid = names = None
    try:
        while time.monotonic() - t0 < 300:
            run1 = next(iter(sorted(sweep_dir.glob("1_*"))), None)
            rec = json.loads((run1 / "result.json").read_text()) if run1 and (run1 / "result.json").exists() else None
            jid = _running_job(1)
            if rec and rec.get("status") == "running" and jid:
                break
            assert sweep.poll() is None, "\n".join(ln for _, ln in lines)[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("job 1 did not start training in 300 s:\n" + "\n".join(ln for _, ln in lines)[-3000:])
        names = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True).stdout
        subprocess.run(["scancel", jid], check=True)
        cancelled = time.monotonic()
        sweep.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    out = "\n".join(ln for _, ln in lines)
    assert sweep.returncode == 0, out[-3000:]
    said = [(t, ln) for t, ln in lines if "without a result" in ln]
    assert len(said) == 1, out[-3000:]
    noticed = said[0][0] - cancelled
    print(f"\n{launcher}: scancel {jid} -> the launcher's line after {noticed:.1f} s; squeue showed: "
          f"{' | '.join(names.split(chr(10))[:3])}\n  {said[0][1]}")
    assert noticed < 60, noticed
    assert f"SLURM job {jid} " in said[0][1] and "marked killed" in said[0][1], said
    rec = json.loads((run1 / "result.json").read_text())
    assert rec["status"] == "killed" and rec["error"].startswith(f"SLURM job {jid} "), rec
    run0 = next(iter(sorted(sweep_dir.glob("0_*"))))
    assert json.loads((run0 / "result.json").read_text())["status"] == "completed"
    expected = "mibench:staircase:infonce:s0"  # the running job's own name (the array's: mibench:staircase)
    assert f"{jid} {expected}" in names, names


def test_preflight_with_the_controller_down(tmp_path):
    """SLURM_CONF naming a controller that does not answer (this cluster's configuration on a port where nothing
    listens): one line, exit 2, no sweep directory."""
    conf = Path(os.environ["SLURM_CONF"]).read_text()
    import re

    down = tmp_path / "slurm.conf"
    down.write_text(re.sub(r"SlurmctldPort=\d+", "SlurmctldPort=6999", conf))
    env = {**os.environ, "SLURM_CONF": str(down), "MIBENCH_RUNS": str(tmp_path / "runs")}
    p = subprocess.run([sys.executable, "-m", "mibench", "-m", *TINY, "seed=0,1"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    print(f"\ncontroller down: exit {p.returncode}: {p.stderr.strip()}")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("mibench: error: SLURM: the controller is not reachable (scontrol ping: "), p.stderr
    assert not (tmp_path / "runs").exists()


def test_cancelled_jobs_continue_with_resume_true_in_their_sweep_dir(tmp_path):
    """Issue 27: both jobs of a sweep in an explicit hydra.sweep.dir are lost for good once each has streamed a level:
    job 0 to ``scancel`` (SIGTERM: it checkpoints at the next step and ends, ``interrupted``), job 1's process to
    SIGKILL (as the out-of-memory killer: no record written, it stays ``running``). The launcher sees both jobs leave
    the queue and records them ``killed`` (counting job 1's kill, not job 0's signal twice), the sweep ends, and
    ``mibench status`` shows both; the same command with resume=true continues both in the sweep directory to the
    bytes of local runs, counting each interruption once and both attempts' time."""
    import time

    sweep_dir = tmp_path / "sweep"
    cmd = ["-m", *LONG, f"estimator={','.join(ESTIMATORS)}",
           f"hydra.launcher.partition={partition()}", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
           "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}"]
    jobs = [sweep_dir / f"{n}_{est}_s0" for n, est in enumerate(ESTIMATORS)]

    def stop(n: int, jid: str, run: Path) -> str:
        """Job 0: ``scancel`` (SIGTERM to its processes, SIGKILL 10 s later: KillWait); job 1: SIGKILL to mibench's
        process (its pid in its record), which ``scancel --signal=KILL --full`` does not do: ending the batch
        shell first, SLURM sends the step SIGTERM."""
        if n == 0:
            return "scancel " + jid if subprocess.run(["scancel", jid], capture_output=True).returncode == 0 else ""
        os.kill(json.loads((run / "result.json").read_text())["pid"], signal.SIGKILL)
        return f"kill -9 (job {jid})"

    sweep = mibench(cmd, runs=tmp_path / "runs")
    t0, cancelled, sent = time.monotonic(), [None] * len(jobs), []
    try:
        while not all(cancelled):
            assert time.monotonic() - t0 < 600 and sweep.poll() is None, f"jobs not cancelled in 600 s ({sent})"
            for n, run in enumerate(jobs):
                rows = _streamed_rows(run)
                if cancelled[n] or not LONG_STEPS <= rows < LONG_LEVELS * LONG_STEPS or (jid := _running_job(n)) is None:
                    continue
                if what := stop(n, jid, run):
                    cancelled[n] = jid
                    sent.append(f"{what} at step {rows} (+{time.monotonic() - t0:.0f} s)")
            time.sleep(0.5)
        out, _ = sweep.communicate(timeout=300)  # the launcher notices the lost jobs and ends the sweep
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 0 and out.count("without a result") == 2, out[-3000:]
    records = [json.loads((j / "result.json").read_text()) for j in jobs]
    assert [r["status"] for r in records] == ["killed", "killed"], [r["status"] for r in records]
    assert records[0]["interruption_counts"] == {"time_limit": 0, "preemption": 1, "killed": 0}, records[0]
    assert records[1]["interruption_counts"] == {"time_limit": 0, "preemption": 0, "killed": 1}, records[1]
    status = mibench(["status", str(sweep_dir)], runs=tmp_path / "runs")
    table, _ = status.communicate(timeout=120)
    assert status.returncode == 0 and all(re.search(rf"^{j.name} +killed ", table, re.M) for j in jobs), table
    print(f"\nmibench status after the lost jobs:\n{table}")
    resumed = mibench([*cmd, "resume=true"], runs=tmp_path / "runs")
    local = {}
    for est in ESTIMATORS:  # the same runs without SLURM, while the resumed jobs run
        local[est] = tmp_path / f"local_{est}"
        p = mibench([*here(LONG), f"estimator={est}", f"hydra.run.dir={local[est]}"], runs=tmp_path / "runs_local")
        p.communicate(timeout=900)
        assert p.returncode == 0
    out, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-3000:]
    print(f"\ncancelled sweep: sent {'; '.join(sent)}; resumed in {time.monotonic() - t0:.0f} s from the start")
    for n, (est, job) in enumerate(zip(ESTIMATORS, jobs)):
        rec = json.loads((job / "result.json").read_text())
        print(f"  {est}: {rec['status']}, {rec['interruption_counts']}, attempts "
              f"{[(a.get('slurm_job_id'), a['ended'], a['wall_s']) for a in rec['attempts']]}, used {rec['time_used_s']} s")
        assert rec["status"] == "completed" and rec["resumed"] is True, (est, rec["status"])
        want = {"time_limit": 0, "preemption": 1, "killed": 0} if n == 0 else {"time_limit": 0, "preemption": 0, "killed": 1}
        assert rec["interruption_counts"] == want, (est, rec["interruptions"])
        assert [a["ended"] for a in rec["attempts"]] == ["interrupted" if n == 0 else "killed", "completed"]
        assert rec["time_used_s"] > rec["wall_time_s"]
        steps = (job / "steps.csv").read_bytes()
        assert steps.count(b"\n") == LONG_LEVELS * LONG_STEPS + 1
        assert steps == (local[est] / "steps.csv").read_bytes(), est
    before = [(j / "result.json").read_bytes() for j in jobs]
    again = mibench([*cmd, "resume=true"], runs=tmp_path / "runs")  # completed: skipped, not trained again
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert [(j / "result.json").read_bytes() for j in jobs] == before
