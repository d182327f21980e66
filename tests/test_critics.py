"""Critics: each score matrix against a per-pair (looped) evaluation of the same network."""
import pytest
import torch

from mibench.critics import BilinearCritic, ConcatCritic, SeparableCritic, build_critic


def test_separable_is_dot_product():
    c = SeparableCritic(3, 4, hidden=16, layers=2, embed=8)
    x, y = torch.randn(5, 3), torch.randn(6, 4)
    ref = torch.tensor([[float((c.h(x[i]) @ c.g(y[j])).detach()) for j in range(6)] for i in range(5)])
    assert torch.allclose(c(x, y), ref, atol=1e-5)


def test_bilinear():
    c = BilinearCritic(3, 4, hidden=16, embed=8)
    with torch.no_grad():
        c.W.copy_(torch.randn(8, 8))
    x, y = torch.randn(5, 3), torch.randn(6, 4)
    ref = torch.tensor([[float((c.h(x[i]) @ c.W @ c.g(y[j])).detach()) for j in range(6)] for i in range(5)])
    assert torch.allclose(c(x, y), ref, atol=1e-4)


def test_concat_equals_mlp_on_every_concatenated_pair():
    c = ConcatCritic(3, 4, hidden=16, layers=2)
    net = torch.nn.Sequential(c.first, *c.rest)
    x, y = torch.randn(5, 3), torch.randn(6, 4)
    ref = torch.stack([torch.stack([net(torch.cat([x[i], y[j]])).squeeze() for j in range(6)]) for i in range(5)])
    assert torch.allclose(c(x, y), ref, atol=1e-5)
    assert sum(p.numel() for p in c.parameters()) == sum(p.numel() for p in net.parameters())


def test_defaults_are_poole_settings():
    c = build_critic({"name": "separable"}, 20, 20)
    linears = [m for m in c.h if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 256), (256, 256), (256, 32)]
    assert isinstance(c.h[1], torch.nn.ReLU)
    with pytest.raises(ValueError, match="unknown critic"):
        build_critic({"name": "bogus"}, 2, 2)
