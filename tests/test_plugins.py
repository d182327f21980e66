"""An estimator from the user's own package: an entry point in the ``mibench.plugins`` group, a module
that registers the bound, and a conf/ folder beside it. The package is "installed" the way pip leaves
it (module + .dist-info with entry_points.txt) in a folder on PYTHONPATH; mibench is not modified."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

MODULE = '''
from mibench.estimators import REGISTRY, Estimate, Spec, masked_logmeanexp, masked_mean, resolve_masks


def thirds_dv(scores, joint=None, marginal=None, scale: float = 1 / 3):
    """scale * (E_P[T] - log E_Q[e^T])."""
    jm, mm = resolve_masks(scores, joint, marginal)
    j, m = masked_mean(scores, jm), masked_logmeanexp(scores, mm)
    mi = scale * (j - m)
    return Estimate(mi=mi, loss=-mi, joint=j, marginal=m)


REGISTRY["thirds_dv"] = Spec(thirds_dv)
'''


@pytest.fixture
def installed(tmp_path):
    site = tmp_path / "site"
    pkg = site / "mibench_demo_plugin"
    (pkg / "conf" / "estimator").mkdir(parents=True)
    (pkg / "__init__.py").write_text(MODULE)
    (pkg / "conf" / "estimator" / "thirds_dv.yaml").write_text("name: thirds_dv\nscale: 0.3333333333333333\n")
    dist = site / "mibench_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mibench-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mibench.plugins]\ndemo = mibench_demo_plugin\n")
    return site


@pytest.mark.slow
def test_an_estimator_from_an_installed_package_runs_from_the_cli(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONWARNINGS": "ignore"}
    args = ["estimator=thirds_dv", "dataset.steps_per_level=15", "dataset.mi_levels=[1]", "dataset.dim=2",
            "dataset.batch_size=16", "trainer.enable_progress_bar=false", "benchmark.plot=false",
            f"runs_root={tmp_path / 'runs'}"]
    p = subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (steps,) = (tmp_path / "runs").rglob("steps.csv")
    df = pd.read_csv(steps)
    assert len(df) == 15
    assert ((df["estimate"] - (df["joint"] - df["marginal"]) / 3).abs() < 1e-5).all()  # the plug-in's formula
    help_page = subprocess.run([sys.executable, "-m", "mibench", "--help"], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=60).stdout
    assert "thirds_dv" in help_page  # its YAML is a choice like the built-in ones
    bad = subprocess.run([sys.executable, "-m", "mibench", "estimator=thirds_dv", "+estimator.scal=1"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "scal" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
