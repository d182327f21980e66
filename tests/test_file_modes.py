"""Outputs are files like any the user creates: their mode follows the process umask (0o644 under 022, 0o640
under 027), so the rest of a group can read, and aggregate, runs on a shared filesystem."""
import os
import stat

import pytest
import torch

from mibench import app
from mibench import leaderboard as lb
from mibench.compose import compose_config
from mibench.engine.checkpoint import write_checkpoint
from mibench.report import write_report
from mibench.results import new_file_mode

TINY = ["dataset.steps_per_level=5", "dataset.mi_levels=[2,4]", "dataset.dim=2", "dataset.batch_size=8",
        "logger=csv", "trainer.enable_progress_bar=false"]


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def modes(root):
    """{path below root: permission bits} of every file below ``root``."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


def test_every_output_follows_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask  # what open() gives a new file: independent of mibench's own helper
    assert new_file_mode() == expected
    run_dir = tmp_path / "runs" / "stair"
    cfg = compose_config(TINY, out_dir=run_dir)
    app.run(cfg, out_dir=run_dir)  # config.yaml, result.json, steps.csv, summary.csv, staircase.png, metrics CSV
    write_checkpoint({"step": torch.tensor(1)}, run_dir / "checkpoint.pt")
    made = lb.build(tmp_path / "runs")  # leaderboard.md / .tex, CSVs, staircase_grid.png
    write_report(tmp_path / "runs")
    found = modes(tmp_path / "runs")
    for name in ("stair/config.yaml", "stair/result.json", "stair/steps.csv", "stair/summary.csv",
                 "stair/staircase.png", "stair/checkpoint.pt", "leaderboard/leaderboard.md",
                 "leaderboard/leaderboard.tex", "leaderboard/runs.csv", "leaderboard/staircase.csv",
                 "leaderboard/staircase_grid.png", "report.html"):
        assert name in found, sorted(found)
    assert made["figures"]
    assert {name: oct(m) for name, m in found.items() if m != expected} == {}
    assert not list((tmp_path / "runs").rglob("*.tmp*"))  # no temporary left behind
