"""Issue 27: records that tell the truth while a sweep runs, and ``mibench status``.

A ``running`` record carries a heartbeat (step, total, segment, estimate, rate, time) written from host values only;
a record whose process is gone is found by one rule (:func:`mibench.records.dead_verdict`) and becomes ``killed``
(or ``interrupted`` while its SLURM job waits for a requeue), counted once; ``mibench status`` shows every run and
one summary line, and says in one line (exit 2) what it cannot read."""
from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import mibench.engine.driver as driver
from mibench import app, records
from mibench import status as st
from mibench.compose import compose_config

ROOT = Path(__file__).resolve().parents[1]
STAIR = ["dataset.steps_per_level=20", "dataset.mi_levels=[2,4,6]", "dataset.dim=2", "dataset.batch_size=8",
         "estimator=mine", "trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false"]
HOST = socket.gethostname()
NOW = 1_800_000_000.0


@pytest.fixture
def live_pid():
    """A process of this host that is alive for the test's duration."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p.pid
    p.kill()
    p.wait()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def running(**kw) -> dict:
    """A running record, with a heartbeat ``age`` seconds before NOW promising one every ``every`` seconds."""
    age, every = kw.pop("age", 10.0), kw.pop("every", 30.0)
    rec = {"status": "running", "host": "node7", "pid": 4321, "started_at": "2026-01-01T00:00:00",
           "heartbeat": {"step": 300, "total": 900, "unix": NOW - age, "every_s": every, "at": "2026-01-01T00:05:00"}}
    rec.update(kw)
    return rec


# ----------------------------------------------------------------------------------------- the dead-run rule
def test_a_process_of_this_host_is_asked_directly(live_pid):
    assert records.dead_verdict(running(host=HOST, pid=live_pid), now=NOW) is None
    pid = dead_pid()
    assert records.dead_verdict(running(host=HOST, pid=pid), now=NOW) == ("killed", f"its process {pid} on {HOST} is gone")
    reused = running(host=HOST, pid=live_pid, pid_start="1")  # the pid now belongs to another process
    assert records.dead_verdict(reused, now=NOW)[0] == "killed"
    assert records.dead_verdict(running(host=HOST, pid=os.getpid()), now=NOW) is None  # never this process itself


@pytest.mark.parametrize("state,verdict", [("RUNNING", None), ("COMPLETING", None), ("PENDING", "interrupted"),
                                           ("REQUEUED", "interrupted"), (None, "killed"), ("CANCELLED", "killed"),
                                           ("TIMEOUT", "killed")])
def test_a_slurm_job_is_asked_through_squeue(state, verdict):
    rec = running(slurm={"job_id": "77_3", "restart_count": 0}, age=10 * 3600)  # squeue wins over the heartbeat
    got = records.dead_verdict(rec, {"77_3": state}, now=NOW)
    assert (got and got[0]) == verdict


@pytest.mark.parametrize("age,every,dead", [(600, 30, False), (1799, 30, False), (1801, 30, True),
                                            (3000, 300, False), (3001, 300, True), (5 * 3600, 3600, False),
                                            (10 * 3600 + 1, 3600, True)])
def test_otherwise_the_heartbeat_goes_stale_after_ten_intervals_and_half_an_hour(age, every, dead):
    got = records.dead_verdict(running(age=age, every=every), now=NOW)
    assert (got is not None) == dead
    if dead:
        assert got[0] == "killed" and got[1].startswith(f"no heartbeat for {age / 60:.0f} min")


def test_a_record_without_a_heartbeat_is_trusted_and_other_statuses_are_final():
    old = running()
    del old["heartbeat"]
    assert records.dead_verdict(old, now=NOW + 10**6) is None
    for status in ("completed", "diverged", "crashed", "interrupted", "killed"):
        assert records.dead_verdict(running(status=status, host=HOST, pid=dead_pid()), now=NOW) is None


def test_declaring_a_run_dead_counts_the_kill_once_and_never_overwrites_what_the_run_wrote(tmp_path):
    rec = running(attempts=[{"wall_s": 12.5, "ended": "running"}], interruptions=[
        {"kind": "time_limit", "signal": "SIGUSR2", "step": 100, "at": "2026-01-01T00:01:00"}])
    records.write_record(tmp_path, rec)
    new = records.declare_dead(tmp_path, rec, "killed", "its SLURM job 77 is gone from the queue")
    on_disk = records.read_record(tmp_path)
    assert on_disk == json.loads(json.dumps(new)) and on_disk["status"] == "killed"
    assert on_disk["interruption_counts"] == {"time_limit": 1, "preemption": 0, "killed": 1}
    assert on_disk["interruptions"][-1]["step"] == 300 and on_disk["attempts"][-1]["ended"] == "killed"
    assert records.dead_verdict(on_disk) is None  # killed is final: nothing is counted twice
    # the run wrote its record after it was read: what it wrote stays
    records.write_record(tmp_path, {**rec, "status": "completed"})
    assert records.declare_dead(tmp_path, rec, "killed", "x")["status"] == "completed"
    assert records.read_record(tmp_path)["status"] == "completed"


# ----------------------------------------------------------------------------------------- the heartbeat
def beats_of(monkeypatch, every_step: bool = True) -> list[dict]:
    """Copies of every record the runs write; a heartbeat due at every step boundary when ``every_step``."""
    written = []
    real = records.write_record

    def spy(out, rec):
        written.append(copy.deepcopy(rec))
        real(out, rec)

    for mod in (app, records):
        monkeypatch.setattr(mod, "write_record", spy)
    monkeypatch.setattr(driver, "HEARTBEAT_S", 0.0 if every_step else 1e9)
    return written


def level_means(steps: pd.DataFrame) -> list[float]:
    return [float(g["estimate"].mean()) for _, g in steps.groupby("level")]


def check_heartbeats(beats: list[dict], steps: pd.DataFrame) -> None:
    """Against the run's own steps.csv: a beat at every step 1..60 in order, each in its level, the estimate of the
    last level streamed (a level is the staircase's block), the time used growing; then the evaluation."""
    training = [b for b in beats if b["phase"] == "training"]
    means = level_means(steps)
    assert sorted({b["step"] for b in training}) == list(range(1, 61))
    assert [b["step"] for b in training] == sorted(b["step"] for b in training)
    for b in training:
        assert (b["total"], b["segments"], b["unit"]) == (60, 3, "level")
        assert b["segment"] == (b["step"] - 1) // 20 + 1
        done = b["step"] // 20 if b["step"] % 20 == 0 else (b["step"] - 1) // 20  # levels streamed by then
        assert b["estimate"] == (pytest.approx(means[done - 1], rel=1e-6) if done else None)
    assert beats[-1]["phase"] == "evaluating" and beats[-1]["step"] == 60 and beats[-1]["every_s"] == 3600


def test_a_running_record_carries_a_heartbeat(tmp_path, monkeypatch):
    written = beats_of(monkeypatch)
    app.run(compose_config(STAIR, out_dir=tmp_path), echo=False)
    running_recs = [r for r in written if r["status"] == "running"]
    check_heartbeats([r["heartbeat"] for r in running_recs[1:]], pd.read_csv(tmp_path / "steps.csv"))
    assert running_recs[0]["heartbeat"]["phase"] == "setup"
    walls = [r["attempts"][-1]["wall_s"] for r in running_recs]
    assert walls == sorted(walls) and all(r["time_used_s"] == r["attempts"][-1]["wall_s"] for r in running_recs)
    assert all(r["heartbeat"]["rate"] > 0 for r in running_recs[3:])
    final = records.read_record(tmp_path)
    assert final["status"] == "completed" and final["heartbeat"]["step"] == 60


def test_each_run_of_a_group_carries_its_heartbeat(tmp_path, monkeypatch):
    written = beats_of(monkeypatch)
    cfgs = [[*STAIR[:4], f"estimator={e}", *STAIR[5:]] for e in ("infonce", "nwj")]
    preps = [app.prepare(compose_config(c, out_dir=tmp_path / f"job{i}"), echo=False) for i, c in enumerate(cfgs)]
    app.run_group(preps)
    for i, c in enumerate(cfgs):
        est = c[4].split("=")[1]
        beats = [r["heartbeat"] for r in written if r["estimator"] == est and r["status"] == "running"][1:]
        check_heartbeats(beats, pd.read_csv(tmp_path / f"job{i}" / "steps.csv"))


def test_heartbeats_add_no_host_sync(tmp_path, monkeypatch):
    """A heartbeat at every step boundary copies nothing more from the device than none inside a level."""
    def syncs(every_step: bool, out: Path) -> int:
        count = [0]
        for name in ("cpu", "item", "tolist", "numpy", "__float__", "__bool__", "__int__"):
            real = getattr(torch.Tensor, name)

            def counting(self, *a, _real=real, **k):
                count[0] += 1
                return _real(self, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counting)
        beats = beats_of(monkeypatch, every_step)
        app.run(compose_config(STAIR, out_dir=out), echo=False)
        monkeypatch.undo()
        return count[0], len(beats)

    (fast, n_fast), (slow, n_slow) = syncs(True, tmp_path / "a"), syncs(False, tmp_path / "b")
    assert n_fast > n_slow + 50 and fast == slow


# ----------------------------------------------------------------------------------------- mibench status
def write(root: Path, name: str, rec: dict | str, config: bool = True) -> Path:
    d = root / name
    d.mkdir(parents=True)
    if config:
        (d / "config.yaml").write_text("benchmark: {name: staircase}\n")
    (d / "result.json").write_text(rec if isinstance(rec, str) else json.dumps(rec))
    return d


def parse(out: str) -> dict[str, dict[str, str]]:
    """The status table's rows by run, each a dict of its cells (columns split at runs of 2+ spaces)."""
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("run "))
    cols = re.split(r"\s{2,}", lines[head].strip())
    rows = {}
    for ln in lines[head + 1:]:
        if not ln.strip():
            break
        cells = re.split(r"\s{2,}", ln.strip())
        rows[cells[0]] = dict(zip(cols, cells))
    return rows


