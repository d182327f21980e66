"""A sweep's SLURM jobs as the launching process sees them: their names, their logs, and their end.

Both SLURM launchers (``hardware=slurm_*``: :mod:`.submitit_launcher`; ``hydra/launcher=vectorized_slurm``:
:mod:`.vectorized_launcher`) submit through submitit and wait here (:func:`watch`) instead of in submitit's
``job.result()``. submitit learns that a job ended from its result file or from ``sacct``; on a cluster without
accounting sacct never answers, so a job cancelled (``scancel``), lost with its node or killed before it wrote a
result was waited for until Ctrl-C. :func:`watch` also asks ``squeue`` every :data:`POLL_S` seconds: a job that
squeue no longer lists as queued or running for :data:`GRACE_S` seconds, with no result file, has *left the
queue*. Its runs' records are marked ``killed`` with the reason (:func:`mark_killed`), one line says so
(:func:`lost_line`), and the other jobs are waited for as before.

On the node, :func:`one_line_per_message` stops submitit printing each of its messages twice (its own handler and
Hydra's root handler both wrote them to the job's log) and :func:`rename_this_job` gives the running job its
name (``mibench:<benchmark>:<estimator>:s<seed>``; a vectorised group ``mibench:<benchmark>:group<k>``): a job
array has one name at submission (``mibench:<benchmark>``), which its pending tasks keep.

(Imported by the launchers only when they launch: nothing here runs at Hydra's plug-in scan.)
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from mibench.log import first_line  # (standard library only: light for Hydra's plug-in scan)


def _env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable ``name``, else ``default``."""
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


POLL_S = _env_seconds("MIBENCH_SLURM_POLL_S", 10.0)  # seconds between squeue calls while jobs run
GRACE_S = 1.5 * POLL_S  # how long a job must stay out of the queue, without a result, to count as lost
SQUEUE_TIMEOUT_S = 30.0  # squeue retries an unreachable controller for ~10 s before it gives up
# squeue states (%T) of a job that may still write its result; any other state, or none, is an end
ALIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING",
                   "RESIZING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "RESV_DEL_HOLD",
                   "STAGE_OUT", "POWER_UP_NODE", "PREEMPTED"})  # PREEMPTED: requeued next (or gone after GRACE_S)
SUBMITIT_HANDLERS = ("submitit_out", "submitit_err")  # the stream handlers submitit's logging config installs


def queue_states(job_ids: Sequence[str], timeout_s: float = SQUEUE_TIMEOUT_S) -> dict[str, str] | None:
    """``{job id: state}`` of the jobs among ``job_ids`` (``1234`` or array tasks ``1234_5``) that ``squeue``
    still lists, ended ones included while SLURM keeps them (``CANCELLED``, ``FAILED``, ...: MinJobAge);
    a job it does not list is not there. None when squeue cannot answer (missing, the controller down)."""
    bases = sorted({str(j).split("_")[0] for j in job_ids})
    if not bases:
        return {}
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", f"--jobs={','.join(bases)}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:  # one id that SLURM has forgotten: "Invalid job id specified" (several: an empty list)
        return {} if "invalid job id" in p.stderr.lower() else None
    states: dict[str, str] = {}
    for line in p.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            states[jid] = state.strip().split(" ")[0].upper()
    return states


def accounting_state(job_id: str, timeout_s: float = 10.0) -> str | None:
    """The job's final state from ``sacct`` where the cluster keeps accounting (``CANCELLED``), else None."""
    try:
        p = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--format=State", f"--jobs={job_id}"],
                           capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]
    return lines[0].split(" ")[0].upper() if p.returncode == 0 and lines else None


class Ended:
    """How a job ended: ``value`` (its callable's return), ``error`` (its callable raised: submitit's
    FailedJobError) or ``lost`` (the reason it left the queue without a result). (A plain class: Hydra's plug-in
    scan loads this module outside sys.modules, where a dataclass cannot be made.)"""

    def __init__(self, value: Any = None, error: BaseException | None = None, lost: str | None = None) -> None:
        self.value, self.error, self.lost = value, error, lost

    def __repr__(self) -> str:
        return f"Ended(value={self.value!r}, error={self.error!r}, lost={self.lost!r})"


def has_result(job: Any) -> bool:
    """Whether the job's result file is there (refreshing the folder's attributes first, as submitit does:
    a network file system may show a new file late)."""
    folder = job.paths.folder
    try:
        folder.chmod(folder.stat().st_mode)
    except OSError:
        pass
    return job.paths.result_pickle.exists()


