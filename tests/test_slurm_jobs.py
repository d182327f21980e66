"""The SLURM side of a sweep without a SLURM (hydra_plugins/mibench_launcher/slurm_jobs.py, mibench.cluster's
preflight): stub ``squeue``/``sbatch``/``srun``/``scontrol``/``sacct`` scripts on PATH, written to a tmp dir.

- :func:`queue_states` reads squeue, tells "SLURM forgot the job" from "squeue cannot answer";
- :func:`watch` notices a job that left the queue without a result within its poll interval and grace, and
  never while squeue cannot answer;
- the preflight refuses, in one line and exit 2 with no sweep directory, a SLURM sweep without the client
  commands, without a configuration, with the controller down, and ``hardware=slurm_*`` without ``-m``;
- end to end, a fake SLURM (``sbatch`` runs each array task here, in the background; ``squeue`` lists the
  live ones): a sweep through ``hardware=slurm_cpu`` names its jobs, prints its log paths with the job ids,
  and when one job's processes are killed (what ``scancel`` does), marks its run ``killed`` with the reason,
  prints one line and returns within the poll interval and grace, the other job completed.

``make test-slurm`` does the same against a real one-node SLURM (tests/slurm/test_slurm_sweep.py).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hydra_plugins.mibench_launcher import slurm_jobs
from mibench.cluster import slurm_problem

ROOT = Path(__file__).resolve().parents[1]


def stub(bin_dir: Path, name: str, body: str) -> Path:
    """An executable shell script ``bin_dir/name`` running ``body``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


def on_path(bin_dir: Path, monkeypatch, alone: bool = False) -> None:
    """Put ``bin_dir`` first on PATH (``alone``: and nothing of the machine's, so real SLURM commands are hidden)."""
    monkeypatch.setenv("PATH", str(bin_dir) if alone else f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


# ---- squeue ------------------------------------------------------------------------------------------------

def test_queue_states_reads_squeue(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "squeue", """
        echo "$@" > "$(dirname "$0")/args"
        printf '17_0|RUNNING\\n17_1|PENDING\\n17_2|CANCELLED by 0\\n'
    """)
    on_path(bin_dir, monkeypatch)
    assert slurm_jobs.queue_states(["17_0", "17_1", "17_2", "17_3"]) == {
        "17_0": "RUNNING", "17_1": "PENDING", "17_2": "CANCELLED"}
    args = (bin_dir / "args").read_text().split()
    assert "--jobs=17" in args and "--array" in args and "--states=all" in args  # each array task, ended ones too


@pytest.mark.parametrize("stderr,expected", [("slurm_load_jobs error: Invalid job id specified", {}),
                                             ("slurm_load_jobs error: Unable to contact slurm controller", None)])
def test_queue_states_forgotten_job_vs_no_answer(tmp_path, monkeypatch, stderr, expected):
    """squeue's error for one job id SLURM no longer knows means "not in the queue"; any other failure (the
    controller down) means "cannot tell": None, and no job is declared lost for it."""
    stub(tmp_path / "bin", "squeue", f"echo '{stderr}' >&2\nexit 1\n")
    on_path(tmp_path / "bin", monkeypatch)
    assert slurm_jobs.queue_states(["42"]) == expected


def test_queue_states_without_squeue(tmp_path, monkeypatch):
    on_path(tmp_path / "empty", monkeypatch, alone=True)
    assert slurm_jobs.queue_states(["42"]) is None


# ---- watch ---------------------------------------------------------------------------------------------------

class FakeJob:
    """What watch() uses of a submitit job: its id, its folder and result file, ``results()``."""

    def __init__(self, folder: Path, job_id: str):
        from submitit.core.utils import JobPaths

        self.job_id = job_id
        self.paths = JobPaths(folder / "%j", job_id=job_id, task_id=0)
        self.paths.folder.mkdir(parents=True, exist_ok=True)

    def finish(self, value) -> None:
        import pickle

        self.paths.result_pickle.write_bytes(pickle.dumps(("success", value)))

    def results(self):
        import pickle

        outcome, value = pickle.loads(self.paths.result_pickle.read_bytes())
        return [value]


def test_watch_notices_a_job_that_left_the_queue(tmp_path, monkeypatch):
    """Job 0 ends with a result; job 1 is no longer listed by (a stub) squeue: lost within the grace after
    the poll that first missed it, with squeue's reason; job 2 stays queued until its result comes."""
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "squeue", f"cat {tmp_path}/queue 2>/dev/null\n")
    stub(bin_dir, "sacct", "exit 1\n")  # no accounting
    on_path(bin_dir, monkeypatch)
    (tmp_path / "queue").write_text("9_0|RUNNING\n9_1|RUNNING\n9_2|PENDING\n")
    jobs = [FakeJob(tmp_path, f"9_{k}") for k in range(3)]
    poll, grace = 0.2, 0.6
    jobs[0].finish(1.5)
    seen, t_gone, waited = [], 0.0, None
    for k, ended in slurm_jobs.watch(jobs, poll_s=poll, grace_s=grace):
        seen.append((k, ended.value, ended.lost))
        if k == 0:  # job 1 leaves the queue (scancel, without accounting: squeue no longer lists it)
            (tmp_path / "queue").write_text("9_2|PENDING\n")
            t_gone = time.monotonic()
        elif k == 1:
            waited = time.monotonic() - t_gone
            jobs[2].finish(2.5)
    assert seen == [(0, 1.5, None), (1, None, "SLURM job 9_1 left the queue without a result"), (2, 2.5, None)]
    assert grace <= waited <= grace + poll + 1.5, waited  # noticed within the poll interval and the grace