def test_status_shows_every_run_and_rewrites_the_dead_ones(tmp_path, live_pid, capsys):
    now = time.time()
    hb = {"step": 300, "total": 900, "segment": 2, "segments": 3, "unit": "level", "estimate": 1.4912,
          "unix": now - 5, "every_s": 30.0, "rate": 10.0, "phase": "training", "at": "2026-01-01T00:05:00"}
    write(tmp_path, "a_done", {"status": "completed", "steps_done": 900, "heartbeat": {**hb, "step": 900},
                               "attempts": [{"wall_s": 50.0, "ended": "interrupted"}, {"wall_s": 70.0, "ended": "completed"}],
                               "interruptions": [{"kind": "time_limit", "at": "x"}]})
    write(tmp_path, "b_live", {"status": "running", "host": HOST, "pid": live_pid, "heartbeat": hb,
                               "attempts": [{"wall_s": 30.0, "ended": "running"}]})
    write(tmp_path, "c_dead", {"status": "running", "host": HOST, "pid": dead_pid(), "heartbeat": {**hb, "rate": 5.0},
                               "attempts": [{"wall_s": 40.0, "ended": "running"}]})
    write(tmp_path, "d_bad", "{not json")
    write(tmp_path, "e_odd", {"status": "running", "heartbeat": {"step": "many"}})
    (tmp_path / "f_empty" / ".hydra").mkdir(parents=True)
    st.main([str(tmp_path)])
    out = capsys.readouterr().out
    rows = parse(out)
    assert rows["a_done"] == {"run": "a_done", "state": "completed", "step": "900/900", "level/epoch": "level 2/3",
                              "estimate": "1.491", "interruptions": "1 (1 time limit)", "attempts": "2",
                              "used": "02:00", "left": "-", "heartbeat": "-"}
    assert rows["b_live"]["state"] == "running" and rows["b_live"]["left"] == "~01:00"  # 600 steps at 10/s
    assert re.fullmatch(r"00:0\d ago", rows["b_live"]["heartbeat"]) and rows["b_live"]["step"] == "300/900"
    assert rows["c_dead"]["state"] == "killed" and rows["c_dead"]["interruptions"] == "1 (1 killed)"
    assert rows["c_dead"]["left"] == "~02:00"  # 600 steps at 5/s
    assert rows["d_bad"]["state"] == rows["e_odd"]["state"] == "invalid" and rows["d_bad"]["interruptions"] == "-"
    assert "5 runs: 1 completed, 1 running, 1 killed, 2 invalid; 2 interruptions (1 time limit, 1 killed); " \
           "used 03:10 (all runs, all attempts); left ~01:00 of compute; resume=true continues the killed and " \
           "crashed ones from their checkpoints" in out  # left: the running run's (a killed one waits for resume=true)
    assert "d_bad/result.json: not valid JSON" in out and "e_odd/result.json: heartbeat.step holds a string" in out
    assert f"f_empty: {records.EMPTY_RUN_DIR}" in out
    assert "c_dead: killed: its process" in out
    dead = records.read_record(tmp_path / "c_dead")
    assert dead["status"] == "killed" and dead["interruption_counts"]["killed"] == 1
    assert records.read_record(tmp_path / "b_live")["status"] == "running"


