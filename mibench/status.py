"""``mibench status DIR``: where every run below DIR (a sweep or a runs folder) stands, while it runs.

One row per run directory: its state, step of total, level or epoch, last estimate, interruptions, attempts,
time used over all attempts, time left (estimated) and how long ago its heartbeat came; then one line for
the whole folder (runs per state, jobs of the sweep not started, interruptions, time used, time left), and
the records that could not be read (Skipped). Everything comes from the runs' records
(:mod:`mibench.records`); a ``running`` record whose process is gone (:func:`mibench.records.dead_verdict`)
is rewritten as ``killed`` (or ``interrupted`` when its SLURM job waits for a requeue) as it is read, so the
next resume counts the kill. The sweep launchers print the summary line as jobs finish
(``hydra_plugins/mibench_launcher/sweep_progress.py``).

    mibench status runs/multirun/2026-05-01_12-00-00_ab12     # or: python -m mibench status DIR
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .log import duration as clock
from .log import exit_2_on_message
from .records import (EMPTY_RUN_DIR, FINISHED_STATUSES, INTERRUPTION_KINDS, INVALID, NO_RECORD, RECORD, dead_verdict,
                      declare_dead, empty_run_dirs, interruption_counts, record_age_s, scan_records, slurm_job,
                      time_used_s)

PROG = "mibench status"
KIND_WORDS = {"time_limit": "time limit", "preemption": "preempted", "killed": "killed"}
CONTINUING = ("running", "interrupted")  # runs that go on by themselves (interrupted: its requeue is pending)


@dataclass
class Row:
    """One run as ``mibench status`` shows it."""

    run: str
    state: str
    step: int | None = None
    total: int | None = None
    segment: str = "-"
    estimate: float | None = None
    interruptions: dict[str, int] | None = None  # per kind (None: unknown, no readable record)
    attempts: int = 0
    used_s: float | None = None
    left_s: float | None = None
    beat_s: float | None = None
    why: str | None = None


@dataclass
class Status:
    """Every run below a folder, what could not be read, and how many jobs of its sweep have no directory yet."""

    root: Path
    rows: list[Row]
    skipped: list[tuple[str, str]]
    not_started: int = 0


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def segment_text(hb: dict[str, Any], finished: bool = False) -> str:
    """``level 2/3``, ``epoch 4/10``, ``evaluating`` (an unfinished run outside training); ``-`` when the run does
    not name its segments."""
    if hb.get("phase") in ("setup", "evaluating") and not finished:
        return str(hb["phase"])
    unit, seg, count = hb.get("unit"), hb.get("segment"), hb.get("segments")
    if not unit or seg is None:
        return "-"
    return f"{unit} {min(seg, count) if count else seg}" + (f"/{count}" if count else "")


def time_left_s(rec: dict[str, Any]) -> float | None:
    """Seconds of training a run still needs at the rate its current (or last) attempt trained: (total - step)
    / rate; 0 once finished; None when unknown (no rate yet, no planned total)."""
    if rec.get("status") in FINISHED_STATUSES:
        return 0.0
    hb = rec.get("heartbeat") or {}
    step, total, rate = hb.get("step"), hb.get("total"), hb.get("rate")
    if step is None or not total or not rate:
        return None
    return max(0, total - step) / rate


def row_of(run: str, rec: dict[str, Any], why: str | None = None) -> Row:
    """A readable record's row."""
    hb = rec.get("heartbeat") or {}
    finished = rec.get("status") in FINISHED_STATUSES
    step = rec.get("steps_done") if finished and rec.get("steps_done") is not None else hb.get("step")
    events = [e for e in rec.get("interruptions") or [] if isinstance(e, dict)]
    return Row(run, str(rec["status"]), step, hb.get("total") or (step if finished else None),
               segment_text(hb, finished), hb.get("estimate"), interruption_counts(events),
               len([a for a in rec.get("attempts") or [] if isinstance(a, dict)]) or 1, time_used_s(rec),
               time_left_s(rec), record_age_s(rec) if rec.get("status") == "running" else None,
               why or (rec.get("error") if rec.get("status") not in FINISHED_STATUSES else None))


