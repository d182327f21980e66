"""Data of the benchmarks: samplers, streams and loaders."""
from .gaussian import mi_from_rho, optimal_scores, rho_from_mi, sample_correlated

__all__ = ["mi_from_rho", "optimal_scores", "rho_from_mi", "sample_correlated"]
