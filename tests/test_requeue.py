"""Runs that survive a cluster (issue 17): SLURM's stop signals checkpoint inside a level/epoch, the
requeued job resumes from that checkpoint by itself and ends with the numbers of an uninterrupted run,
and its record counts the interruptions (time limit vs preemption).

The signals are real (the process signals itself at a given step, ``MIBENCH_SIGNAL_AT_STEP``); what SLURM
and submitit add is simulated: ``SLURM_JOB_ID`` / ``SLURM_RESTART_COUNT`` in the environment, and a
handler standing for submitit's (it ends the process with SystemExit after its requeue). The same path on
a real SLURM is ``make test-slurm``."""
import json
import signal
import sys

import pandas as pd
import pytest

from mibench import app, cluster
from mibench.compose import compose_config
from mibench.engine.interrupt import Interrupts

STAIR = ["dataset.steps_per_level=10", "dataset.mi_levels=[1,2,3]", "dataset.dim=2", "dataset.batch_size=8",
         "estimator=mine", "trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false"]


@pytest.fixture
def slurm(monkeypatch):
    """A fake SLURM job whose 'submitit' handlers end the process (SystemExit) for both stop signals."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setattr(cluster, "job_times", lambda jid=None: None)  # no squeue: USR2 counts as the time limit
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}

    def submitit_like(signum, frame):
        sys.exit(-1)

    for s in before:
        signal.signal(s, submitit_like)
    yield monkeypatch
    for s, h in before.items():
        signal.signal(s, h)


def attempt(mp, restart: int, at: str | None, run):
    mp.setenv("SLURM_RESTART_COUNT", str(restart))
    if at:
        mp.setenv("MIBENCH_SIGNAL_AT_STEP", at)
    else:
        mp.delenv("MIBENCH_SIGNAL_AT_STEP", raising=False)
    if at:
        with pytest.raises(SystemExit):
            run()
    else:
        return run()


def test_staircase_requeued_twice_ends_with_the_uninterrupted_numbers(slurm, runs_dir, tmp_path):
    clean = tmp_path / "clean"
    app.run(compose_config(STAIR, out_dir=clean), echo=False)  # no SLURM job id here? (it is set: same numbers)
    out = runs_dir / "job"
    go = lambda: app.run(compose_config(STAIR, out_dir=out), echo=False, reuse=True)  # noqa: E731

    attempt(slurm, 0, "13:USR2", go)  # inside level 2, 3 rows not yet flushed
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "interrupted" and (out / "checkpoint.pt").exists() and not (out / "steps.csv").exists()
    (ev,) = rec["interruptions"]
    assert (ev["kind"], ev["signal"], ev["step"], ev["slurm_job_id"]) == ("time_limit", "SIGUSR2", 13, "4242")

    attempt(slurm, 1, "22:TERM", go)  # the requeue resumes at 13; a preemption inside level 3
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "interrupted" and [e["kind"] for e in rec["interruptions"]] == ["time_limit", "preemption"]
    assert rec["interruptions"][1]["restart"] == 1

    res = attempt(slurm, 2, None, go)
    rec = json.loads((out / "result.json").read_text())
    assert res.status == rec["status"] == "completed" and rec["resumed"] is True and rec["steps_done"] == 30
    assert rec["interruption_counts"] == {"time_limit": 1, "preemption": 1, "killed": 0}
    assert rec["slurm"] == {"job_id": "4242", "restart_count": 2}
    assert not (out / "checkpoint.pt").exists()
    for name in ("steps.csv", "summary.csv"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    # stopped after its last step, requeued once more: the finished run is kept, not trained again
    again = attempt(slurm, 3, None, go)
    assert again.status == "skipped" and json.loads((out / "result.json").read_text()) == rec


def test_outside_a_requeue_the_own_checkpoint_is_not_taken(slurm, runs_dir):
    """A fresh start (restart 0) in a directory holding a checkpoint starts afresh: only a requeue resumes."""
    out = runs_dir / "job"
    go = lambda: app.run(compose_config(STAIR, out_dir=out), echo=False, reuse=True)  # noqa: E731
    attempt(slurm, 0, "13:USR2", go)
    assert app.requeued_here(compose_config(STAIR, out_dir=out), out) is None  # restart count 0
    slurm.setenv("SLURM_RESTART_COUNT", "1")
    assert app.requeued_here(compose_config(STAIR, out_dir=out), out) == out / "checkpoint.pt"
    other = compose_config(STAIR + ["seed=1"], out_dir=out)
    assert app.requeued_here(other, out) is None  # not this config's checkpoint


def test_a_vectorised_group_is_interrupted_and_requeued_together(slurm, runs_dir, tmp_path):
    sweep = [STAIR[:4] + ["estimator=infonce"] + STAIR[5:], STAIR[:4] + ["estimator=nwj"] + STAIR[5:]]
    def group(root, reuse=True):
        return lambda: app.run_group([app.prepare(compose_config(a, out_dir=root / f"job{i}"), echo=False, reuse=reuse)
                                      for i, a in enumerate(sweep)])

    clean = tmp_path / "clean"
    group(clean, reuse=False)()  # the same group, uninterrupted (a group's numbers are its own: vmapped kernels)
    go = group(runs_dir)

    attempt(slurm, 0, "17:USR2", go)
    recs = [json.loads((runs_dir / f"job{i}" / "result.json").read_text()) for i in range(2)]
    assert all(r["status"] == "interrupted" and r["interruptions"][0]["step"] == 17 for r in recs)
    results = attempt(slurm, 1, None, go)
    for i, r in enumerate(results):
        rec = json.loads((runs_dir / f"job{i}" / "result.json").read_text())
        assert r.status == rec["status"] == "completed" and rec["vectorized"]["group_size"] == 2
        assert rec["interruption_counts"] == {"time_limit": 1, "preemption": 0, "killed": 0}
        assert (runs_dir / f"job{i}" / "steps.csv").read_bytes() == (clean / f"job{i}" / "steps.csv").read_bytes()


def test_slb_requeued_inside_an_epoch_keeps_its_augmentation_stream(slurm, runs_dir, tmp_path):
    from mibench.data.fake_cifar import write_fake_cifar

    data = tmp_path / "data"
    write_fake_cifar(data, classes=10, train_per_class=8, test_per_class=2, seed=3)
    args = ["dataset=cifar10", f"dataset.root={data}", "estimator=remine", "benchmark.epochs=2", "model=convnet",
            "model.width=8", "dataset.batch_size=16", "benchmark.check_every=2", "dataset.augment=true",
            "trainer.enable_progress_bar=false", "logger=none"]
    clean = tmp_path / "clean"
    app.run(compose_config(args, out_dir=clean), echo=False)
    out = runs_dir / "job"
    go = lambda: app.run(compose_config(args, out_dir=out), echo=False, reuse=True)  # noqa: E731
    attempt(slurm, 0, "7:USR2", go)  # epoch 2 (5 steps an epoch), step 3 of it, one row pending
    attempt(slurm, 1, None, go)
    assert (out / "steps.csv").read_bytes() == (clean / "steps.csv").read_bytes()
    a, b = (pd.read_csv(d / "result.csv").iloc[0] for d in (out, clean))
    assert (a["mi_test"], a["test_acc"]) == (b["mi_test"], b["test_acc"])


def test_wall_clock_checkpoints_inside_a_level(monkeypatch, tmp_path):
    """``trainer.checkpoint_every_min``: a checkpoint inside the level once the interval has passed (a clock
    that advances a minute per call here), with the level's unflushed rows."""
    import mibench.engine.interrupt as intr
    from mibench.engine.loop import Engine

    clock = iter(range(0, 10**6, 60))
    monkeypatch.setattr(intr.time, "monotonic", lambda: float(next(clock)))
    seen = []
    orig = Engine.save_checkpoint

    def spy(self, pending=None):
        seen.append((self.fit.t, None if pending is None else len(pending)))
        orig(self, pending)

    monkeypatch.setattr(Engine, "save_checkpoint", spy)
    app.run(compose_config(STAIR + ["benchmark.checkpoint=true", "trainer.checkpoint_every_min=2"],
                           out_dir=tmp_path / "r"), echo=False)
    inside = [(t, n) for t, n in seen if n is not None]
    assert any(n > 0 for _, n in inside) and all(n == t % 10 for t, n in inside)  # the rows since the level began
    assert [t for t, n in seen if n is None] == [10, 20, 30]  # and still at every level's end