def collect(root: str | Path, mark: bool = True) -> Status:
    """Every run below ``root``. ``mark``: a dead ``running`` record is rewritten (:func:`declare_dead`);
    otherwise only shown as what it has become."""
    root = Path(root)
    found = list(scan_records(root))
    jobs = _job_states([rec for _, rec, _ in found if rec is not None])
    rows, skipped = [], []
    for d, rec, problem in found:
        run = relative(d, root)
        if rec is None:
            rows.append(Row(run, INVALID if problem else NO_RECORD, why=problem))
            if problem:
                skipped.append((relative(d / RECORD, root), problem))
            continue
        verdict = dead_verdict(rec, jobs)
        if verdict is not None:
            rec = mark_dead(d, rec, verdict) if mark else {**rec, "status": verdict[0]}
        rows.append(row_of(run, rec, verdict[1] if verdict else None))
    skipped += [(relative(d, root), EMPTY_RUN_DIR) for d in empty_run_dirs(root)]
    planned = planned_jobs(root)
    return Status(root, rows, skipped, max(0, planned - len(rows)) if planned else 0)


def mark_dead(run_dir: Path, rec: dict[str, Any], verdict: tuple[str, str]) -> dict[str, Any]:
    """:func:`declare_dead`; a folder that cannot be written (someone else's runs) is shown as found, not changed."""
    try:
        return declare_dead(run_dir, rec, *verdict)
    except OSError:
        return {**rec, "status": verdict[0], "error": verdict[1]}


def _job_states(records: list[dict[str, Any]]) -> dict[str, str] | None:
    """squeue's states of the SLURM jobs of the ``running`` records (one call; the jobs it lists), None when
    squeue cannot tell (not installed, no controller) or no record names a job."""
    ids = [j for r in records if r.get("status") == "running" and (j := slurm_job(r)) is not None]
    if not ids:
        return None
    from hydra_plugins.mibench_launcher.slurm_jobs import queue_states

    return queue_states(ids)


def planned_jobs(root: Path) -> int | None:
    """How many jobs the sweep in ``root`` launches (its ``multirun.yaml``, as the basic sweeper expands it), or
    None when ``root`` is no sweep directory or the number cannot be told."""
    path = root / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        from hydra_plugins.mibench_launcher.sweep_progress import sweep_plan

        return sweep_plan(OmegaConf.load(path))[0]
    except Exception:  # noqa: BLE001 -- a nicety: without it, "not started" is left out
        return None


# ----------------------------------------------------------------------------------------- text
def counts_text(counts: dict[str, int]) -> str:
    """``2 (1 time limit, 1 killed)``, ``0``."""
    n = sum(counts.values())
    parts = [f"{counts[k]} {KIND_WORDS[k]}" for k in INTERRUPTION_KINDS if counts.get(k)]
    return f"{n} ({', '.join(parts)})" if n else "0"


def duration(seconds: float | None) -> str:
    """``01:43``, ``1:02:03`` (mibench.log's, as the bar and the job log show times); ``-`` when unknown."""
    return "-" if seconds is None else clock(seconds)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


HEADER = ("run", "state", "step", "level/epoch", "estimate", "interruptions", "attempts", "used", "left", "heartbeat")


def cells(r: Row) -> tuple[str, ...]:
    step = "-" if r.step is None else f"{r.step}/{r.total}" if r.total else str(r.step)
    left = "-" if r.left_s is None or r.state in FINISHED_STATUSES else f"~{duration(r.left_s)}"
    beat = "-" if r.beat_s is None else f"{duration(r.beat_s)} ago"
    intr = "-" if r.interruptions is None else counts_text(r.interruptions)
    return (r.run, r.state, step, r.segment, _num(r.estimate), intr, str(r.attempts or "-"),
            duration(r.used_s), left, beat)


