"""LightningDataModules for the benchmarks."""
from .gaussian import GaussianDataModule, mi_from_rho, optimal_scores, rho_from_mi, sample_correlated

__all__ = ["GaussianDataModule", "mi_from_rho", "optimal_scores", "rho_from_mi", "sample_correlated"]