def test_status_of_a_sweep_counts_the_jobs_not_started(tmp_path, capsys):
    from omegaconf import OmegaConf

    cfg = compose_config(["estimator=infonce", "seed=0"], hydra=True)
    OmegaConf.update(cfg, "hydra.overrides.task", ["estimator=infonce,nwj", "seed=0,1,2"], force_add=True)
    OmegaConf.save(cfg, tmp_path / "multirun.yaml")
    write(tmp_path, "0_infonce_s0", {"status": "completed", "attempts": [{"wall_s": 60.0, "ended": "completed"}]})
    st.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "1 run: 1 completed; 5 not started; used 01:00 (all runs, all attempts); left ~05:00 of compute" in out


def a_file(p: Path) -> Path:
    (p / "f").write_text("x")
    return p / "f"


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "nope", "no such folder: {p}/nope (give a sweep directory or a runs folder)"),
    (lambda p: a_file(p), "{p}/f is a file, not a folder of runs"),
    (lambda p: p, "no runs found under {p} (looked for */config.yaml and */result.json)"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    target = make(tmp_path)
    with pytest.raises(SystemExit) as e:
        st.main([str(target)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert err.startswith("mibench status: " + message.format(p=tmp_path)), err


def test_the_command_line_runs_status(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mibench", "status", str(tmp_path / "nope")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr == f"mibench status: no such folder: {tmp_path / 'nope'} (give a sweep " \
                                              f"directory or a runs folder)\n"


# ----------------------------------------------------------------------------------------- progress lines
def test_sweep_lines_count_every_attempt():
    from hydra_plugins.mibench_launcher import sweep_progress as sp

    sp.TALLY = sp.SweepTally(3, swept=["estimator"])
    try:
        rec = {"status": "completed", "wall_time_s": 7.6, "attempts": [{"wall_s": 240.0}, {"wall_s": 234.4},
                                                                        {"wall_s": 7.6}]}
        line = sp.TALLY.line(["estimator=nwj"], "completed", records.time_used_s(rec), 3)
        assert re.fullmatch(r"\[1/3 done, 0 failed, ~\d\d:\d\d left\] estimator=nwj -> completed 482\.0s \(3 attempts\)", line)
        line = sp.TALLY.line(["estimator=mine"], "killed", 12.0)
        assert re.fullmatch(r"\[2/3 done, 1 failed, ~\d\d:\d\d left\] estimator=mine -> killed 12\.0s", line)
    finally:
        sp.TALLY = None


def test_a_kill_found_by_the_slurm_launcher_is_counted_once(tmp_path):
    """slurm_jobs.mark_killed (a job that left the queue) goes through records.declare_dead: a running run's kill is
    one interruption, which the resume does not count again; an interrupted run (its signal counted) only becomes
    killed; a killed record whose attempt nobody closed is counted when the run resumes."""
    from hydra_plugins.mibench_launcher.slurm_jobs import mark_killed

    ran = tmp_path / "ran"
    records.write_record(ran, running(attempts=[{"wall_s": 5.0, "ended": "running"}], interruptions=[]))
    assert mark_killed(ran, "SLURM job 7_1 ended CANCELLED without a result") == "killed"
    rec = records.read_record(ran)
    assert rec["interruption_counts"]["killed"] == 1 and rec["error"].startswith("SLURM job 7_1") and rec["killed_at"]
    events, attempts = records.carried_over(rec)
    assert [e["kind"] for e in events] == ["killed"] and [a["ended"] for a in attempts] == ["killed"]

    stopped = tmp_path / "stopped"
    signalled = [{"kind": "time_limit", "signal": "SIGUSR2", "step": 100, "at": "2026-01-01T00:01:00"}]
    records.write_record(stopped, running(status="interrupted", interruptions=signalled,
                                          attempts=[{"wall_s": 5.0, "ended": "interrupted"}]))
    assert mark_killed(stopped, "SLURM job 7_2 left the queue without a result") == "killed"
    assert records.read_record(stopped)["interruptions"] == signalled
    assert records.carried_over(records.read_record(stopped))[0] == signalled

    unclosed = running(status="killed", attempts=[{"wall_s": 5.0, "ended": "running"}], interruptions=[])
    assert [e["kind"] for e in records.carried_over(unclosed)[0]] == ["killed"]
