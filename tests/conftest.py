import os
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    d = tmp_path / "runs"
    monkeypatch.setenv("MIBENCH_RUNS", str(d))
    return d


def pytest_configure(config):
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("MPLBACKEND", "Agg")
