"""A real SLURM sweep: ``make test-slurm`` (tests/slurm/cluster.sh starts a one-node SLURM on localhost).

Not part of ``make test`` (pyproject's norecursedirs leaves tests/slurm out; the tests also skip without
SLURM_CONF). A 2-job staircase sweep through Hydra's submitit launcher with ``hardware=slurm_cpu``: both
jobs complete, and each one's steps.csv is byte-identical to the same run executed locally without SLURM.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not os.environ.get("SLURM_CONF") or shutil.which("sbatch") is None,
                       reason="no SLURM cluster (SLURM_CONF unset or sbatch missing): run `make test-slurm`"),
]

ESTIMATORS = ("infonce", "nwj")
TINY = ["hardware=slurm_cpu", "hardware.threads=1", "dataset.dim=2", "dataset.batch_size=8", "dataset.mi_levels=[1,2]",
        "dataset.steps_per_level=50", "benchmark.plot=false", "logger=none"]


def partition() -> str:
    """SLURM_TEST_PARTITION, else the cluster's default partition (sinfo marks it with *)."""
    if p := os.environ.get("SLURM_TEST_PARTITION"):
        return p
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout.split()
    return next((p.rstrip("*") for p in out if p.endswith("*")), out[0])


def mibench(args: list[str], runs: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIBENCH_RUNS": str(runs)}
    return subprocess.Popen([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_sweep_on_slurm_matches_local_runs(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep = mibench(["-m", "hydra/launcher=submitit_slurm", *TINY, f"estimator={','.join(ESTIMATORS)}",
                     f"hydra.launcher.partition={partition()}", "hydra.launcher.cpus_per_task=1",
                     "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}"],
                    runs=tmp_path / "runs")
    local = {}
    for est in ESTIMATORS:  # the same runs without SLURM, while the sweep's jobs run
        local[est] = tmp_path / f"local_{est}"
        p = mibench([*TINY, f"estimator={est}", f"hydra.run.dir={local[est]}"], runs=tmp_path / "runs")
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out
    assert "Bypassing sacct error" not in out, out  # sacct_quiet: at most one line about sacct
    assert out.count("SLURM accounting (sacct) unavailable") <= 1, out
    assert out.count("Slurm accounting storage is disabled") <= 1, out  # sacct's own stderr, once

    submitit = sweep_dir / ".submitit"
    assert list(submitit.glob("*/*_result.pkl")), f"no submitit job results under {submitit}"
    for n, est in enumerate(ESTIMATORS):
        job = sweep_dir / f"{n}_{est}_s0"
        record = json.loads((job / "result.json").read_text())
        assert record["status"] == "completed", (est, record["status"])
        assert record["hardware"] == "slurm_cpu"
        ref = json.loads((local[est] / "result.json").read_text())
        assert ref["status"] == "completed", (est, ref["status"])
        a, b = (job / "steps.csv").read_bytes(), (local[est] / "steps.csv").read_bytes()
        assert a.count(b"\n") == 101 and a == b, f"{est}: steps.csv differs between SLURM and the local run"
