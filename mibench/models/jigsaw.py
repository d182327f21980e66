"""The jigsaw networks of the eta-MINE paper (Appendix D): patch encoder E, CE descrambler, cosine witness f(x, y).

- :class:`PatchEncoder`: E applied to every patch of a puzzle, [B, 9, 3, P, P] -> [B, 9, F] (ResNet-50: F = 2048).
- :class:`Descrambler` ("Jigsaw CE Training"): per patch Linear(F -> 512), the 9 stacked (9 * 512) -> Linear(512)
  -> BatchNorm -> ReLU -> Dropout -> Linear(512 -> 100 permutations) (Noroozi & Favaro's classifier).
- :class:`CosineWitness` ("Jigsaw MI training"): x (the 9 patch features) and y (a one-hot of the 100 permutations)
  are linearly projected to 512; x then goes through 2 stages of conv, batch norm, ReLU and max-pool, giving
  "about 9216" features, projected to 512; f(x, y) = cos(x_512, y_512) in [-1, 1].
  Left open by the paper and chosen here: the 9 x 512 projected features form a one-channel 9 x 512 map (rows =
  patches in puzzle order); each stage is a 3x3 conv (padding 1), BN, ReLU and a (1, 2) max-pool along the feature
  axis; channels 4 then 8, so 8 x 9 x 128 = 9216 features exactly.
- :func:`witness_layout`: the score matrix handed to a registry estimator from ``S[i, p] = f(x_i, y_p)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_PATCHES = 9


class PatchEncoder(nn.Module):
    """Runs ``backbone`` ([N, 3, P, P] -> [N, F]) on every patch: [B, 9, 3, P, P] -> [B, 9, F]."""

    def __init__(self, backbone: nn.Module, out_features: int):
        super().__init__()
        self.backbone, self.out_features = backbone, int(out_features)

    def forward(self, patches: Tensor) -> Tensor:
        b, n = patches.shape[:2]
        return self.backbone(patches.reshape(b * n, *patches.shape[2:])).view(b, n, -1)


class Descrambler(nn.Module):
    """CE baseline: per-patch Linear(F, proj), stacked 9 * proj -> Linear(hidden), BN, ReLU, Dropout, Linear(n_perms)."""

    def __init__(self, features: int, n_perms: int = 100, proj: int = 512, hidden: int = 512, dropout: float = 0.5):
        super().__init__()
        self.proj = nn.Linear(features, proj)
        self.head = nn.Sequential(nn.Linear(N_PATCHES * proj, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(hidden, n_perms))

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, 9, F] (puzzle order) -> logits [B, n_perms]."""
        return self.head(self.proj(feats).flatten(1))


class CosineWitness(nn.Module):
    """f(x, y) = <g(x) / |g(x)|, h(y) / |h(y)|> with x the 9 patch features and y a one-hot permutation."""

    def __init__(self, features: int, n_perms: int = 100, dim: int = 512, channels: tuple[int, ...] = (4, 8)):
        super().__init__()
        self.n_perms, self.dim = int(n_perms), int(dim)
        self.x_proj = nn.Linear(features, dim)
        stages, cin, width = [], 1, dim
        for c in channels:
            stages += [nn.Conv2d(cin, c, 3, 1, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d((1, 2))]
            cin, width = c, width // 2
        self.stages = nn.Sequential(*stages)
        self.conv_features = cin * N_PATCHES * width  # 8 * 9 * 128 = 9216 at dim 512
        self.x_out = nn.Linear(self.conv_features, dim)
        self.y_proj = nn.Linear(self.n_perms, dim)

    def embed_x(self, feats: Tensor) -> Tensor:
        """feats [B, 9, F] -> unit vectors [B, dim]."""
        h = self.stages(self.x_proj(feats).unsqueeze(1))  # [B, C, 9, dim / 4]
        return F.normalize(self.x_out(h.flatten(1)), dim=1)

    def embed_y(self, perm_index: Tensor) -> Tensor:
        """permutation indices [K] -> unit vectors [K, dim] (the one-hot's linear projection)."""
        return F.normalize(self.y_proj(F.one_hot(perm_index, self.n_perms).to(self.y_proj.weight.dtype)), dim=1)

    def forward(self, feats: Tensor, perm_index: Tensor) -> Tensor:
        """``S[i, j] = f(x_i, y_{perm_index[j]})``, cosine similarities [B, K]."""
        return self.embed_x(feats) @ self.embed_y(perm_index).t()


NEGATIVES = ("unused", "unused_all", "batch")


def witness_layout(s_batch: Tensor, slot: Tensor, n_used: int, negatives: str = "unused"
                   ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
    """The estimator's (scores, joint, marginal, column index into the batch's permutations).

    s_batch[i, c] = f(x_i, y_c) for the minibatch's permutations c: the first ``n_used`` scrambled the puzzles
    (puzzle i by ``slot[i]``), the next ``n_used`` scrambled none of them ("unused").
      unused:     Appendix D: each puzzle's joint pair (i, slot[i]) and one marginal pair (i, n_used + slot[i]),
                  as many marginal as joint samples (160 + 160 for 10 images x 16 permutations); rows layout
      unused_all: every unused permutation is a marginal pair of every puzzle (16 per row)
      batch:      a square matrix over the puzzles, scores[i, j] = f(x_i, y of puzzle j), joint on the diagonal and
                  the off-diagonal entries as marginal pairs (the in-batch shuffle; off-diagonal pairs of two
                  images scrambled by the same permutation count as marginal); masks None (paired layout)
    """
    n, dev = s_batch.shape[0], s_batch.device
    if negatives == "batch":
        return s_batch[:, slot], None, None, slot
    cols = torch.arange(2 * n_used, device=dev)
    joint = cols.view(1, -1) == slot.view(-1, 1)
    if negatives == "unused":
        marginal = cols.view(1, -1) == (slot + n_used).view(-1, 1)
    elif negatives == "unused_all":
        marginal = (cols >= n_used).view(1, -1).expand(n, -1)
    else:
        raise ValueError(f"unknown negatives {negatives!r} (valid: {', '.join(NEGATIVES)})")
    return s_batch[:, : 2 * n_used], joint, marginal, cols


__all__ = ["PatchEncoder", "Descrambler", "CosineWitness", "witness_layout", "NEGATIVES", "N_PATCHES"]