def test_watch_lost_reason_from_squeue_and_no_verdict_while_squeue_fails(tmp_path):
    """A job squeue lists as CANCELLED is lost with that state; while squeue cannot answer (None) nothing is
    declared lost, however long it lasts."""
    jobs = [FakeJob(tmp_path, "5_0"), FakeJob(tmp_path, "5_1")]
    answers = iter([None] * 8 + [{"5_0": "CANCELLED", "5_1": "RUNNING"}] * 100)
    clock = [0.0]
    ended = slurm_jobs.watch(jobs, poll_s=1.0, grace_s=3.0, states=lambda ids: next(answers),
                             clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    k, end = next(ended)
    assert (k, end.lost) == (0, "SLURM job 5_0 ended CANCELLED without a result")
    assert 8 + 3 <= clock[0] <= 8 + 3 + 1.5, clock[0]  # 8 s without an answer, then the grace
    jobs[1].finish("done")
    assert [(k, e.value) for k, e in ended] == [(1, "done")]


def test_mark_killed_keeps_finished_records(tmp_path):
    from mibench.records import write_record

    for name, status in (("a", "running"), ("b", "interrupted"), ("c", "completed")):
        (tmp_path / name).mkdir()
        write_record(tmp_path / name, {"status": status, "estimator": "nwj"})
    why = "SLURM job 3_1 left the queue without a result"
    assert [slurm_jobs.mark_killed(tmp_path / n, why) for n in "abc"] == ["killed", "killed", "completed"]
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    assert a["status"] == "killed" and a["error"] == why and a["estimator"] == "nwj" and "killed_at" in a
    assert json.loads((tmp_path / "c" / "result.json").read_text())["status"] == "completed"
    assert slurm_jobs.mark_killed(tmp_path / "never_started", why) is None
    line = slurm_jobs.lost_line(why, [("seed=1", tmp_path / "a", "killed"), ("seed=2", tmp_path / "c", "completed"),
                                      ("seed=3", tmp_path / "never_started", None)])
    assert line == (f"mibench: warning: {why}: seed=1 (a: marked killed); seed=2 (c: record says completed); seed=3 "
                    "(never_started: never started, no record); the other jobs go on (resume=true continues a killed "
                    "run from its checkpoint)")


def test_job_names():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"benchmark": {"name": "staircase"}, "estimator": {"name": "nwj"}, "seed": 3})
    assert slurm_jobs.job_name(cfg) == "mibench:staircase:nwj:s3"
    sandwich = OmegaConf.create({"benchmark": {"name": "sandwich"}, "estimator": {"name": "infonce"}, "seed": 0})
    assert slurm_jobs.job_name(sandwich) == "mibench:sandwich:sandwich:s0"  # the run's label: it uses no estimator
    assert slurm_jobs.job_name(cfg, group=2) == "mibench:staircase:group2"
    assert slurm_jobs.array_name(slurm_jobs.swept_benchmarks([["seed=0"], ["benchmark=onehot"]], "staircase")) \
        == "mibench:onehot+staircase"


