"""ResNet encoders (He et al. 2016), written out so that no torchvision is needed.

- :class:`CifarResNet18`: the CIFAR variant (3x3 stride-1 stem, no max-pool) for 32x32 inputs.
- :class:`ResNet18`: the ImageNet/torchvision layout (7x7 stride-2 stem + max-pool) that Choi &
  Lee's code runs on CIFAR resized to 224x224; the resize happens on the device (F.interpolate).
- :class:`ResNet50`: the ImageNet layout with bottleneck blocks [3, 4, 6, 3] (2048 pooled features at
  width 64; torchvision's v1.5 block, stride on the 3x3 conv); ``width`` / ``blocks`` give tiny variants.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, torchvision's v1.5), 1x1 expand x4; projection shortcut when needed."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x), inplace=True)


def _stages(widths: tuple[int, ...] = (64, 128, 256, 512), blocks: tuple[int, ...] = (2, 2, 2, 2),
            block: type[nn.Module] = BasicBlock) -> nn.Sequential:
    layers, cin = [], widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(block(cin, w, stride=2 if (i > 0 and j == 0) else 1))
            cin = w * block.expansion
    return nn.Sequential(*layers)


def _init(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 images: 3x3 stem, four stages of two basic blocks, global pool, linear head."""

    def __init__(self, out_dim: int, width: int = 64):
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layers = _stages(widths)
        self.fc = nn.Linear(widths[-1], out_dim) if out_dim is not None else nn.Identity()
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class ResNet18(nn.Module):
    """torchvision-style ResNet-18 (7x7/2 stem, 3x3/2 max-pool); inputs resized to ``input_size`` on the device."""

    def __init__(self, out_dim: int, input_size: int = 224, width: int = 64):
        super().__init__()
        self.input_size = int(input_size)
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = _stages(widths)
        self.fc = nn.Linear(widths[-1], out_dim) if out_dim is not None else nn.Identity()
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        h = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


class ResNet50(nn.Module):
    """ResNet-50 (7x7/2 stem + 3x3/2 max-pool, bottleneck stages [3, 4, 6, 3]), global average pool.

    ``out_dim`` None: no head, the pooled features (``out_features`` = 32 * width: 2048 at width 64).
    ``width`` / ``blocks`` give smaller encoders of the same layout (tests: width 4, blocks [1, 1, 1, 1]).
    """

    def __init__(self, out_dim: int | None, width: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3)):
        super().__init__()
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, 2, 1))
        self.layers = _stages(widths, tuple(int(b) for b in blocks), Bottleneck)
        self.out_features = widths[-1] * Bottleneck.expansion
        self.fc = nn.Linear(self.out_features, out_dim) if out_dim is not None else nn.Identity()
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        h = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
