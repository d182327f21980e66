"""Layer-pair Deep InfoMax networks (eta-MINE paper, "Improved Mutual Information Estimation", Fig. 4).

Fig. 4a's encoder is "similar to DCGAN" and the paper gives no layer sizes in its text (the figure's
boxes did not survive extraction), so the encoder here is DIM's 32x32 DCGAN-like encoder
(:class:`mibench.models.dim.DIMEncoder`, the one the eta-MINE authors build on) cut after layer k:

    conv1  conv(64, 4, 2, 1)-BN-ReLU    [64, 16, 16]
    conv2  conv(128, 4, 2, 1)-BN-ReLU   [128, 8, 8]     (the paper's best encoder ends here)
    conv3  conv(256, 4, 2, 1)-BN-ReLU   [256, 4, 4]
    fc     linear 1024-BN-ReLU          [1024]
    y      linear 64                    [64]

Fig. 4b: MI between x' = E_l(X) (a shallow layer) and y' = E_k(X) (a deeper one) of the same image,
each passed through a small trainable head; the witness is **separable**, f(x', y') = <h(x'), g(y')>:
one head pass per image and side gives the whole B x B score matrix of a batch as one matmul (a concat
witness needs B^2 head passes), the off-diagonal entries are the B(B-1) unrelated pairs, and it is the
form of DIM's global/local MI networks and of the paper's own Jigsaw witness (a dot product of two
projections, appendix D). Heads: on a feature map, 1x1 conv (``hidden``)-BN-ReLU, average-pooled to
4 x 4, flattened, linear to ``units``; on a vector, linear (``hidden``)-BN-ReLU-linear (``units``).
"""
from __future__ import annotations

from torch import Tensor, nn

from .dim import DIMEncoder

ORDER = ("conv1", "conv2", "conv3", "fc", "y")
SHAPES: dict[str, tuple[int, ...]] = {"conv1": (64, 16, 16), "conv2": (128, 8, 8), "conv3": (256, 4, 4),
                                      "fc": (1024,), "y": (64,)}
_DIM_NAMES = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "fc": "fc", "y": "out"}


class LayerEncoder(nn.Module):
    """DIM's DCGAN-like encoder up to (and including) layer ``upto``; ``forward`` returns every layer's
    output ``{"conv1": ..., ..., upto: ...}`` (the layers past ``upto`` are not built into the module)."""

    def __init__(self, upto: str = "conv2", in_channels: int = 3, global_dim: int = 64):
        super().__init__()
        if upto not in ORDER:
            raise ValueError(f"unknown layer {upto!r} (valid: {', '.join(ORDER)})")
        full = DIMEncoder(in_channels, global_dim)
        self.upto = upto
        self.blocks = nn.ModuleDict({n: getattr(full, _DIM_NAMES[n]) for n in ORDER[: ORDER.index(upto) + 1]})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        h = x
        for name, block in self.blocks.items():
            h = block(h.flatten(1) if name == "fc" else h)
            out[name] = h
        return out


def make_head(shape: tuple[int, ...], units: int, hidden: int) -> nn.Module:
    """The trainable head on one side of the witness (module docstring): [B, *shape] -> [B, units]."""
    if len(shape) == 3:
        pool = min(4, shape[1])
        return nn.Sequential(nn.Conv2d(shape[0], hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(pool), nn.Flatten(), nn.Linear(hidden * pool * pool, units))
    return nn.Sequential(nn.Linear(shape[0], hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, units))


class PairWitness(nn.Module):
    """f(x', y') = <h(x'), g(y')> for layers (l, k): ``forward`` gives ``scores[i, j] = f(x'_i, y'_j)``."""

    def __init__(self, layers: tuple[str, str], units: int = 256, hidden: int = 256):
        super().__init__()
        self.layers = tuple(layers)
        self.head_x = make_head(SHAPES[layers[0]], units, hidden)
        self.head_y = make_head(SHAPES[layers[1]], units, hidden)

    def embed(self, feats: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(h(x'), g(y')): [B, units] each, from the encoder's layer outputs."""
        return self.head_x(feats[self.layers[0]]), self.head_y(feats[self.layers[1]])

    def forward(self, feats: dict[str, Tensor]) -> Tensor:
        hx, gy = self.embed(feats)
        return pair_scores(hx, gy)


def pair_scores(hx: Tensor, gy: Tensor) -> Tensor:
    """``scores[i, j] = <hx_i, gy_j>``: joint pairs (same image) on the diagonal, unrelated ones off it."""
    return hx @ gy.t()


class Supervised(nn.Module):
    """Table 2's supervised reference: the full encoder (conv1-conv3, fc 1024) and a linear layer to the classes,
    trained end to end with cross-entropy."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.encoder = LayerEncoder("fc")
        self.classifier = nn.Linear(SHAPES["fc"][0], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.encoder(x)["fc"])
