"""Issue 27: a run never appends to the rows of an earlier attempt, and ``resume=true`` finds the run's own directory.

Starting afresh truncates (the partial steps file and the checkpoint of an earlier attempt go); resuming continues
exactly after the checkpoint's last row (rows an attempt streamed after its last checkpoint, before it was killed,
are dropped). Both alone and in a vectorised group, and through the command line: a run or a sweep in an explicit
``hydra.run.dir`` / ``hydra.sweep.dir``, killed between checkpoints, then the same command again with
``resume=true``. The expectations are independent of the code: row counts of steps.csv and byte-for-byte equality
with an uninterrupted run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mibench.engine.loop as loop
from mibench import app
from mibench.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]
# 3 levels of 20 steps: the staircase's block is a level, so its rows reach steps.csv.partial at each level's end,
# just before the level's checkpoint
STAIR = ["dataset.steps_per_level=20", "dataset.mi_levels=[2,4,6]", "dataset.dim=2", "dataset.batch_size=8",
         "estimator=mine", "trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false",
         "benchmark.checkpoint=true"]
GROUP = [[*STAIR[:4], "estimator=infonce", *STAIR[5:]], [*STAIR[:4], "estimator=nwj", *STAIR[5:]]]


class Killed(BaseException):
    """An in-process stand-in for SIGKILL: nothing catches it, so no record is written (it stays ``running``)."""


def kill_after_rows(monkeypatch, k: int) -> None:
    """The process 'dies' once the rows of steps up to ``k`` are in a partial steps file (MIBENCH_KILL_AFTER_ROWS)."""
    def die(hi):
        if hi >= k:
            raise Killed

    monkeypatch.setattr(loop, "fault_injection_rows", die)
    monkeypatch.setattr(app, "record_crash", lambda prep, e: None)  # a killed process records nothing


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n")


def record(d: Path) -> dict:
    return json.loads((d / "result.json").read_text())


def checkpoint_step(d: Path) -> int:
    return int(torch.load(d / "checkpoint.pt", weights_only=False, map_location="cpu")["t"])


def prepare_group(root: Path, extra: list[str] = ()) -> list:
    return [app.prepare(compose_config([*a, *extra], out_dir=root / f"job{i}"), echo=False, reuse=True)
            for i, a in enumerate(GROUP)]


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run directories outside the runs root (MIBENCH_RUNS, empty): as an explicit hydra.run.dir / hydra.sweep.dir."""
    monkeypatch.setenv("MIBENCH_RUNS", str(tmp_path / "runs"))
    return tmp_path / "explicit"


