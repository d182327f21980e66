"""Encoder networks for the image benchmarks (``model=<name>``): f(x) -> [B, out_dim]."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..checks import Int, Maybe, Numbers

from .convnet import ConvNet
from .resnet import CifarResNet18, ResNet18, ResNet50

REGISTRY: dict[str, type[nn.Module]] = {
    "resnet18": CifarResNet18,      # 32 px CIFAR ResNet-18 (default)
    "resnet18_224": ResNet18,       # torchvision-style ResNet-18 on 224 px resized inputs (Choi & Lee's code)
    "resnet50": ResNet50,           # ImageNet ResNet-50 (bottleneck [3, 4, 6, 3], 2048 features; the jigsaw encoder)
    "convnet": ConvNet,             # small, for CPU runs
}


# what the options' keys may hold (a task that builds a model checks the keys its option has)
SCHEMA = {"width": Int(1), "blocks": Numbers(Int(1), "residual blocks per stage"),
          "input_size": Maybe(Int(32), "null for the data's own size")}


def build_model(cfg: Mapping[str, Any], out_dim: int | None) -> nn.Module:
    """Build ``cfg['name']`` with an ``out_dim``-wide linear head (None: no head, the pooled post-ReLU
    backbone features, e.g. 512-d for ResNet-18); other keys are constructor arguments."""
    name = cfg["name"]
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r} (valid: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name](out_dim, **{k: v for k, v in cfg.items() if k != "name"})


__all__ = ["REGISTRY", "SCHEMA", "build_model", "ConvNet", "CifarResNet18", "ResNet18", "ResNet50"]