def table(rows: list[Row]) -> str:
    """The rows as aligned plain text (no carriage returns: reads the same in a terminal and a log)."""
    lines = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def summary(st: Status) -> str:
    """One line for the folder: ``5 runs: 3 completed, 1 running, 1 killed; 2 not started; 3 interruptions (2 time
    limit, 1 killed); used 12m05s (all runs, all attempts); left ~4m10s of compute (~2m05s at 2 running at once)``."""
    by: dict[str, int] = {}
    for r in st.rows:
        by[r.state] = by.get(r.state, 0) + 1
    parts = [f"{plural(len(st.rows), 'run')}: " + (", ".join(f"{n} {s}" for s, n in by.items()) or "none yet")]
    if st.not_started:
        parts.append(f"{st.not_started} not started")
    totals = {k: sum((r.interruptions or {}).get(k, 0) for r in st.rows) for k in INTERRUPTION_KINDS}
    if sum(totals.values()):
        n, _, kinds = counts_text(totals).partition(" ")
        parts.append(f"{plural(int(n), 'interruption')} {kinds}")
    used = sum(r.used_s or 0.0 for r in st.rows)
    parts.append(f"used {duration(used)} (all runs, all attempts)")
    if left := left_text(st):
        parts.append(left)
    if by.get("killed") or by.get("crashed"):
        parts.append("resume=true continues the killed and crashed ones from their checkpoints")
    return "; ".join(parts)


def left_text(st: Status) -> str | None:
    """The time the folder's runs still need: each running or interrupted run's estimate, and for each job not
    started the mean time a completed run used; as compute, and as wall clock at the number running at once."""
    going = [r for r in st.rows if r.state in CONTINUING]
    done = [r.used_s for r in st.rows if r.state == "completed" and r.used_s]
    if not going and not st.not_started:
        return None
    unknown = sum(r.left_s is None for r in going) + (st.not_started if not done else 0)
    if unknown == len(going) + st.not_started:
        return "left: not known yet (no rate measured, no run completed)"
    left = sum(r.left_s or 0.0 for r in going) + (st.not_started * sum(done) / len(done) if done else 0.0)
    text = f"left ~{duration(left)} of compute"
    running = sum(r.state == "running" for r in st.rows)
    if running > 1:
        text += f" (~{duration(left / running)} at {running} running at once)"
    return text + (f" + {unknown} not estimated yet (no rate measured, no run completed)" if unknown else "")


def skipped_text(skipped: list[tuple[str, str]]) -> str:
    return "\n".join(["Skipped (records that could not be read):", *(f"  {p}: {why}" for p, why in skipped)])


def notes_text(rows: list[Row]) -> str:
    """Why each killed, crashed or interrupted run stopped (one line each)."""
    lines = [f"  {r.run}: {r.state}: {r.why}" for r in rows if r.why and r.state not in ("running", INVALID)]
    return "\n".join(["Stopped:", *lines]) if lines else ""


def render(st: Status) -> str:
    parts = [table(st.rows) if st.rows else "(no run directory yet)", "", summary(st)]
    if notes := notes_text(st.rows):
        parts += ["", notes]
    if st.skipped:
        parts += ["", skipped_text(st.skipped)]
    return "\n".join(parts)


def check_root(root: Path) -> None:
    """SystemExit with one line for a folder ``mibench status`` cannot read."""
    if not root.exists():
        raise SystemExit(f"{PROG}: no such folder: {root} (give a sweep directory or a runs folder)")
    if not root.is_dir():
        raise SystemExit(f"{PROG}: {root} is a file, not a folder of runs (give a sweep directory or a runs folder)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise SystemExit(f"{PROG}: cannot read {root} (permission denied)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", default=os.environ.get("MIBENCH_RUNS", "runs"),
                   help="a sweep directory or a folder of runs (default: runs/)")
    a = p.parse_args(argv)
    root = Path(a.runs)
    with exit_2_on_message():
        check_root(root)
        st = collect(root)
        if not st.rows and not st.not_started:
            first = f"; skipped {st.skipped[0][0]}: {st.skipped[0][1]}" if st.skipped else ""
            raise SystemExit(f"{PROG}: no runs found under {root} (looked for */config.yaml and */result.json){first}")
    print(f"{root} at {time.strftime('%Y-%m-%d %H:%M:%S')}")
    print(render(st))


if __name__ == "__main__":
    main()