def test_resume_drops_rows_streamed_after_the_checkpoint_alone(elsewhere, tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    app.run(compose_config(STAIR, out_dir=clean), echo=False)
    out = elsewhere / "run"
    kill_after_rows(monkeypatch, 40)  # level 2's rows are streamed, its checkpoint is not written
    with pytest.raises(Killed):
        app.run(compose_config(STAIR, out_dir=out), echo=False, reuse=True)
    assert lines(out / "steps.csv.partial") == 41 and checkpoint_step(out) == 20  # 20 rows beyond the checkpoint
    assert record(out)["status"] == "running"
    monkeypatch.undo()
    res = app.run(compose_config([*STAIR, "resume=true"], out_dir=out), echo=False, reuse=True)
    rec = record(out)
    assert res.status == rec["status"] == "completed" and rec["resumed"] is True and res.out_dir == out
    assert lines(out / "steps.csv") == 61
    assert (out / "steps.csv").read_bytes() == (clean / "steps.csv").read_bytes()
    assert (out / "summary.csv").read_bytes() == (clean / "summary.csv").read_bytes()
    assert rec["interruption_counts"] == {"time_limit": 0, "preemption": 0, "killed": 1}
    assert [a["ended"] for a in rec["attempts"]] == ["killed", "completed"]
    assert rec["time_used_s"] == pytest.approx(sum(a["wall_s"] for a in rec["attempts"]), abs=1e-2)
    again = app.run(compose_config([*STAIR, "resume=true"], out_dir=out), echo=False, reuse=True)
    assert again.status == "skipped" and record(out) == rec  # completed: not trained again


def test_resume_drops_rows_streamed_after_the_checkpoint_grouped(elsewhere, tmp_path, monkeypatch):
    """A vectorised group killed while it streams level 2's rows: one run's rows are in its partial file, the
    other's not yet; each run resumes from its own level-1 checkpoint to the uninterrupted group's bytes."""
    clean = tmp_path / "clean"
    app.run_group(prepare_group(clean))
    kill_after_rows(monkeypatch, 40)
    with pytest.raises(Killed):
        app.run_group(prepare_group(elsewhere))
    assert sorted(lines(elsewhere / f"job{i}" / "steps.csv.partial") for i in range(2)) == [21, 41]
    assert [checkpoint_step(elsewhere / f"job{i}") for i in range(2)] == [20, 20]
    monkeypatch.undo()
    preps = prepare_group(elsewhere, ["resume=true"])
    assert [p.resume_from for p in preps] == [elsewhere / f"job{i}" / "checkpoint.pt" for i in range(2)]
    results = app.run_group(preps)
    for i, r in enumerate(results):
        d = elsewhere / f"job{i}"
        rec = record(d)
        assert r.status == rec["status"] == "completed" and rec["vectorized"]["group_size"] == 2
        assert rec["interruption_counts"]["killed"] == 1 and len(rec["attempts"]) == 2
        assert lines(d / "steps.csv") == 61
        assert (d / "steps.csv").read_bytes() == (clean / f"job{i}" / "steps.csv").read_bytes()


@pytest.mark.parametrize("grouped", [False, True])
def test_resume_with_a_leftover_partial_and_no_checkpoint_starts_afresh(elsewhere, tmp_path, grouped, caplog):
    """resume=true in a directory holding an earlier attempt's partial steps file and no checkpoint: a fresh start
    that writes its own rows only."""
    clean = tmp_path / "clean"
    dirs = [elsewhere / f"job{i}" for i in range(2 if grouped else 1)]
    for d in dirs:
        d.mkdir(parents=True)
        (d / "steps.csv.partial").write_text("step,level,true_mi,estimate,loss,joint,marginal\n0,0,2,9,9,9,9\n")
    if grouped:
        app.run_group(prepare_group(clean))
        preps = prepare_group(elsewhere, ["resume=true"])
        assert all(p.resume_from is None for p in preps)
        app.run_group(preps)
    else:
        app.run(compose_config(STAIR, out_dir=clean / "job0"), echo=False)
        app.run(compose_config([*STAIR, "resume=true"], out_dir=dirs[0]), echo=False, reuse=True)
    assert "no interrupted run of this config in" in caplog.text  # (the note: mibench's logger, on stderr)
    for i, d in enumerate(dirs):
        assert lines(d / "steps.csv") == 61 and not (d / "steps.csv.partial").exists()
        assert (d / "steps.csv").read_bytes() == (clean / f"job{i}" / "steps.csv").read_bytes()
        assert len(record(d)["attempts"]) == 1  # a fresh start carries nothing over


def test_a_fresh_start_removes_an_earlier_attempts_checkpoint(elsewhere, monkeypatch):
    """Starting afresh (resume=false) where an earlier attempt left a checkpoint: the checkpoint goes with the
    partial rows, so a later resume=true cannot continue the earlier attempt's state."""
    out = elsewhere / "run"
    kill_after_rows(monkeypatch, 40)
    with pytest.raises(Killed):
        app.run(compose_config(STAIR, out_dir=out), echo=False)
    assert checkpoint_step(out) == 20
    kill_after_rows(monkeypatch, 20)  # the fresh start dies before its first checkpoint
    with pytest.raises(Killed):
        app.run(compose_config([*STAIR, "overwrite=true"], out_dir=out), echo=False)
    assert not (out / "checkpoint.pt").exists() and lines(out / "steps.csv.partial") == 21


def test_a_run_whose_process_lives_is_not_resumed_twice(elsewhere):
    """resume=true on a directory whose run is still running (its pid alive on this host): skipped, untouched."""
    from mibench.records import process_start

    out = elsewhere / "run"
    app.run(compose_config(STAIR, out_dir=out), echo=False)
    rec = record(out)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        rec.update(status="running", pid=live.pid, pid_start=process_start(live.pid))
        (out / "result.json").write_text(json.dumps(rec))
        (out / "checkpoint.pt").write_bytes(b"")
        res = app.run(compose_config([*STAIR, "resume=true"], out_dir=out), echo=False, reuse=True)
        assert res.status == "skipped" and f"still running in {out} (pid {live.pid} on" in res.text
        assert record(out) == rec
    finally:
        live.kill()
        live.wait()


# ----------------------------------------------------------------------------------------- the command line
def mibench(args: list[str], runs: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "MIBENCH_RUNS": str(runs), **(env or {})})


