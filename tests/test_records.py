"""Run records: identity and status, skipping identical configs, crash records, resume after a kill."""
import json
import os
import platform
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import mibench as mibench_pkg
from mibench import app
from mibench import leaderboard as lb
from mibench import records as rec_mod
from mibench.benchmarks.staircase import Staircase
from mibench.compose import compose_config
from mibench.config import validate
from mibench.records import config_hash, find_same, iter_records, read_config, variant_hash

from test_cli import mibench

FAST = ["dataset.steps_per_level=40", "dataset.mi_levels=[2,4,6]", "dataset.dim=4", "dataset.batch_size=16",
        "trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false"]
TINY = ["dataset.steps_per_level=5", "dataset.mi_levels=[2]", "dataset.dim=2", "dataset.batch_size=8", "logger=none",
        "trainer.enable_progress_bar=false", "benchmark.plot=false"]
OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"  # written by main before schema 2 (result.json v1)


def records(root):
    return [(d, r) for d, r in iter_records(root)]


def test_config_hash_ignores_output_keys_only():
    a = compose_config(FAST, out_dir="/x")
    b = compose_config(FAST + ["logger=csv", "trainer.enable_progress_bar=true"], out_dir="/elsewhere")
    c = compose_config(FAST + ["seed=1"], out_dir="/x")
    d = compose_config(FAST + ["critic.hidden=128"], out_dir="/x")
    assert config_hash(a) == config_hash(b)
    assert len({config_hash(a), config_hash(c), config_hash(d)}) == 3


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_variant_hash_pools_seeds_and_separates_everything_else():
    base = compose_config(TINY + ["estimator=smile"], out_dir="/x")
    same = [compose_config(TINY + ["estimator=smile", *o], out_dir="/y") for o in
            (["seed=7"], ["logger=csv", "trainer.enable_progress_bar=true", "overwrite=true"])]
    other = [compose_config(TINY + ["estimator=smile", o], out_dir="/x") for o in
             ("estimator.clip=5", "critic.layers=1", "dataset.batch_size=16", "hardware.threads=1")]
    assert {variant_hash(c) for c in same} == {variant_hash(base)}
    assert len({variant_hash(c) for c in [base, *other]}) == 5
    assert config_hash(same[0]) != config_hash(base)  # the skip check still tells seeds apart
    # lambda=0.1 on the command line is folded into estimator.lam (ReMINE's default is 0.1): same configuration
    a, b = (compose_config(TINY + ["estimator=remine", *o], out_dir="/x") for o in ([], ["lambda=0.1"]))
    validate(a), validate(b)
    assert variant_hash(a) == variant_hash(b)


def test_record_schema_2_versions_and_config(tmp_path):
    cfg = compose_config(TINY + ["estimator=smile", "estimator.clip=5"], out_dir=tmp_path)
    app.run(cfg, echo=False)
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["schema_version"] == 2 and rec["conventions"] == {} and rec_mod.conventions(cfg) == {}
    assert rec["versions"] == {"mibench": mibench_pkg.__version__, "torch": str(torch.__version__),
                               "python": platform.python_version(), "device": rec_mod.cpu_name()}
    assert rec["versions"]["device"]
    flat = rec["config"]
    assert flat["estimator.clip"] == 5 and flat["dataset.mi_levels"] == [2] and flat["seed"] == 0
    assert not [k for k in flat if k.split(".")[0] in ("out_dir", "runs_root", "logger", "hydra", "overwrite", "resume")
                or k in ("trainer.enable_progress_bar", "trainer.progress_refresh_rate")]
    # config.yaml next to it gives the same hashes: what version-1 records are grouped by
    on_disk = read_config(tmp_path)
    assert (rec["config_hash"], rec["variant_hash"]) == (config_hash(on_disk), variant_hash(on_disk))
    assert rec_mod.flat_config(on_disk) == flat


def test_device_is_the_cuda_name_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")
    gpu = OmegaConf.create({"hardware": {"accelerator": "gpu"}})
    cpu = OmegaConf.create({"hardware": {"accelerator": "cpu"}})
    assert rec_mod.device_name(gpu) == "Fake GPU 0" and rec_mod.device_name(cpu) == rec_mod.cpu_name()


