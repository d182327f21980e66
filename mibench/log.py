"""mibench's own lines: a run's start, its progress every few minutes, interruptions, its end, notes and errors.

They go through the ``mibench`` logger (:data:`LOG`). Under the command line, Hydra's job logging
(``conf/hydra/job_logging/mibench.yaml``) writes each once to the console as it is, with no prefix (info on
stdout; notes, warnings and errors on stderr: :class:`Console`), and once, time-stamped, to the run
directory's ``app.log``. Without a logging set-up (the Python API) the info lines are not shown, and notes and
warnings reach stderr through Python's last-resort handler, as before.

A vectorised group trains after its jobs' Hydra logging has ended; :func:`run_logs` writes its lines to the
console and to the app.log of each run it concerns. Under the command line a job's Python warnings and a crashed
run's traceback go the same way (console as they are, app.log time-stamped), so app.log holds what the console
showed. Imports only the standard library (the CLI imports it).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

LOG = logging.getLogger("mibench")
APP_LOG = "app.log"  # Hydra's job log in a run directory (hydra.job.name is "app")
FILE_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's, as in job_logging/mibench.yaml


def first_line(e: BaseException) -> str:
    """An exception's first non-blank line (its type's name when it has no message): for one-line errors."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def ours(record: logging.LogRecord) -> bool:
    """Whether ``record`` is one of mibench's own lines (logger ``mibench`` or below)."""
    return record.name == LOG.name or record.name.startswith(LOG.name + ".")


WARNINGS = "py.warnings"  # Python's warnings once logging.captureWarnings(True) (a job's, see mibench.app)


def as_is(record: logging.LogRecord) -> bool:
    """Whether the console shows ``record`` as it is: mibench's own lines and Python's warnings (their usual text)."""
    return ours(record) or record.name == WARNINGS


class Console(logging.StreamHandler):
    """The console of a job: mibench's lines and Python's warnings as they are (info on stdout; notes, warnings,
    errors and their tracebacks on stderr), every other record with the configured formatter on stdout (Hydra's
    default). A progress bar on
    the terminal is cleared for the line and drawn again below it. The streams are looked up per record, so
    redirections made after logging was set up (pytest's capture) are followed."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def format(self, record: logging.LogRecord) -> str:
        if not as_is(record):
            return super().format(record)
        text = record.getMessage().rstrip("\n")
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        return text

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if as_is(record) and record.levelno >= logging.WARNING else sys.stdout
        try:
            text = self.format(record) + "\n"
            with _bars_cleared(stream):
                stream.write(text)
                stream.flush()
        except Exception:  # noqa: BLE001 -- logging's own convention: report, never raise
            self.handleError(record)


_BARS: list[Callable[..., contextlib.AbstractContextManager]] = []  # how to write a line past drawn progress bars


def bars_cleared_by(write_mode: Callable[..., contextlib.AbstractContextManager]) -> None:
    """The progress bars' module says how a line is written while bars are drawn (tqdm's
    ``external_write_mode``): the console clears them around each line. The CLI never imports tqdm for this."""
    _BARS[:] = [write_mode]


def _bars_cleared(stream: object) -> contextlib.AbstractContextManager:
    """Progress bars cleared while a line is written, when a module that draws them said how."""
    return _BARS[0](file=stream) if _BARS else contextlib.nullcontext()


class AppendTo(logging.Handler):
    """Appends each record, formatted as Hydra's job log, to every file of ``paths`` (opened per record: a
    line every few minutes, for any number of runs, holds no file open)."""

    def __init__(self, paths: Sequence[Path]):
        super().__init__()
        self.paths = [Path(p) for p in paths]
        self.setFormatter(logging.Formatter(FILE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
            for p in self.paths:
                with open(p, "a", encoding="utf-8") as f:
                    f.write(text)
        except Exception:  # noqa: BLE001
            self.handleError(record)


@contextlib.contextmanager
def run_logs(run_dirs: Sequence[Path]) -> Iterator[None]:
    """While a vectorised group (or a run of it) trains or is recorded outside its jobs' Hydra logging:
    mibench's lines once on the console and in the app.log of each of ``run_dirs``; then as before."""
    handlers, propagate = LOG.handlers[:], LOG.propagate
    LOG.handlers = [Console(), AppendTo([Path(d) / APP_LOG for d in run_dirs])]
    LOG.propagate = False
    try:
        yield
    finally:
        LOG.handlers, LOG.propagate = handlers, propagate


def duration(seconds: float) -> str:
    """``01:43``, ``1:02:03`` (as tqdm shows times)."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


__all__ = ["APP_LOG", "AppendTo", "Console", "LOG", "WARNINGS", "as_is", "duration", "run_logs"]


@contextlib.contextmanager
def exit_2_on_message() -> Iterator[None]:
    """A subcommand's bad input: a ``SystemExit`` that carries a message is printed on stderr as its one line and
    becomes exit status 2 (the CLI's convention); any other exit passes through."""
    try:
        yield
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            raise SystemExit(2) from None
        raise
