"""Where the step runs: device, mixed precision and (multi-GPU) data parallelism.

One device without a gradient scaler (CPU ``32-true`` or ``64-true``, GPU ``bf16-mixed``) is plain PyTorch:
``loss.backward()`` and ``optimizer.step()`` directly, autocast around the task's forward.
DDP and fp16 (gradient scaling) go through Lightning Fabric, imported only then: Fabric
launches the processes, and gradients are averaged over ranks after each backward.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor

from ..precision import default_dtype, run_dtype


class Backend:
    """Single process, one device."""

    world_size = 1
    rank = 0

    def __init__(self, accelerator: str = "cpu", precision: str = "32-true"):
        cuda = accelerator in ("gpu", "cuda")
        self.device = torch.device("cuda" if cuda else "cpu")
        self.precision = str(precision)
        self.autocast_dtype = torch.bfloat16 if self.precision.startswith("bf16") and cuda else None
        self.dtype = run_dtype(self.precision)

    def dtype_scope(self) -> contextlib.AbstractContextManager[None]:
        """Tensors and modules made inside take the run's dtype (float64 under ``64-true``)."""
        return default_dtype(self.dtype)

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The task's forward: bf16 autocast on a GPU with ``bf16-mixed`` (bounds are computed in fp32)."""
        if self.autocast_dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                yield

    def backward(self, loss: Tensor, params: list[Tensor]) -> None:
        loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def reduce(self, x: Tensor, op: str = "sum") -> Tensor:
        return x

    def barrier(self) -> None:
        pass


class FabricBackend(Backend):
    """DDP and/or fp16 through Lightning Fabric (process launch, process group, gradient scaler)."""

    def __init__(self, accelerator: str, devices: Any, strategy: str, precision: str):
        from lightning.fabric import Fabric

        super().__init__(accelerator, precision)
        self.fabric = Fabric(accelerator=accelerator, devices=devices, strategy=strategy, precision=precision)
        self.fabric.launch()
        self.device = self.fabric.device
        self.world_size, self.rank = self.fabric.world_size, self.fabric.global_rank

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        with self.fabric.autocast():
            yield

    def backward(self, loss: Tensor, params: list[Tensor]) -> None:
        self.fabric.backward(loss)
        if self.world_size > 1:  # average gradients over ranks (each rank saw its share of the batches)
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                flat = torch.cat([g.reshape(-1) for g in grads])
                torch.distributed.all_reduce(flat)
                flat /= self.world_size
                offset = 0
                for g in grads:
                    g.copy_(flat[offset: offset + g.numel()].view_as(g))
                    offset += g.numel()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        scaler = getattr(self.fabric.strategy.precision, "scaler", None)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def reduce(self, x: Tensor, op: str = "sum") -> Tensor:
        return self.fabric.all_reduce(x, reduce_op=op) if self.world_size > 1 else x

    def barrier(self) -> None:
        self.fabric.barrier()


def make_backend(hw: Any) -> Backend:
    """The backend for the ``hardware`` group: Fabric only for several devices / DDP / fp16."""
    precision = str(hw.get("precision", "32-true"))
    if needs_fabric(hw):
        return FabricBackend(hw.accelerator, hw.get("devices", 1), str(hw.get("strategy", "auto")), precision)
    return Backend(hw.accelerator, precision)


def needs_fabric(hw: Any) -> bool:
    """DDP, several devices or fp16 (a gradient scaler): the ``hardware`` choices that go through Fabric."""
    return (str(hw.get("strategy", "auto")).startswith("ddp") or hw.get("devices", 1) not in (1, "1")
            or str(hw.get("precision", "32-true")).startswith("16"))
