"""One line instead of three a poll: submitit's "Bypassing sacct error" warnings on a cluster without accounting.

submitit's watcher asks ``sacct`` for the state of a sweep's jobs on every poll. On a SLURM cluster with no
accounting database sacct fails, and submitit logs a multi-line warning ("Call #N - Bypassing sacct error
Command '['sacct', ...]' returned non-zero exit status 1, status may be inaccurate.") every time, for the
whole sweep; and each record prints three times (submitit's own stderr and stdout handlers, then Hydra's
root handler). :class:`SacctQuiet`, a filter on the ``submitit`` logger, drops every such record and, for the
first, logs :data:`MESSAGE` once through the ``mibench.slurm`` logger instead (root's handlers only: one line
under Hydra, or Python's last-resort stderr line without any). Every other submitit message passes unchanged.

sacct also writes its own error ("Slurm accounting storage is disabled") to the terminal on every poll, past
any logging. So once sacct has failed, the filter also points ``submitit.core.core``'s ``subprocess`` at
:class:`QuietSacct`, which runs later sacct calls with stderr to /dev/null (stdout, the states, is still
read; every other command is untouched). A sweep then prints sacct's first error and the one line above.

Installed by ``hydra_plugins/mibench_launcher/__init__.py``, which Hydra imports on every start (its plug-in
scan), so it is in place before the submitit launcher polls. It imports only ``logging``.
"""
from __future__ import annotations

import logging
import os
from typing import Any

LOGGER = "submitit"
NOTICE_LOGGER = "mibench.slurm"  # not under "submitit": its records reach root's handlers only
MARKER = "Bypassing sacct error"
MESSAGE = ("SLURM accounting (sacct) unavailable: job states come from the jobs' result files "
           "(a job that dies before writing one is not seen to end); further sacct warnings suppressed")


class SacctQuiet(logging.Filter):
    """Drops "Bypassing sacct error" records; the first one becomes one :data:`MESSAGE` line (logger ``mibench.slurm``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0  # sacct warnings seen (all dropped; the first announced)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 -- a record that cannot format is not ours to judge
            return True
        if MARKER not in text:
            return True
        self.seen += 1
        if self.seen == 1:
            logging.getLogger(NOTICE_LOGGER).warning(MESSAGE)
            quiet_sacct_stderr()
        return False


class QuietSacct:
    """Stands in for the ``subprocess`` module in submitit.core.core: sacct's stderr goes to /dev/null."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def check_output(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(command, (list, tuple)) and command and os.path.basename(str(command[0])) == "sacct":
            kwargs.setdefault("stderr", self._module.DEVNULL)
        return self._module.check_output(command, *args, **kwargs)


def quiet_sacct_stderr() -> bool:
    """Make submitit's later sacct calls quiet on stderr; True if in place."""
    try:
        import submitit.core.core as core
    except ImportError:  # (a sacct warning comes from submitit: it is there when this runs)
        return False
    sub = getattr(core, "subprocess", None)
    if sub is None:
        return False
    if not isinstance(sub, QuietSacct):
        core.subprocess = QuietSacct(sub)
    return True


def install(logger: logging.Logger | None = None) -> SacctQuiet:
    """Add the filter to ``logger`` (submitit's) unless one is there already; returns the filter in place."""
    logger = logger or logging.getLogger(LOGGER)
    for f in logger.filters:
        if isinstance(f, SacctQuiet) or type(f).__name__ == "SacctQuiet":  # also one from a reloaded module
            return f  # type: ignore[return-value]
    f = SacctQuiet()
    logger.addFilter(f)
    return f


__all__ = ["MESSAGE", "QuietSacct", "SacctQuiet", "install", "quiet_sacct_stderr"]