def collect(job: Any) -> Ended:
    """The ended job's outcome, read from its result file (submitit's ``results()``)."""
    try:
        return Ended(value=job.results()[0])
    except Exception as e:  # noqa: BLE001 -- sorted below: no result at all, or the job's own exception
        if type(e).__name__ == "UncompletedJobError":
            return Ended(lost=f"SLURM job {job.job_id} ended without a result ({first_line(e)})")
        return Ended(error=e)


def watch(jobs: Sequence[Any], poll_s: float | None = None, grace_s: float | None = None,
          states: Callable[[Sequence[str]], dict[str, str] | None] = queue_states,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
          ) -> Iterator[tuple[int, Ended]]:
    """Yield ``(k, Ended)`` for each of the submitit SLURM ``jobs`` as it ends, in the order they end.

    A job ends when its result file appears, or when squeue (``states``, every ``poll_s`` seconds) has not
    listed it as queued or running (:data:`ALIVE`) for ``grace_s`` seconds and no result file came: it was
    cancelled, its node died, it was killed before it could write one. While squeue cannot answer (the
    controller restarting), no job is declared lost."""
    poll_s = POLL_S if poll_s is None else poll_s
    grace_s = max(GRACE_S if grace_s is None else grace_s, 0.0)
    left = dict(enumerate(jobs))
    out_since: dict[int, tuple[float, str | None]] = {}  # since when squeue has not listed the job alive, its state
    answered = False  # whether the last squeue call answered
    next_poll = clock()
    while left:
        now = clock()
        if now >= next_poll:
            listed, next_poll = states([j.job_id for j in left.values()]), now + poll_s
            answered = listed is not None
            for k, job in left.items() if listed is not None else ():
                state = listed.get(str(job.job_id))
                if state in ALIVE:
                    out_since.pop(k, None)
                else:
                    out_since[k] = (out_since.get(k, (now, None))[0], state)
        for k, job in list(left.items()):
            if has_result(job):
                del left[k]
                yield k, collect(job)
            elif answered and k in out_since and now - out_since[k][0] >= grace_s and not has_result(job):
                del left[k]
                yield k, Ended(lost=lost_reason(str(job.job_id), out_since[k][1]))
        if left:
            sleep(min(1.0, poll_s))


def lost_reason(job_id: str, state: str | None) -> str:
    """Why a job counts as lost: the state squeue (else sacct) last gave it, or that SLURM no longer knows it."""
    state = state or accounting_state(job_id)
    if state:
        return f"SLURM job {job_id} ended {state} without a result"
    return f"SLURM job {job_id} left the queue without a result"


def run_record(ret: Any) -> dict[str, Any]:
    """The result.json (status, wall time) of the run a Hydra JobReturn ran, if it wrote one; else {}."""
    import json

    try:
        out = ret.hydra_cfg.hydra.runtime.output_dir if ret.hydra_cfg is not None else ret.cfg.out_dir
        return json.loads((Path(str(out)) / "result.json").read_text())
    except Exception:  # noqa: BLE001 -- no record: the job failed before preparing its run
        return {}


def run_dir(cfg: Any) -> Path | None:
    """A sweep job's run directory (``hydra.sweep.dir``/``hydra.sweep.subdir`` of its composed config)."""
    try:
        return Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    except Exception:  # noqa: BLE001 -- an interpolation that needs the job's runtime: not knowable here
        return None


def mark_killed(out: Path | None, reason: str) -> str | None:
    """Record a run whose job was lost as ``killed``, with ``reason`` in its record's ``error``, when the record
    still says ``running`` or ``interrupted`` (a finished record is the run's own word and stays). Returns the
    status the record now holds; None when the run wrote none (its job never started it)."""
    from mibench.records import declare_dead, read_record

    rec = read_record(out) if out is not None else None
    if rec is None:
        return None
    if rec.get("status") in ("running", "interrupted"):
        try:  # (a running run's kill is counted among its interruptions: the resume adds no second)
            rec = declare_dead(out, rec, "killed", reason)
        except OSError as e:
            print(f"mibench: error: cannot mark {out / 'result.json'} killed: {e.strerror or e}", file=sys.stderr)
            return None
    return str(rec.get("status"))


def lost_line(reason: str, runs: Sequence[tuple[str, Path | None, str | None]]) -> str:
    """The one line for a lost job: ``reason``, then each run (its swept overrides, directory, record status)."""
    said = []
    for overrides, out, status in runs:
        where = out.name if out is not None else "?"
        said.append(f"{overrides or where} ({where}: " + (f"marked {status}" if status == "killed" else
                    f"record says {status}" if status else "never started, no record") + ")")
    return (f"mibench: warning: {reason}: {'; '.join(said)}; the other jobs go on "
            f"(resume=true continues a killed run from its checkpoint)")


