"""The staircase data: schedule, correlation, and the cubic transforms."""
import math

import pytest
import torch

from mibench.data.gaussian import StaircaseStream, rho_from_mi


def test_schedule_and_correlation():
    stream = StaircaseStream(4, 256, [0.5, 3.0], 50, seed=1, chunk=7)
    assert len(stream) == 2 * 8  # ceil(50 / 7) chunks a level
    batches = list(stream.batches())
    chunked = torch.cat([c[0] for c in stream])
    assert torch.equal(chunked, torch.stack([b[0] for b in batches]))  # chunking does not change the data
    assert len(batches) == 100
    assert [b[2] for b in batches[:50]] == [0] * 50 and [b[2] for b in batches[50:]] == [1] * 50
    for level, mi in enumerate([0.5, 3.0]):
        x = torch.cat([b[0] for b in batches if b[2] == level])
        y = torch.cat([b[1] for b in batches if b[2] == level])
        corr = ((x - x.mean(0)) * (y - y.mean(0))).mean(0) / (x.std(0) * y.std(0))
        assert torch.allclose(corr, torch.full((4,), rho_from_mi(mi, 4)), atol=0.03)
        # rho = sqrt(1 - exp(-2 MI / d))
        assert rho_from_mi(mi, 4) == pytest.approx(math.sqrt(1 - math.exp(-2 * mi / 4)))


def test_cubic_transforms():
    raw = StaircaseStream(3, 8, [2.0], 5, seed=7, transform="none")
    cub = StaircaseStream(3, 8, [2.0], 5, seed=7, transform="cubic")
    wcub = StaircaseStream(3, 8, [2.0], 5, seed=7, transform="wcubic")
    (x0, y0, _), (x1, y1, _), (x2, y2, _) = (next(s.batches()) for s in (raw, cub, wcub))
    assert torch.equal(x0, x1) and torch.equal(x0, x2)
    assert torch.allclose(y1, y0**3)
    assert torch.allclose(y2, (y0 @ wcub.W.t()) ** 3)
    with pytest.raises(ValueError, match="transform"):
        StaircaseStream(2, 4, [1.0], 2, seed=0, transform="square")
