"""When the engine checkpoints besides segment ends: every ``every_s`` seconds of wall clock, and when the
cluster is about to stop the job (SLURM's SIGUSR2 before the time limit, SIGTERM at a preemption).

A signal only raises a flag; the engine acts on it at the next step boundary (a checkpoint taken inside a
step would mix two steps), records the interruption, then hands the signal to whatever handled it before
(submitit's handler requeues the job and exits; the default action ends the process; after SIGTERM the process
ends there even when that handler returns, as submitit's does for SIGTERM). Handlers are
installed only inside a SLURM job and only in the main thread: a local run keeps its usual Ctrl-C / kill.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from .. import cluster

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def injected_signal() -> tuple[int, int] | None:
    """``MIBENCH_SIGNAL_AT_STEP=k:USR2`` (or ``k:TERM``): (k, signal) -- the job signals itself once step k is
    done, as SLURM would (the interruption tests); None when unset."""
    spec = os.environ.get("MIBENCH_SIGNAL_AT_STEP")
    if not spec:
        return None
    step, _, name = spec.partition(":")
    return int(step), int(getattr(signal, f"SIG{name or 'USR2'}"))


class Interrupts:
    """Flags stop signals and wall-clock checkpoint deadlines for one training loop (a context manager)."""

    def __init__(self, every_s: float | None, lead_s: float = 120.0, install: bool | None = None):
        self.every_s = every_s if every_s and every_s > 0 else None
        self.lead_s = lead_s
        self.install = (cluster.job_id() is not None) if install is None else install
        self.signum: int | None = None
        self._old: dict[int, Any] = {}
        self._last = time.monotonic()
        self._t_start = time.monotonic()
        self._inject = injected_signal() if self.install else None

    def __enter__(self) -> "Interrupts":
        if self.install and threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._flag)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
        if self.signum is not None and exc[0] is None:  # flagged after the last step: act on it now
            self.forward()

    def _flag(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def due(self, t: int) -> bool:
        """Whether the engine should checkpoint after step ``t`` (a flag or the wall clock; no host sync)."""
        if self._inject is not None and self._inject[0] == t:
            os.kill(os.getpid(), self._inject[1])
        return self.signum is not None or (self.every_s is not None and time.monotonic() - self._last >= self.every_s)

    def saved(self) -> None:
        self._last = time.monotonic()

    def event(self, step: int) -> dict[str, Any]:
        """The interruption being handled, as the record keeps it."""
        assert self.signum is not None
        kind = cluster.interruption_kind(self.signum, cluster.job_times(), self.lead_s)
        return {"kind": kind, "signal": signal.Signals(self.signum).name, "step": step,
                "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "slurm_job_id": cluster.job_id(),
                "restart": cluster.restart_count(), "attempt_s": round(time.monotonic() - self._t_start, 1)}

    def forward(self) -> None:
        """Hand the flagged signal to the handler that was there before: submitit's requeues the job and exits,
        the default action ends the process. After SIGTERM (a preemption or ``scancel``: SLURM sends SIGKILL
        once its grace time is over) the process ends here even when that handler returns (submitit's ignores
        SIGTERM): the checkpoint is written, and steps trained after it would be thrown away. A handler of
        SIGUSR2 that returns (no submitit) lets training go on until the time limit."""
        signum, self.signum = self.signum, None
        old = self._old.get(signum, signal.getsignal(signum))
        if callable(old):
            old(signum, None)
        elif old != signal.SIG_IGN:
            for s, o in self._old.items():
                signal.signal(s, o)
            self._old.clear()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        if signum == signal.SIGTERM:  # the handler returned (or ignores it): end here, at the checkpoint
            raise SystemExit(128 + signum)