def test_submitit_messages_once_each():
    """Once the root logger has a handler (Hydra's, in a job), submitit's own handlers stay quiet: each message
    is written once, not twice."""
    import logging

    import submitit  # noqa: F401 -- installs submitit's handlers

    handlers = [h for h in logging.getLogger("submitit").handlers if h.name in slurm_jobs.SUBMITIT_HANDLERS]
    assert handlers
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        slurm_jobs.one_line_per_message()
        slurm_jobs.one_line_per_message()  # idempotent
        record = logging.LogRecord("submitit", logging.INFO, __file__, 1, "Job completed successfully", None, None)
        root.handlers = []
        assert all(h.filter(record) for h in handlers)  # before Hydra configures logging: submitit's handlers print
        root.handlers = [logging.NullHandler()]
        assert not any(h.filter(record) for h in handlers)  # after: root's handler alone
        assert all(sum(type(f).__name__ == "_RootTakesOver" for f in h.filters) == 1 for h in handlers)
    finally:
        root.handlers = saved
        for h in handlers:
            h.filters = [f for f in h.filters if type(f).__name__ != "_RootTakesOver"]


# ---- preflight -----------------------------------------------------------------------------------------------

def fake_client(bin_dir: Path, ping: str = "echo 'Slurmctld(primary) at fake is UP'") -> None:
    """sbatch, srun, squeue, sacct and an scontrol whose ``ping`` runs ``ping``."""
    for name in ("sbatch", "srun", "squeue", "sacct"):
        stub(bin_dir, name, "exit 0\n")
    stub(bin_dir, "scontrol", f'if [ "$1" = ping ]; then\n{ping}\nfi\n')


def test_slurm_problem_lines(tmp_path, monkeypatch):
    bins = {}
    for case, ping in (("up", "echo 'Slurmctld(primary) at fake is UP'"),
                       ("down", "echo 'Slurmctld(primary) at ctl1 is DOWN'; echo '*****'; exit 1"),
                       ("noconf", "echo 'scontrol: fatal: Could not establish a configuration source' >&2; exit 1"),
                       ("hang", "exec sleep 30")):
        bins[case] = tmp_path / case
        fake_client(bins[case], ping)

    def problem(case, **env):
        """slurm_problem() with only ``case``'s stubs as SLURM (the machine's own commands hidden from which)."""
        monkeypatch.setenv("PATH", f"{bins[case]}{os.pathsep}{os.environ['PATH']}")
        which = lambda c: str(bins[case] / c) if (bins[case] / c).exists() else None  # noqa: E731
        return slurm_problem(which=which, env=env, timeout_s=2)

    assert problem("up") is None
    assert problem("down").startswith("SLURM: the controller is not reachable (scontrol ping: Slurmctld(primary) "
                                      "at ctl1 is DOWN): start slurmctld")
    assert problem("noconf").startswith("SLURM: no configuration found (SLURM_CONF unset")
    assert problem("hang").startswith("SLURM: the controller did not answer `scontrol ping` in 2 s")
    assert problem("up", SLURM_CONF=str(tmp_path / "nope.conf")) == (
        f"SLURM_CONF={tmp_path / 'nope.conf'}: no such file (set it to the cluster's slurm.conf, or unset it to use "
        "the default)")
    (bins["up"] / "srun").unlink()
    assert problem("up").startswith("SLURM: srun not found on PATH")


def mibench_cli(args: list[str], tmp_path: Path, path: str, **env) -> subprocess.CompletedProcess:
    e = {**os.environ, "PATH": path, "MIBENCH_RUNS": str(tmp_path / "runs"), "PYTHONWARNINGS": "ignore", **env}
    e.pop("SLURM_JOB_ID", None)
    return subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=e, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("case", ["no_commands", "no_conf", "down", "no_sweep", "no_sweep_vectorized"])