def test_interrupt_handlers_only_inside_a_slurm_job(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    before = signal.getsignal(signal.SIGUSR2)
    with Interrupts(None):
        assert signal.getsignal(signal.SIGUSR2) is before  # a local run keeps its usual signals
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with Interrupts(None) as stop:
        assert signal.getsignal(signal.SIGUSR2) == stop._flag
    assert signal.getsignal(signal.SIGUSR2) is before


@pytest.mark.parametrize("signum,times,kind", [
    (signal.SIGUSR2, (3600.0, 3500.0), "time_limit"),  # 100 s left, 120 s lead
    (signal.SIGUSR2, (3600.0, 3000.0), "preemption"),  # 10 min left: preempt_send_user_signal
    (signal.SIGUSR2, None, "time_limit"),
    (signal.SIGTERM, (3600.0, 3590.0), "preemption"),
])
def test_interruption_kind(signum, times, kind):
    assert cluster.interruption_kind(signum, times, lead_s=120.0) == kind


def test_squeue_durations():
    assert cluster.parse_duration("1-02:03:04") == 93784.0
    assert cluster.parse_duration("02:03:04") == 7384.0 and cluster.parse_duration("3:04") == 184.0
    assert cluster.parse_duration("UNLIMITED") is None


def test_a_sweep_bound_for_slurm_names_the_benchmarks_that_cannot_checkpoint():
    from omegaconf import OmegaConf

    from hydra_plugins.mibench_launcher.sweep_progress import unresumable

    cfg = lambda task: OmegaConf.create({"benchmark": {"name": "staircase"},  # noqa: E731
                                         "hydra": {"overrides": {"task": task}}})
    assert unresumable(cfg(["estimator=infonce,nwj"])) == []
    (line,) = unresumable(cfg(["benchmark=staircase,dim", "seed=0,1"]))
    assert line.startswith("benchmark=dim cannot checkpoint") and "resumable: clb, dsprites" in line


@pytest.mark.parametrize("hw,gpus", [("slurm_cpu", None), ("slurm_gpu", 1)])
def test_slurm_hardware_choices_compose_the_submitit_launcher(hw, gpus):
    import subprocess

    import yaml

    from test_cli import ROOT

    p = subprocess.run([sys.executable, "-m", "mibench", f"hardware={hw}", "--cfg", "hydra"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    launcher = yaml.safe_load(p.stdout)["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.mibench_launcher.submitit_launcher.SlurmLauncher"  # hydra/launcher=slurm
    assert launcher["gpus_per_node"] == gpus
    assert launcher["signal_delay_s"] == 120 and launcher["max_num_timeout"] == 20  # requeues allowed


@pytest.fixture
def bypassing(slurm):
    """As ``slurm``, but SIGTERM's handler returns, as submitit's does (it logs "Bypassing signal SIGTERM")."""
    bypassed = []
    signal.signal(signal.SIGTERM, lambda signum, frame: bypassed.append(signum))
    slurm.bypassed = bypassed
    return slurm


def test_sigterm_checkpoints_and_ends_the_job_at_that_step(bypassing, runs_dir, tmp_path):
    """A preemption's SIGTERM (submitit ignores it; SLURM kills the job after its grace time): the job checkpoints at
    the next step boundary and ends there (exit status 128 + 15), training nothing that the kill would throw away;
    the requeued job resumes from that step to the uninterrupted numbers."""
    clean = tmp_path / "clean"
    app.run(compose_config(STAIR, out_dir=clean), echo=False)
    out = runs_dir / "job"
    go = lambda: app.run(compose_config(STAIR, out_dir=out), echo=False, reuse=True)  # noqa: E731
    bypassing.setenv("MIBENCH_SIGNAL_AT_STEP", "13:TERM")
    with pytest.raises(SystemExit) as stopped:
        go()
    assert stopped.value.code == 128 + signal.SIGTERM and bypassing.bypassed == [signal.SIGTERM]
    import torch

    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["t"] == 13 and len(state["pending"]) == 3  # level 2's first 3 rows, not streamed yet
    assert (out / "steps.csv.partial").read_bytes().count(b"\n") == 11  # level 1 only: nothing after the signal
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "interrupted" and rec["interruptions"][0]["step"] == 13
    assert rec["attempts"][0]["ended"] == "interrupted"
    res = attempt(bypassing, 1, None, go)
    assert res.status == "completed"
    assert (out / "steps.csv").read_bytes() == (clean / "steps.csv").read_bytes()
    rec = json.loads((out / "result.json").read_text())
    assert rec["interruption_counts"] == {"time_limit": 0, "preemption": 1, "killed": 0}


def test_a_signal_after_the_last_step_is_recorded_and_resumes_to_the_same_numbers(slurm, runs_dir, tmp_path,
                                                                                monkeypatch):
    """SIGUSR2 while the last level ends (after its last step): still a recorded interruption; the requeued job
    trains nothing more and ends with the uninterrupted numbers."""
    import os

    from mibench.benchmarks.staircase import Staircase

    clean = tmp_path / "clean"
    app.run(compose_config(STAIR, out_dir=clean), echo=False)
    real = Staircase.end_segment

    def signalled(self, index, rows, wall):
        if index == 2 and os.environ.get("SLURM_RESTART_COUNT") == "0":
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(self, index, rows, wall)

    monkeypatch.setattr(Staircase, "end_segment", signalled)
    out = runs_dir / "job"
    go = lambda: app.run(compose_config(STAIR, out_dir=out), echo=False, reuse=True)  # noqa: E731
    slurm.setenv("SLURM_RESTART_COUNT", "0")
    with pytest.raises(SystemExit):
        go()
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "interrupted" and rec["interruptions"][0]["step"] == 30
    res = attempt(slurm, 1, None, go)
    assert res.status == "completed" and (out / "steps.csv").read_bytes() == (clean / "steps.csv").read_bytes()
    assert json.loads((out / "result.json").read_text())["interruption_counts"]["time_limit"] == 1


@pytest.mark.slow
def test_a_hard_kill_is_counted_when_the_requeued_job_resumes(tmp_path):
    """SIGKILL (no signal SLURM announces: a node failure, the out-of-memory killer, SIGTERM's grace time over)
    leaves the record ``running``; the requeued job (SLURM_RESTART_COUNT=1) resumes from the checkpoint, counts the
    kill as an interruption and both attempts' time, and ends with the uninterrupted numbers."""
    import os
    import subprocess

    from test_cli import ROOT

    out = tmp_path / "job"
    env = {**os.environ, "MIBENCH_RUNS": str(tmp_path / "runs"), "SLURM_JOB_ID": "4242"}
    cmd = [sys.executable, "-m", "mibench", *STAIR, "benchmark.checkpoint=true", f"hydra.run.dir={out}"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**env, "SLURM_RESTART_COUNT": "0", "MIBENCH_KILL_AFTER_ROWS": "20"})
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert json.loads((out / "result.json").read_text())["status"] == "running"
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**env, "SLURM_RESTART_COUNT": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "SLURM requeue 1 of job 4242: continuing" in p.stderr
    rec = json.loads((out / "result.json").read_text())
    assert rec["status"] == "completed" and rec["resumed"] is True
    assert rec["interruption_counts"] == {"time_limit": 0, "preemption": 0, "killed": 1}
    (kill,) = rec["interruptions"]
    assert (kill["kind"], kill["signal"], kill["slurm_job_id"], kill["restart"]) == ("killed", None, "4242", 0)
    assert [(a["restart"], a["ended"]) for a in rec["attempts"]] == [(0, "killed"), (1, "completed")]
    clean = subprocess.run([sys.executable, "-m", "mibench", *STAIR, f"hydra.run.dir={tmp_path / 'clean'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300, env={**os.environ, "MIBENCH_RUNS": str(tmp_path / "c")})
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert (out / "steps.csv").read_bytes() == (tmp_path / "clean" / "steps.csv").read_bytes()
