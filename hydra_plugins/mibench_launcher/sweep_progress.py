"""One line per finished job of a sweep (``-m``): ``[k/N done, f failed, ~T left] <overrides> -> <status> <time>``,
and the sweep's summary as jobs finish: ``[sweep] <mibench status's summary line>`` (runs per state, jobs not
started, interruptions, time used and left; at most every SUMMARY_EVERY_S seconds, and after the last job).

Registered as a Hydra callback in conf/hydra/default.yaml, so it works under Hydra's basic launcher and
under ``hydra/launcher=vectorized`` (which reports the jobs it trains as a group itself, once they have
finished). The status is the run's record (completed, diverged, skipped, crashed); a job whose exception
reached Hydra is ``failed``. The time is the run's over all its attempts (its record's ``attempts``: a job
requeued twice says ``8m02s (3 attempts)``). Plain lines, no carriage returns: they read the same in a terminal
and in CI logs. Under launchers that run jobs in other processes (joblib) the workers do not print them.

(In hydra_plugins/ beside the launcher: Hydra imports this package on every start, so it imports nothing heavy.)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mibench.handover import LAST_RECORD, Prepared

FAILED = ("crashed", "interrupted", "killed", "failed")
SUMMARY_EVERY_S = 10.0


class SweepTally:
    """Counts a sweep's finished jobs and formats each one's line; the time left is the sweep's time so far
    per finished job, times the jobs still to come (``clock``: seconds, time.monotonic). Knows the sweep's
    directory (its summary line)."""

    def __init__(self, total: int | None = None, swept: Sequence[str] = (),
                 clock: Callable[[], float] = time.monotonic, sweep_dir: str | None = None):
        self.total, self.swept, self.clock, self.sweep_dir = total, tuple(swept), clock, sweep_dir
        self.done = self.failed = 0
        self.t0 = clock()
        self.summarised_at: float | None = None

    def line(self, overrides: Sequence[str], status: str, seconds: float | None, attempts: int = 1) -> str:
        self.done += 1
        self.failed += status in FAILED
        shown = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in self.swept] or list(overrides)
        total = self.total if self.total is not None else "?"
        took = f" {seconds:.1f}s" if seconds is not None else ""
        took += f" ({attempts} attempts)" if attempts > 1 else ""
        return (f"[{self.done}/{total} done, {self.failed} failed{self.left()}] {' '.join(shown) or '(no overrides)'}"
                f" -> {status}{took}")

    def left(self) -> str:
        """``, ~04:10 left`` while jobs remain (nothing when their number is not known)."""
        if self.total is None or self.done >= self.total:
            return ""
        from mibench.log import duration

        return f", ~{duration((self.clock() - self.t0) / self.done * (self.total - self.done))} left"

    def summary_due(self) -> bool:
        """After the last job, or SUMMARY_EVERY_S seconds after the last summary (a group's many lines: one)."""
        last = self.total is not None and self.done >= self.total
        return last or self.summarised_at is None or self.clock() - self.summarised_at >= SUMMARY_EVERY_S


TALLY: SweepTally | None = None  # the running sweep's (on_multirun_start); None outside a sweep


def sweep_plan(config: DictConfig) -> tuple[int | None, list[str]]:
    """(number of jobs, swept keys) of the sweep ``config`` describes, as the basic sweeper expands it
    (``hydra.sweeper.params`` and the command line's overrides); (None, []) when it cannot tell."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = config.hydra.sweeper.get("params") or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
        parsed = OverridesParser.create().parse_overrides(args)
        swept = [o.key_or_group for o in parsed if o.is_sweep_override()]
        if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
            return None, swept  # another sweeper (optuna, ...) decides its own number of jobs
        return sum(len(b) for b in BasicSweeper.split_arguments(parsed, None)), swept
    except Exception:  # noqa: BLE001 -- the count is a nicety: '?' rather than a failed sweep
        return None, []


def unresumable(config: DictConfig) -> list[str]:
    """Warnings for the benchmarks of a sweep bound for SLURM that cannot checkpoint (said at submission)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        names = [str(config.benchmark.name)]
        for o in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
            if o.key_or_group == "benchmark":
                names += [str(v) for v in (o.sweep_string_iterator() if o.is_sweep_override() else [o.value()])]
        from mibench.registry import TASKS
        from mibench.cluster import submission_warnings

        return submission_warnings(names, TASKS)
    except Exception:  # noqa: BLE001 -- a warning must never stop a submission
        return []


def _sweep_dir(config: DictConfig) -> str | None:
    try:
        return str(config.hydra.sweep.dir)
    except Exception:  # noqa: BLE001 -- no summary rather than a failed sweep
        return None


SWEEP_LOG = "sweep.log"  # in the sweep directory: every line the sweep's console showed from this module


def say(line: str, stream: Any = None) -> None:
    """Print ``line`` on the sweep's console and append it, timestamped, to the sweep directory's sweep.log
    (the lines of no single run: a run's own lines are in its app.log)."""
    print(line, file=stream or sys.stdout, flush=True)
    where = TALLY.sweep_dir if TALLY is not None else None
    if where:
        try:
            Path(where).mkdir(parents=True, exist_ok=True)
            with open(Path(where) / SWEEP_LOG, "a", encoding="utf-8") as f:
                f.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}\n")
        except OSError:  # a log line must never stop a sweep
            pass


