"""A small conv net for CPU runs of SLB/CLB: four 3x3 conv-BN-ReLU stages (the first three
followed by 2x2 max-pool), global average pool, linear head. ~0.4 M parameters at width 32."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class ConvNet(nn.Module):
    def __init__(self, out_dim: int, width: int = 32):
        super().__init__()
        chans = (3, width, 2 * width, 4 * width, 8 * width)
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                       nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], out_dim) if out_dim is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
