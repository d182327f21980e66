"""Benchmarks: one LightningModule (and a ``run_*`` function) per benchmark choice."""
from __future__ import annotations

from .staircase import StaircaseModule, run_staircase

RUNNERS = {"staircase": run_staircase}

__all__ = ["RUNNERS", "StaircaseModule", "run_staircase"]