def test_preflight_refuses_a_sweep_slurm_cannot_take(tmp_path, case):
    """One line naming what is missing and the fix, exit 2, and nothing written (no sweep directory)."""
    bin_dir = tmp_path / "bin"
    pings = {"no_conf": "echo 'scontrol: fatal: Could not establish a configuration source' >&2; exit 1",
             "down": "echo 'Slurmctld(primary) at ctl1 is DOWN'; exit 1"}
    fake_client(bin_dir, pings.get(case, "echo 'Slurmctld(primary) at fake is UP'"))
    path = f"{tmp_path / 'empty'}" if case == "no_commands" else f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    args = {"no_sweep": ["hardware=slurm_cpu"], "no_sweep_vectorized": ["hydra/launcher=vectorized_slurm"]}.get(
        case, ["-m", "hardware=slurm_cpu", "seed=0,1"])
    p = mibench_cli(args, tmp_path, path, SLURM_CONF="")  # (empty: unset; the stub scontrol answers)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    expected = {"no_commands": "mibench: error: SLURM: sbatch, srun, squeue, scontrol not found on PATH",
                "no_conf": "mibench: error: SLURM: no configuration found",
                "down": "mibench: error: SLURM: the controller is not reachable (scontrol ping: Slurmctld(primary) at "
                        "ctl1 is DOWN)",
                "no_sweep": "mibench: error: hardware=slurm_cpu without -m would train here, on this node, not on SLURM",
                "no_sweep_vectorized": "mibench: error: hydra/launcher=vectorized_slurm without -m would train here"}
    assert lines[0].startswith(expected[case]), lines[0]
    assert not (tmp_path / "runs").exists()  # no sweep directory, no run directory


def test_slurm_sweep_without_m_inside_a_slurm_job_is_fine(monkeypatch):
    """Inside a SLURM job (SLURM_JOB_ID set) ``hardware=slurm_cpu`` without -m trains here, as intended there."""
    from mibench.cli import preflight

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert preflight(["hardware=slurm_cpu", "dataset.steps_per_level=2"]) is None
    monkeypatch.delenv("SLURM_JOB_ID")
    assert preflight(["hardware=slurm_cpu", "dataset.steps_per_level=2"]).startswith("hardware=slurm_cpu without -m")


# ---- end to end, through a fake SLURM ------------------------------------------------------------------------

FAKE_SBATCH = r"""
    # fake sbatch: runs each array task of the job script here, in the background, each in its own session
    S=$FAKE_SLURM
    id=$(cat "$S/next_id" 2>/dev/null || echo 700); echo $((id + 1)) > "$S/next_id"
    script=$1
    last=$(sed -n 's/^#SBATCH --array=0-\([0-9]*\).*/\1/p' "$script")
    sed -n 's/^#SBATCH --job-name=//p' "$script" > "$S/$id.name"
    for t in $(seq 0 "${last:-0}"); do
        SLURM_JOB_ID=$((id * 100 + t)) SLURM_ARRAY_JOB_ID=$id SLURM_ARRAY_TASK_ID=$t SLURM_NTASKS=1 \
        SLURM_JOB_NUM_NODES=1 SLURM_NODEID=0 SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_JOB_NODELIST=localhost \
        setsid bash -c 'echo $$ > "$0/$1.pid"; sleep 1; exec bash "$2"' "$S" "${id}_$t" "$script" \
            </dev/null >/dev/null 2>&1 &
    done
    echo "Submitted batch job $id"
"""
FAKE_SRUN = r"""
    # fake srun: --output/--error with SLURM's %A %a %j %t expanded, then the command
    out=/dev/null; err=/dev/null
    while [ "${1#--}" != "$1" ]; do
        case $1 in --output) out=$2; shift 2 ;; --error) err=$2; shift 2 ;; *) shift ;; esac
    done
    x() { local p=${1//%A/$SLURM_ARRAY_JOB_ID}; p=${p//%a/$SLURM_ARRAY_TASK_ID}; p=${p//%j/$SLURM_JOB_ID}; echo "${p//%t/0}"; }
    out=$(x "$out"); err=$(x "$err"); mkdir -p "$(dirname "$out")"
    exec "$@" >>"$out" 2>>"$err"
"""
FAKE_SQUEUE = r"""
    # fake squeue: every task whose process group lives is RUNNING
    for f in "$FAKE_SLURM"/*.pid; do
        [ -e "$f" ] || continue
        kill -0 "$(cat "$f")" 2>/dev/null && echo "$(basename "$f" .pid)|RUNNING"
    done
    exit 0
"""
FAKE_SCONTROL = r"""
    # fake scontrol: ping answers UP; update JobId=N JobName=X is recorded in $FAKE_SLURM/renamed
    case $1 in
        ping) echo "Slurmctld(primary) at fake is UP" ;;
        update) echo "$2 $3" >> "$FAKE_SLURM/renamed" ;;
        *) exit 1 ;;
    esac
"""


