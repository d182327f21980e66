"""Per-run figures the benchmarks draw; the figures over many runs are :mod:`mibench.reports`' (``python -m
mibench.figures <study> <runs dir>`` dispatches to them, see ``__main__``)."""
from __future__ import annotations

from typing import Any

__all__ = ["collect_eta_runs", "eta_fig3a"]


def __getattr__(name: str) -> Any:
    """``eta_fig3a`` and ``collect_eta_runs``: now :mod:`mibench.reports.eta_mine`'s (imported on use: the benchmarks
    import this package, the reports import the benchmarks)."""
    if name in __all__:
        from ..reports import eta_mine

        return getattr(eta_mine, name)
    raise AttributeError(name)