def swept(overrides: Sequence[str]) -> str:
    """A job's overrides as its progress line shows them: the keys the sweep varies (all when it cannot tell)."""
    from . import sweep_progress

    keys = getattr(sweep_progress.TALLY, "swept", ())
    return " ".join([o for o in overrides if o.split("=", 1)[0].lstrip("+~") in keys] or list(overrides))


def logs_line(jobs: Sequence[Any]) -> str:
    """Where the submitted jobs' logs are, with the job ids in the paths: the first job's and the last's."""
    if not jobs:
        return "no jobs"
    ids = [str(j.job_id) for j in jobs]
    first, last = jobs[0].paths.stdout, jobs[-1].paths.stdout
    names = ids[0] if len(ids) == 1 else f"{ids[0]} … {ids[-1]}"
    where = str(first) if len(jobs) == 1 else f"{first} … {last}"
    return f"{len(jobs)} SLURM job(s) {names}; logs: {where} (stderr: _log.err beside each)"


# ---- names -------------------------------------------------------------------------------------------------

def job_name(cfg: Any, group: int | None = None) -> str:
    """``mibench:<benchmark>:<label>:s<seed>`` for a run's job (the label names the run in its directory too: its
    estimator, or the analysis where it uses none: mibench.labels.roles), ``mibench:<benchmark>:group<k>`` for a
    group's."""
    bench = get(cfg, "benchmark.name") or "run"
    if group is not None:
        return f"mibench:{bench}:group{group}"
    try:
        from mibench.labels import roles

        label = roles(cfg)["label"]
    except Exception:  # noqa: BLE001 -- a name is a nicety: the configured estimator then
        label = get(cfg, "estimator.name")
    return f"mibench:{bench}:{label or 'run'}:s{get(cfg, 'seed')}"


def array_name(benchmarks: Sequence[str]) -> str:
    """A job array's name at submission (its pending tasks show it): ``mibench:`` and its jobs' benchmark(s)."""
    names = sorted(set(benchmarks)) or ["run"]
    return f"mibench:{'+'.join(names[:3])}{'+...' if len(names) > 3 else ''}"


def swept_benchmarks(job_overrides: Sequence[Sequence[str]], default: str) -> list[str]:
    """The benchmarks of a sweep's jobs: their ``benchmark=`` overrides, else ``default`` (the sweep config's)."""
    return sorted({next((o.split("=", 1)[1] for o in ovs if o.startswith("benchmark=")), default)
                   for ovs in job_overrides})


def rename_this_job(name: str, timeout_s: float = 10.0) -> bool:
    """Give the running SLURM job (``SLURM_JOB_ID``: an array task's own id) the name ``name``, so squeue tells the
    sweep's jobs apart; False outside SLURM or when scontrol refuses (a name is a nicety, never an error)."""
    jid = os.environ.get("SLURM_JOB_ID")
    if not jid:
        return False
    try:
        p = subprocess.run(["scontrol", "update", f"JobId={jid}", f"JobName={name}"], capture_output=True,
                           text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0


# ---- logs --------------------------------------------------------------------------------------------------

class _RootTakesOver(logging.Filter):
    """On submitit's own handlers: lets a record through only while the root logger has no handler. Once
    Hydra has configured logging (its console and app.log handlers on root), submitit's messages reach those,
    so its own handlers would print each a second time."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


def one_line_per_message() -> None:
    """Make each submitit message appear once in a job's log (see :class:`_RootTakesOver`); idempotent."""
    for handler in logging.getLogger("submitit").handlers:
        if getattr(handler, "name", None) in SUBMITIT_HANDLERS and not any(
                type(f).__name__ == "_RootTakesOver" for f in handler.filters):
            handler.addFilter(_RootTakesOver())


def get(cfg: Any, dotted: str) -> Any:
    """``cfg``'s value at the dotted key (a config, a dict or an object), None where it is missing or unresolvable."""
    node = cfg
    for part in dotted.split("."):
        try:
            node = node.get(part) if hasattr(node, "get") else getattr(node, part)
        except Exception:  # noqa: BLE001 -- an unresolvable interpolation: no name from it
            return None
        if node is None:
            return None
    return node


__all__ = ["ALIVE", "Ended", "POLL_S", "array_name", "collect", "first_line", "get", "job_name", "logs_line", "lost_line",
           "mark_killed", "one_line_per_message", "queue_states", "rename_this_job", "run_dir", "run_record",
           "swept", "swept_benchmarks", "watch"]
