"""Refactors change no numbers: short runs reproduce the golden CSVs of the pre-engine main to 1e-6.

The golden files (tests/golden/data) were written by ``tests/golden/cases.py`` on commit 7606dd6,
before the engine refactor: the staircase with every trainable estimator and the three critics,
the one-hot study, eta_gaussian, SLB and CLB on fake CIFAR, DIM on fake CIFAR.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from golden.cases import SKIP_COLUMNS, TOL, cases, fake_root, golden_path, run_case

pytestmark = pytest.mark.slow  # the full suite (make test) runs it; make test-fast does not


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return fake_root(tmp_path_factory.mktemp("golden_cifar"))


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame, where: str) -> None:
    cols = [c for c in want.columns if c not in SKIP_COLUMNS]
    missing = [c for c in cols if c not in got.columns]
    assert not missing, f"{where}: columns {missing} are gone"
    assert len(got) == len(want), f"{where}: {len(got)} rows, golden has {len(want)}"
    for c in cols:
        a, b = got[c], want[c]
        if pd.api.types.is_numeric_dtype(b) and pd.api.types.is_numeric_dtype(a):
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=0, atol=TOL, equal_nan=True,
                                       err_msg=f"{where}: column {c}")
        else:
            assert [str(v) for v in a] == [str(v) for v in b], f"{where}: column {c}"


@pytest.mark.parametrize("name", list(cases()))
def test_golden(name, root, tmp_path):
    out = run_case(name, root, tmp_path / name)
    for f in cases()[name][1]:
        assert_same_table(pd.read_csv(out / f), pd.read_csv(golden_path(name, f)), f"{name}/{f}")
