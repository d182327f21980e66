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
    # One intra-op thread in this process and in the CLI subprocesses the tests start: the test models
    # are tiny, and two threads on a busy 2-core machine wait on each other (10-50x slower steps)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("MPLBACKEND", "Agg")