def test_completed_run_is_skipped_only_when_the_full_config_matches(tmp_path):
    root = tmp_path / "runs"

    def go(name, *overrides):
        cfg = compose_config(TINY + ["estimator=smile", f"runs_root={root}", *overrides], out_dir=root / name)
        return app.run(cfg, echo=False, reuse=True)

    assert not go("clip5", "estimator.clip=5").get("skipped")
    again = go("clip5_again", "estimator.clip=5")
    assert again["skipped"] and again["out_dir"] == root / "clip5" and not (root / "clip5_again").exists()
    assert not go("clip10", "estimator.clip=10").get("skipped")
    assert not go("layers1", "estimator.clip=5", "critic.layers=1").get("skipped")
    assert sorted(d.name for d, _ in iter_records(root)) == ["clip10", "clip5", "layers1"]
    st = lb.build(root)["staircase"]
    assert sorted(st["variant"]) == ["critic.layers=1, estimator.clip=5", "critic.layers=2, estimator.clip=10",
                                     "critic.layers=2, estimator.clip=5"]
    md = (root / "leaderboard" / "leaderboard.md").read_text()
    assert "smile (critic.layers=2, estimator.clip=10)" in md and "smile (critic.layers=1, estimator.clip=5)" in md


def test_old_record_loads_upgraded_and_is_found_by_the_skip_check(tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(OLD_RUN, root / "old_run")
    raw = json.loads((OLD_RUN / "result.json").read_text())
    assert "schema_version" not in raw and "variant_hash" not in raw  # the fixture stays a version-1 record
    ((d, rec),) = iter_records(root)
    cfg = read_config(d)
    assert "datasets" in cfg["benchmark"]  # written when the benchmark's YAML held its dataset allow-list:
    assert rec["schema_version"] == 1 and rec["config_hash"] == config_hash(cfg) != raw["config_hash"]  # hashed again
    assert rec["variant_hash"] == variant_hash(cfg) and rec["config"]["estimator.clip"] == 5
    assert "versions" not in rec and "conventions" not in rec  # unknown, not invented
    assert [x for x, _ in find_same(root, config_hash(cfg))] == [d]
    # re-running the old run's config (as its config.yaml has it) is skipped
    again = OmegaConf.create({**cfg, "runs_root": str(root)})
    result = app.run(again, out_dir=tmp_path / "again", echo=False, reuse=True)
    assert result["skipped"] and result["out_dir"] == d


def test_options_added_later_keep_old_hashes_when_at_their_default():
    """The authors'-convention options (issue 11) hold defaults that reproduce older runs: a default
    config hashes as it did before they existed; switching one on is a new configuration."""
    from mibench.records import ADDED_DEFAULTS

    cfg = compose_config(["estimator=renwj", "dataset.steps_per_level=5"], out_dir="/x")
    assert cfg.estimator.clip_joint is False and cfg.estimator.reg_term == "log_partition"
    old = OmegaConf.to_container(cfg, resolve=True)
    for (group, key) in ADDED_DEFAULTS:
        old.get(group, {}).pop(key, None)  # the config as a run before these options wrote it
    assert config_hash(cfg) == config_hash(old) and variant_hash(cfg) == variant_hash(old)
    on = compose_config(["estimator=renwj", "dataset.steps_per_level=5", "estimator.clip_joint=true"], out_dir="/x")
    assert config_hash(on) != config_hash(cfg)


# ----------------------------------------------------------------------------------------- checkpoints, full disks
TWO = [*TINY[:1], "dataset.mi_levels=[2,4]", *TINY[2:]]  # two levels: a checkpoint after the first


def crashed_after_a_checkpoint(root, monkeypatch):
    """A run under ``root`` that crashed in its second level: record ``crashed``, the first level's checkpoint."""
    real = Staircase.step
    calls = [0]

    def crash(self, batch):
        calls[0] += 1
        if calls[0] > 5:
            raise RuntimeError("simulated failure")
        return real(self, batch)

    monkeypatch.setattr(Staircase, "step", crash)
    with pytest.raises(RuntimeError):
        app.run(compose_config(TWO + [f"runs_root={root}"], out_dir=root / "a"), echo=False, reuse=True)
    monkeypatch.setattr(Staircase, "step", real)
    assert json.loads((root / "a" / "result.json").read_text())["status"] == "crashed"
    return root / "a" / "checkpoint.pt"


DAMAGE = {"empty": (lambda b: b"", "it is empty"),
          "truncated": (lambda b: b[: len(b) // 2], "it is truncated or not a checkpoint (PytorchStreamReader failed"),
          "garbage": (lambda b: b"not a checkpoint\n" * 20, "it is truncated or not a checkpoint (")}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_from_a_damaged_checkpoint_is_one_line_naming_the_file(runs_dir, monkeypatch, damage):
    from mibench.checks import ConfigError

    ckpt = crashed_after_a_checkpoint(runs_dir, monkeypatch)
    change, why = DAMAGE[damage]
    ckpt.write_bytes(change(ckpt.read_bytes()))
    resume = compose_config(TWO + [f"runs_root={runs_dir}", "resume=true"], out_dir=runs_dir / "b")
    with pytest.raises(ConfigError) as e:
        app.run(resume, echo=False, reuse=True)
    msg = str(e.value)
    assert msg.startswith(f"cannot resume from {ckpt}: {why}") and "\n" not in msg
    assert msg.endswith("; delete it, or start afresh with resume=false overwrite=true")
    assert json.loads((ckpt.parent / "result.json").read_text())["status"] == "crashed"  # the record is untouched
    assert not (runs_dir / "b").exists()
    if damage == "truncated":  # the command line: exit 2 and that one line
        p = mibench(*TWO, "resume=true", runs=runs_dir)
        assert p.returncode == 2 and p.stderr == f"mibench: error: {msg}\n", p.stderr[-2000:]


def test_a_full_disk_at_a_checkpoint_leaves_no_temp_file_and_a_crashed_record(tmp_path, monkeypatch):
    from full_disk import fail_checkpoints

    fail_checkpoints(monkeypatch.setattr)
    with pytest.raises(OSError, match="No space left on device"):
        app.run(compose_config(TWO, out_dir=tmp_path), echo=False)
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["status"] == "crashed"
    assert rec["error"] == f"OSError: [Errno 28] cannot write {tmp_path / 'checkpoint.pt'}: No space left on device"
    assert not list(tmp_path.glob(".*"))  # no .checkpoint.pt.tmp, no record temp


def test_a_full_disk_at_the_record_leaves_no_temp_file_and_no_running_record(tmp_path, monkeypatch):
    from full_disk import fail_records

    fail_records(monkeypatch.setattr)
    with pytest.raises(app.RecordError) as e:
        app.run(compose_config(TWO, out_dir=tmp_path), echo=False)
    assert str(e.value) == (f"cannot write {tmp_path / 'result.json'}: No space left on device; the run completed but "
                            f"is not recorded; its stale running record was removed")
    assert not (tmp_path / "result.json").exists() and not list(tmp_path.glob(".*"))


@pytest.mark.slow
@pytest.mark.parametrize("where", ["fail_checkpoints", "fail_records", "both"])
def test_a_full_disk_is_one_line_on_stderr(runs_dir, where):
    """The command line on a full disk: exit 1 and one line (never a traceback), no temp file, no record left
    saying running."""
    import subprocess
    import sys

    from test_cli import ROOT

    fail = ["fail_checkpoints", "fail_records"] if where == "both" else [where]
    code = ("import full_disk, sys; from mibench.cli import main; "
            + "".join(f"full_disk.{f}(setattr); " for f in fail) + f"main({TWO!r})")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MIBENCH_RUNS": str(runs_dir), "PYTHONPATH": str(ROOT / "tests")})
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr[-3000:]
    (d,) = {x.parent for x in runs_dir.rglob("config.yaml") if x.parent.name != ".hydra"}
    assert not [x for x in d.iterdir() if x.name.startswith(".") and x.name != ".hydra"]
    line = p.stderr.strip()
    if where == "fail_checkpoints":
        assert line == (f"mibench: error: run crashed: OSError: [Errno 28] cannot write {d / 'checkpoint.pt'}: "
                        f"No space left on device")
        assert json.loads((d / "result.json").read_text())["status"] == "crashed"
    else:
        outcome = "completed" if where == "fail_records" else "crashed (OSError: [Errno 28] cannot write"
        assert line.startswith(f"mibench: error: cannot write {d / 'result.json'}: No space left on device; the run "
                               f"{outcome}") and line.endswith("its stale running record was removed")
        assert not (d / "result.json").exists()