def report(overrides: Sequence[str], status: str, seconds: float | None, attempts: int = 1) -> None:
    """Print a finished job's line (nothing outside a sweep)."""
    if TALLY is not None:
        say(TALLY.line(overrides, status, seconds, attempts))


def report_record(overrides: Sequence[str], record: dict[str, Any], status: str | None = None) -> None:
    """:func:`report` of a run from its record: its status (unless ``status`` says otherwise) and its time over all
    its attempts."""
    from mibench.records import time_used_s

    attempts = len([a for a in record.get("attempts") or [] if isinstance(a, dict)])
    report(overrides, status or str(record.get("status", "completed")), time_used_s(record), max(1, attempts))


def report_summary() -> None:
    """Print the sweep's summary line when due (:meth:`SweepTally.summary_due`): ``mibench status``'s, from the
    records in the sweep directory. It shows a dead run as what it has become and writes nothing: a record is
    rewritten by ``mibench status`` or, for a job that left the queue, by the SLURM launcher's watch (its reason)."""
    if TALLY is None or not TALLY.sweep_dir or not TALLY.summary_due():
        return
    try:
        from mibench.status import collect, summary

        line = summary(collect(TALLY.sweep_dir, mark=False))
    except Exception as e:  # noqa: BLE001 -- a summary must never stop a sweep
        line = f"no summary ({type(e).__name__}: {e})".splitlines()[0]
    TALLY.summarised_at = TALLY.clock()
    say(f"[sweep] {line}")


def last_status() -> str:
    """The status this process's last run recorded (mibench.handover.LAST_RECORD), if any."""
    return str(LAST_RECORD.get("status") or "completed")


class SweepProgress(Callback):
    """The Hydra callback: starts the tally, times each job, prints its line when it ends."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global TALLY
        TALLY = SweepTally(*sweep_plan(config), sweep_dir=_sweep_dir(config))
        if "submitit" in str(config.hydra.launcher.get("_target_", "")) or config.hydra.launcher.get("submitit"):
            for line in unresumable(config):
                say(f"mibench: warning: {line}", sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global TALLY
        TALLY = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.t0 = time.perf_counter()
        LAST_RECORD.clear()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if TALLY is None:
            return
        if isinstance(job_return._return_value, Prepared):
            return  # prepared for a vectorised group: the launcher reports it once the group has trained
        overrides = list(job_return.overrides or [])
        status = "failed" if job_return.status == JobStatus.FAILED else last_status()
        rec = LAST_RECORD
        if rec.get("attempts"):  # the run's time over all its attempts
            report_record(overrides, rec, status)
        else:
            report(overrides, status, time.perf_counter() - self.t0 if self.t0 is not None else None)
        report_summary()


__all__ = ["SweepProgress", "SweepTally", "report", "report_record", "report_summary", "sweep_plan"]
