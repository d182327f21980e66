"""The run's floating-point type: float32 (``hardware.precision=32-true`` and the mixed precisions, whose
bounds are computed in fp32), or float64 (``64-true``: every tensor the run makes, for regression tests
whose rounding differences between CPU kernels stay at ~1e-9 relative instead of growing to ~1e-2)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor

PRECISIONS = ("32-true", "64-true", "bf16-mixed", "16-mixed")


def run_dtype(precision: str) -> torch.dtype:
    """float64 for ``64-true``, float32 otherwise (mixed precisions keep fp32 weights and bounds)."""
    return torch.float64 if str(precision).startswith("64") else torch.float32


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Tensors and modules made inside take ``dtype`` (torch's default dtype, restored on exit)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def full(x: Tensor) -> Tensor:
    """``x`` in the run's dtype: scores a critic computed under bf16 autocast, or images decoded from uint8,
    become fp32 (fp64 under ``64-true``) before a bound or a network sees them. Same as ``x.float()`` in fp32."""
    return x.to(torch.get_default_dtype())