@pytest.mark.slow
def test_sweep_through_a_fake_slurm_notices_a_killed_job(tmp_path):
    """``hardware=slurm_cpu`` on a fake SLURM: job 0 completes; job 1 is killed mid-run (its processes, as
    scancel does; squeue then no longer lists it). The launcher prints one line naming the job and its run,
    marks the run killed with the reason and returns within the poll interval and grace; the sweep exits 0.
    Along the way: the array's name, each running job's name, the log paths with the job ids, one line per
    submitit message in a job's log."""
    fake = tmp_path / "slurm"
    fake.mkdir()
    bin_dir = tmp_path / "bin"
    for name, body in (("sbatch", FAKE_SBATCH), ("srun", FAKE_SRUN), ("squeue", FAKE_SQUEUE),
                       ("scontrol", FAKE_SCONTROL), ("sacct", "exit 1\n")):
        stub(bin_dir, name, body)
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM": str(fake),
           "MIBENCH_RUNS": str(tmp_path / "runs"), "MIBENCH_SLURM_POLL_S": "1", "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    env.pop("SLURM_JOB_ID", None)
    args = ["-m", "hardware=slurm_cpu", "hardware.threads=1", "dataset.dim=2", "dataset.batch_size=8",
            "dataset.mi_levels=[1,2]", "dataset.steps_per_level=20,1000000", "benchmark.plot=false", "logger=none",
            "trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep_dir}"]
    sweep = subprocess.Popen([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    run1 = sweep_dir / "1_infonce_s0"
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240:  # job 1 trains: its record says running
            rec = _record(run1)
            if rec and rec["status"] == "running":
                break
            assert sweep.poll() is None, sweep.communicate()[0][-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("job 1 did not start training in 240 s")
        os.killpg(int((fake / "700_1.pid").read_text()), signal.SIGKILL)  # what scancel does to a running job
        killed_at = time.monotonic()
        out, _ = sweep.communicate(timeout=120)
        returned_after = time.monotonic() - killed_at
    finally:
        _end_fake_jobs(fake, sweep)
    assert sweep.returncode == 0, out[-3000:]
    print(f"\nlauncher returned {returned_after:.1f} s after the kill (poll 1 s, grace 1.5 s)")
    assert returned_after < 10, (returned_after, out[-3000:])
    rec = _record(run1)
    assert rec["status"] == "killed" and rec["error"] == "SLURM job 700_1 left the queue without a result", rec
    assert _record(sweep_dir / "0_infonce_s0")["status"] == "completed"
    lost = [ln for ln in out.splitlines() if "left the queue" in ln]
    assert lost == ["mibench: warning: SLURM job 700_1 left the queue without a result: dataset.steps_per_level="
                    "1000000 (1_infonce_s0: marked killed); the other jobs go on (resume=true continues a killed run "
                    "from its checkpoint)"], out[-3000:]
    import re  # each job's progress line ([k/N done, f failed, ~T left] ...), the killed one counted as failed

    assert re.search(r"^\[1/2 done, 0 failed[^]]*\] dataset\.steps_per_level=20 -> completed", out, re.M), out[-3000:]
    assert re.search(r"^\[2/2 done, 1 failed\] dataset\.steps_per_level=1000000 -> killed$", out, re.M), out[-3000:]
    logs = next(ln for ln in out.splitlines() if "Submitted 2 SLURM job(s)" in ln)
    assert f"{sweep_dir}/.submitit/700_0/700_0_0_log.out" in logs and "%j" not in logs, logs
    assert (fake / "700.name").read_text().strip() == "mibench:staircase"  # the array, at submission
    renamed = sorted((fake / "renamed").read_text().splitlines())
    assert renamed == ["JobId=70000 JobName=mibench:staircase:infonce:s0",
                       "JobId=70001 JobName=mibench:staircase:infonce:s0"], renamed
    log = (sweep_dir / ".submitit" / "700_0" / "700_0_0_log.out").read_text()
    for message in ("Job completed successfully", "Exiting after successful completion"):
        assert log.count(message) == 1, log  # once, not twice


def _record(run: Path) -> dict | None:
    try:
        return json.loads((run / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _end_fake_jobs(fake: Path, sweep: subprocess.Popen) -> None:
    """Kill what the fake SLURM started (its tasks' process groups) and the sweep, if still there."""
    for f in fake.glob("*.pid"):
        try:
            os.killpg(int(f.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass
    if sweep.poll() is None:
        sweep.kill()
        sweep.communicate()
