"""Run records: identity and status, skipping identical configs, crash records, resume after a kill."""
import json
import os
import signal

import pandas as pd
import pytest

from mibench import app
from mibench.benchmarks.staircase import Staircase
from mibench.compose import compose_config
from mibench.records import config_hash, iter_records

from test_cli import mibench

FAST = ["dataset.steps_per_level=40", "dataset.mi_levels=[2,4,6]", "dataset.dim=4", "dataset.batch_size=16",
        "trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false"]


def records(root):
    return [(d, r) for d, r in iter_records(root)]


def test_config_hash_ignores_output_keys_only():
    a = compose_config(FAST, out_dir="/x")
    b = compose_config(FAST + ["logger=csv", "trainer.enable_progress_bar=true"], out_dir="/elsewhere")
    c = compose_config(FAST + ["seed=1"], out_dir="/x")
    d = compose_config(FAST + ["critic.hidden=128"], out_dir="/x")
    assert config_hash(a) == config_hash(b)
    assert len({config_hash(a), config_hash(c), config_hash(d)}) == 3


def test_identical_config_is_skipped_unless_overwrite(runs_dir):
    p1 = mibench(*FAST, runs=runs_dir)
    assert p1.returncode == 0, p1.stderr[-2000:]
    p2 = mibench(*FAST, runs=runs_dir)
    assert p2.returncode == 0 and "skipped: this config already ran" in p2.stdout
    assert len(records(runs_dir)) == 1  # the skipped job left no directory behind
    p3 = mibench(*FAST, "overwrite=true", runs=runs_dir)
    assert p3.returncode == 0, p3.stderr[-2000:]
    recs = records(runs_dir)
    assert len(recs) == 2 and all(r["status"] == "completed" for _, r in recs)
    assert len({r["config_hash"] for _, r in recs}) == 1


def test_record_identity_and_outcome(runs_dir):
    p = mibench(*FAST, "estimator=remine", "lambda=0.01", "seed=3", runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    ((d, r),) = records(runs_dir)
    assert (r["benchmark"], r["dataset"], r["estimator"], r["critic"], r["lam"], r["c_star"], r["seed"]) == \
        ("staircase", "gaussian", "remine", "separable", 0.01, 0.0, 3)
    assert r["status"] == "completed" and len(r["config_hash"]) == 16 and r["git_commit"]
    assert [lv["true_mi"] for lv in r["levels"]] == [2, 4, 6]
    assert not (d / "checkpoint.pt").exists()  # removed once the run completed


def test_crash_leaves_a_crashed_record(tmp_path, monkeypatch):
    def boom(self, batch):
        raise RuntimeError("simulated failure\nsecond line")

    monkeypatch.setattr(Staircase, "step", boom)
    with pytest.raises(RuntimeError):
        app.run(compose_config(FAST, out_dir=tmp_path), echo=False)
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["status"] == "crashed" and rec["error"] == "RuntimeError: simulated failure"
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temporaries


def test_resume_after_kill_gives_the_uninterrupted_numbers(runs_dir, tmp_path):
    """Kill a run with SIGKILL right after its level-2 checkpoint; resume=true ends with the same per-step CSV."""
    args = [*FAST, "estimator=mine"]  # MINE: its EMA state must survive the restart too
    env_kill = {**os.environ, "MIBENCH_KILL_AFTER_SEGMENT": "1"}
    import subprocess
    import sys

    from test_cli import ROOT

    killed = subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**env_kill, "MIBENCH_RUNS": str(runs_dir)}, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    ((d, r),) = records(runs_dir)
    assert r["status"] == "running" and (d / "checkpoint.pt").exists() and not (d / "steps.csv").exists()

    resumed = mibench(*args, "resume=true", runs=runs_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing" in resumed.stderr
    ((d2, r2),) = records(runs_dir)
    assert d2 == d and r2["status"] == "completed" and r2["resumed"] is True

    clean_root = tmp_path / "clean"
    clean = mibench(*args, runs=clean_root)
    assert clean.returncode == 0, clean.stderr[-2000:]
    ((dc, _),) = records(clean_root)
    a, b = pd.read_csv(d / "steps.csv"), pd.read_csv(dc / "steps.csv")
    assert len(a) == 120
    pd.testing.assert_frame_equal(a, b)


def test_slb_resume_after_kill_gives_the_uninterrupted_numbers(runs_dir, tmp_path):
    """SLB with augmentation: SIGKILL after epoch 1's checkpoint, resume=true, compare with an uninterrupted run."""
    import subprocess
    import sys

    from mibench.data.fake_cifar import write_fake_cifar

    from test_cli import ROOT

    data = tmp_path / "data"
    write_fake_cifar(data, classes=10, train_per_class=12, test_per_class=4, seed=3)
    args = ["dataset=cifar10", f"dataset.root={data}", "estimator=remine", "benchmark.epochs=3", "model=convnet",
            "model.width=8",
            "dataset.batch_size=16", "benchmark.check_every=2", "trainer.enable_progress_bar=false", "logger=none"]
    killed = subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "MIBENCH_KILL_AFTER_SEGMENT": "0", "MIBENCH_RUNS": str(runs_dir)},
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL
    ((d, r),) = records(runs_dir)
    assert r["status"] == "running" and (d / "checkpoint.pt").exists()
    assert len(pd.read_csv(d / "epochs.csv")) == 1

    resumed = mibench(*args, "resume=true", runs=runs_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ((d2, r2),) = records(runs_dir)
    assert d2 == d and r2["status"] == "completed" and not (d / "checkpoint.pt").exists()

    clean_root = tmp_path / "clean"
    clean = mibench(*args, runs=clean_root)
    assert clean.returncode == 0, clean.stderr[-2000:]
    ((dc, _),) = records(clean_root)
    a, b = pd.read_csv(d / "epochs.csv"), pd.read_csv(dc / "epochs.csv")
    assert list(a["epoch"]) == [0, 1, 2]
    pd.testing.assert_frame_equal(a.drop(columns="wall_s"), b.drop(columns="wall_s"))
    ra, rb = pd.read_csv(d / "result.csv").iloc[0], pd.read_csv(dc / "result.csv").iloc[0]
    for k in ("mi_train", "mi_test", "test_acc", "steps"):
        assert ra[k] == rb[k], k
