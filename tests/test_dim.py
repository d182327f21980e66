"""Deep InfoMax (benchmark=dim): networks, score layouts vs loops, objectives, probes, end to end.

Everything runs on tiny generated data (mibench.data.fake_cifar); nothing here needs ../shared.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mibench.benchmarks.dim import local_estimator_cfg
from mibench.estimators import bounds, build_estimator
from mibench.models.dim import (DIMEncoder, GlobalMINet, LocalMINet, MapMINet, PriorDiscriminator, global_scores,
                                local_score_tensor, local_scores, make_probe, prior_scores)


def test_encoder_and_mi_network_shapes():
    enc = DIMEncoder()
    out = enc(torch.randn(5, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "local": (5, 128, 8, 8), "conv": (5, 256, 4, 4), "fc": (5, 1024), "y": (5, 64)}
    assert tuple(LocalMINet(128, 32)(out["local"]).shape) == (5, 32, 64)
    assert tuple(GlobalMINet(64, 32)(out["y"]).shape) == (5, 32)
    assert tuple(MapMINet(32)(out["local"]).shape) == (5, 32)
    assert tuple(PriorDiscriminator(64)(out["y"]).shape) == (5,)
    for kind in ("mlp", "linear"):
        assert tuple(make_probe(kind, 1024, 10)(out["fc"]).shape) == (5, 10)
    # Y is the 64-d output of a plain linear layer on the fc features
    assert torch.allclose(out["y"], enc.out(out["fc"]))


def test_local_score_tensor_and_layout_against_loops():
    b, d, hw = 3, 4, 5
    g, l = torch.randn(b, d), torch.randn(b, d, hw)
    s = local_score_tensor(g, l)
    ref = torch.zeros(b, b, hw)
    for i in range(b):
        for j in range(b):
            for k in range(hw):
                ref[i, j, k] = sum(g[i, c] * l[j, c, k] for c in range(d))
    assert torch.allclose(s, ref, atol=1e-5)
    scores, joint, marginal = local_scores(s)
    assert scores.shape == (b, b * hw)
    for i in range(b):
        for c in range(b * hw):
            j, k = divmod(c, hw)
            assert scores[i, c] == ref[i, j, k]
            assert bool(joint[i, c]) == (i == j) and bool(marginal[i, c]) == (i != j)


def _dim_loops(s):
    """DIM's local objectives written out with loops (Hjelm et al. / DIM slides; authors' nce_loss)."""
    b, _, hw = s.shape
    pos = [s[i, i, k] for i in range(b) for k in range(hw)]
    neg = [s[i, j, k] for i in range(b) for j in range(b) if j != i for k in range(hw)]
    jsd = sum(-F.softplus(-p) for p in pos) / len(pos) - sum(F.softplus(q) for q in neg) / len(neg)
    dv = sum(pos) / len(pos) - torch.log(sum(torch.exp(q) for q in neg) / len(neg))
    nce = 0.0
    for i in range(b):
        negs = torch.stack([s[i, j, k] for j in range(b) if j != i for k in range(hw)])
        for k in range(hw):
            logits = torch.cat([s[i, i, k].view(1), negs])
            nce = nce + F.log_softmax(logits, 0)[0]
    nce = nce / (b * hw) + math.log(1 + (b - 1) * hw)  # Poole's K-sample form: <= log K
    return jsd, dv, nce


def test_registry_estimators_on_the_local_layout_match_dim_loops():
    torch.manual_seed(3)
    s = 2.0 * torch.randn(4, 4, 6)
    jsd, dv, nce = _dim_loops(s)
    scores, joint, marginal = local_scores(s)
    est = {n: build_estimator(local_estimator_cfg({"name": n}))(scores, joint=joint, marginal=marginal)
           for n in ("js", "dv", "infonce")}
    assert torch.allclose(-est["js"].loss, jsd, atol=1e-5)
    assert torch.allclose(est["dv"].mi, dv, atol=1e-5)
    assert torch.allclose(est["infonce"].mi, nce, atol=1e-5)


def test_global_scores_and_prior_scores_against_loops():
    g, m = torch.randn(3, 4), torch.randn(3, 4)
    sc = global_scores(g, m)
    for i in range(3):
        for j in range(3):
            assert torch.isclose(sc[i, j], (g[i] * m[j]).sum())
    d_real, d_fake = torch.randn(5), torch.randn(5)
    scores, real, fake = prior_scores(d_real, d_fake)
    # the discriminator's loss through the registry's f-GAN JS = binary cross-entropy, real = prior
    disc = build_estimator({"name": "js"})(scores, joint=real, marginal=fake).loss
    bce = F.binary_cross_entropy_with_logits(d_real, torch.ones(5)) + F.binary_cross_entropy_with_logits(
        d_fake, torch.zeros(5))
    assert torch.isclose(disc, bce, atol=1e-6)


def test_infonce_pair_partition_against_loop_and_row_partition():
    torch.manual_seed(4)
    scores = torch.randn(3, 7)
    joint = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    marginal = torch.ones_like(joint)  # marginal entries that are joint ones are not negatives
    marginal[0, 6] = False
    terms = []
    for i in range(3):
        negs = [scores[i, c] for c in range(7) if marginal[i, c] and not joint[i, c]]
        for c in range(7):
            if joint[i, c]:
                part = torch.stack([scores[i, c]] + negs)
                terms.append(scores[i, c] - (torch.logsumexp(part, 0) - math.log(len(part))))
    est = bounds.infonce(scores, joint, marginal, partition="pair")
    assert torch.allclose(est.mi, torch.stack(terms).mean(), atol=1e-6)
    # one joint entry per row: pair == row (the staircase / SLB results are unchanged)
    sq = torch.randn(5, 5)
    assert torch.allclose(bounds.infonce(sq, partition="pair").mi, bounds.infonce(sq).mi, atol=1e-6)
    onehot = torch.nn.functional.one_hot(torch.tensor([1, 0, 2, 2, 1]), 3).bool()
    logits = torch.randn(5, 3)
    assert torch.allclose(bounds.infonce(logits, onehot, torch.ones_like(onehot), partition="pair").mi,
                          bounds.infonce(logits, onehot, torch.ones_like(onehot)).mi, atol=1e-6)
