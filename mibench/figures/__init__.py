"""Multi-run figures: ``python -m mibench.figures <study> <runs dir>`` (see ``__main__``)."""
from .eta import collect_eta_runs, eta_fig3a

__all__ = ["collect_eta_runs", "eta_fig3a"]