@pytest.mark.slow
def test_kill_then_the_same_command_with_resume_true_in_an_explicit_run_dir(tmp_path):
    """``python -m mibench ... hydra.run.dir=D``, SIGKILLed between checkpoints; ``mibench status`` finds it killed;
    the same command with resume=true continues D (not a new directory under the runs root) to the uninterrupted
    run's bytes, counting the kill once; once more, it is skipped."""
    run_dir, runs = tmp_path / "explicit" / "run", tmp_path / "runs"
    cmd = [*STAIR, f"hydra.run.dir={run_dir}"]
    killed = mibench(cmd, runs, {"MIBENCH_KILL_AFTER_ROWS": "40"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert lines(run_dir / "steps.csv.partial") == 41 and checkpoint_step(run_dir) == 20
    status = mibench(["status", str(run_dir.parent)], runs)
    assert status.returncode == 0 and "run  killed  20/60  level 1/3" in status.stdout, status.stdout  # its last heartbeat
    assert record(run_dir)["status"] == "killed"  # the status command wrote what it found
    resumed = mibench([*cmd, "resume=true"], runs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resume=true: continuing {run_dir} from its checkpoint" in resumed.stderr
    assert not runs.exists()  # nothing trained anywhere else
    clean = mibench([*STAIR, f"hydra.run.dir={tmp_path / 'clean'}"], tmp_path / "runs_clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert lines(run_dir / "steps.csv") == 61
    assert (run_dir / "steps.csv").read_bytes() == (tmp_path / "clean" / "steps.csv").read_bytes()
    rec = record(run_dir)
    assert rec["status"] == "completed" and rec["interruption_counts"]["killed"] == 1 and len(rec["attempts"]) == 2
    again = mibench([*cmd, "resume=true"], runs)
    assert again.returncode == 0 and f"skipped: this config already ran -> {run_dir}" in again.stdout
    assert record(run_dir) == rec


@pytest.mark.slow
def test_kill_then_the_same_sweep_with_resume_true_in_an_explicit_sweep_dir(tmp_path):
    """A 2-job sweep in hydra.sweep.dir=S, SIGKILLed during job 0 between checkpoints (job 1 never started); the same
    command with resume=true continues job 0 in S from its checkpoint and runs job 1 there; both end with the
    bytes of runs alone; the same command again skips both."""
    sweep_dir, runs = tmp_path / "sweep", tmp_path / "runs"
    cmd = ["-m", *STAIR[:4], "estimator=infonce,nwj", *STAIR[5:], f"hydra.sweep.dir={sweep_dir}"]
    killed = mibench(cmd, runs, {"MIBENCH_KILL_AFTER_ROWS": "40"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    job0, job1 = sweep_dir / "0_infonce_s0", sweep_dir / "1_nwj_s0"
    assert lines(job0 / "steps.csv.partial") == 41 and not job1.exists()
    resumed = mibench([*cmd, "resume=true"], runs)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"continuing {job0} from its checkpoint" in resumed.stderr
    assert re.search(r"^\[1/2 done, 0 failed, ~[\d:]+ left\] estimator=infonce -> completed [\d.]+s \(2 attempts\)$",
                     resumed.stdout, re.M), resumed.stdout
    assert re.search(r"^\[sweep\] 2 runs: 2 completed; 1 interruption \(1 killed\); used [\d:]+ \(all runs, all attempts\)$",
                     resumed.stdout, re.M), resumed.stdout
    for est, job in (("infonce", job0), ("nwj", job1)):
        alone = tmp_path / f"alone_{est}"
        p = mibench([*GROUP[0 if est == "infonce" else 1], f"hydra.run.dir={alone}"], tmp_path / "runs_alone")
        assert p.returncode == 0, p.stderr[-2000:]
        assert lines(job / "steps.csv") == 61
        assert (job / "steps.csv").read_bytes() == (alone / "steps.csv").read_bytes(), est
    assert record(job0)["interruption_counts"]["killed"] == 1 and len(record(job0)["attempts"]) == 2
    again = mibench([*cmd, "resume=true"], runs)
    assert again.returncode == 0 and again.stdout.count("skipped: this config already ran") == 2, again.stdout
