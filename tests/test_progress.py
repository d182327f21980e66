"""Progress a person can read: the task's own fields on the bar, no bar off a terminal or with
trainer.enable_progress_bar=false, one line per finished sweep job, and the same records either way."""
import io
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hydra_plugins.mibench_launcher.sweep_progress import SweepTally
from mibench.app import run
from mibench.compose import compose_config
from mibench.engine.group import group_fields
from mibench.engine.logging import Progress
from mibench.engine.task import Task

TINY = ["dataset.dim=2", "dataset.batch_size=8", "dataset.mi_levels=[1,2,3]", "dataset.steps_per_level=5",
        "benchmark.ema_span=4", "benchmark.plot=false", "logger=none"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _train(tmp_path, name, extra, monkeypatch, terminal=True):
    """A tiny staircase run; stderr a fake terminal (or not). Returns (stderr text, fields per block, run dir)."""
    from mibench.benchmarks.staircase import Staircase

    seen: list[tuple[int, int, dict]] = []
    orig = Staircase.progress

    def spy(self, lo, hi, rows, shown=None):
        fields = orig(self, lo, hi, rows, shown)
        seen.append((lo, hi, fields))
        return fields

    monkeypatch.setattr(Staircase, "progress", spy)
    err = FakeTerminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    out = tmp_path / name
    run(compose_config(TINY + extra, out_dir=out), echo=False)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    return err.getvalue(), seen, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run three times: bar on a (fake) terminal, bar off by override, bar on but not a terminal."""
    tmp = tmp_path_factory.mktemp("progress")
    with pytest.MonkeyPatch.context() as mp:
        return {"on": _train(tmp, "on", ["trainer.enable_progress_bar=true"], mp),
                "off": _train(tmp, "off", ["trainer.enable_progress_bar=false"], mp),
                "ci": _train(tmp, "ci", ["trainer.enable_progress_bar=true"], mp, terminal=False)}


def test_staircase_fields_match_the_records_and_the_figure_ema(runs):
    err, seen, out = runs["on"]
    steps = pd.read_csv(out / "steps.csv")
    # the figure's smoothing (mibench.results.draw_staircase): ewm(span=ema_span) over every step so far
    # (steps.csv holds 9 significant digits, the bar the unrounded values)
    ema = steps["estimate"].replace([np.inf, -np.inf], np.nan).ewm(span=4).mean()
    assert [(lo, hi) for lo, hi, _ in seen] == [(0, 5), (5, 10), (10, 15)]
    for k, (lo, hi, fields) in enumerate(seen):
        assert fields["level"] == f"{k + 1}/3"
        assert fields["true MI"] == float(steps["true_mi"].iloc[hi - 1]) == k + 1.0
        assert fields["est (EMA)"] == pytest.approx(ema.iloc[hi - 1], rel=1e-7, abs=1e-9)
    assert "staircase infonce" in err and "\r" in err  # the bar, named by benchmark and estimator
    assert "level=3/3" in err and "true MI=3.000" in err
    assert "v_num" not in err and "Epoch" not in err


def test_no_bar_with_the_override_or_off_a_terminal(runs, monkeypatch):
    for name in ("off", "ci"):
        err, seen, _ = runs[name]
        assert err.count("\r") == 0 and "staircase" not in err and seen == []  # the hook is not even called
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not Progress(True, 10, "x").enabled
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert Progress(True, 10, "x").enabled and not Progress(False, 10, "x").enabled


def test_records_are_byte_identical_with_progress_on_and_off(runs):
    on, off, ci = (runs[k][2] for k in ("on", "off", "ci"))
    for name in ("steps.csv", "summary.csv"):
        assert (on / name).read_bytes() == (off / name).read_bytes() == (ci / name).read_bytes()


def test_default_hook_is_the_block_mean_estimate():
    class T(Task):
        columns = ("estimate", "loss")

    rows = np.array([[0, 1.0, 9.0], [1, 3.0, 9.0], [2, np.inf, 9.0]])
    assert T.progress(T.__new__(T), 0, 3, rows) == {"est": 2.0}


def test_group_fields_share_equal_values_and_range_the_others():
    fields = [{"level": "2/5", "true MI": 4.0, "est (EMA)": 3.5}, {"level": "2/5", "true MI": 4.0, "est (EMA)": 3.1}]
    assert group_fields(fields, 2) == {"level": "2/5", "true MI": 4.0, "est (EMA)": "3.100..3.500", "runs": 2}


def test_sweep_lines_count_done_and_failed():
    tally = SweepTally(4, swept=["estimator", "seed"])
    jobs = [(["estimator=infonce", "seed=0", "dataset.steps_per_level=100"], "completed", 1.23),
            (["estimator=nwj", "seed=0", "dataset.steps_per_level=100"], "crashed", 0.5),
            (["estimator=infonce", "seed=1", "dataset.steps_per_level=100"], "diverged", 2.0),
            (["estimator=nwj", "seed=1", "dataset.steps_per_level=100"], "failed", None)]
    lines = [tally.line(*j) for j in jobs]
    assert lines == ["[1/4 done, 0 failed] estimator=infonce seed=0 -> completed 1.2s",
                     "[2/4 done, 1 failed] estimator=nwj seed=0 -> crashed 0.5s",
                     "[3/4 done, 1 failed] estimator=infonce seed=1 -> diverged 2.0s",
                     "[4/4 done, 2 failed] estimator=nwj seed=1 -> failed"]
    assert SweepTally().line(["seed=3"], "skipped", 0.0) == "[1/? done, 0 failed] seed=3 -> skipped 0.0s"


# ------------------------------------------------------------------ SLB / CLB / DIM probes: accuracy on the bar
IMG = ["dataset=cifar10", "dataset.batch_size=16", "benchmark.epochs=2", "benchmark.check_every=2",
       "model=convnet", "model.width=8", "logger=none"]


def test_batch_accuracy_against_loops():
    from mibench.benchmarks.cifar import batch_accuracy

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(12, 5, generator=g), torch.randint(0, 5, (12,), generator=g)
    assert float(batch_accuracy(logits, y, "slb")) == sum(
        max(range(5), key=lambda c: logits[i, c]) == y[i] for i in range(12)) / 12
    s, y = torch.randn(12, 12, generator=g), torch.randint(0, 3, (12,), generator=g)
    nn_label = [y[max((j for j in range(12) if j != i), key=lambda j: s[i, j])] for i in range(12)]
    assert float(batch_accuracy(s, y, "clb")) == sum(nn_label[i] == y[i] for i in range(12)) / 12


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory):
    from mibench.data.fake_cifar import write_fake_cifar

    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, classes=10, train_per_class=8, test_per_class=2, seed=1)
    return root


@pytest.mark.parametrize("task", ["slb", "clb"])
def test_image_bar_shows_epoch_estimate_and_training_accuracy(task, fake_cifar, tmp_path, monkeypatch):
    """The bar's accuracy is the block mean of each batch's accuracy, recomputed here by a loop from the
    scores the step produced; the records are byte-identical with the bar off."""
    from mibench.benchmarks.cifar import ImageTask

    batches, seen = [], []
    orig_scores, orig_progress = ImageTask.batch_scores, ImageTask.progress

    def scores_spy(self, x, y):
        out = orig_scores(self, x, y)
        batches.append((out[0].detach().clone(), y.clone()))
        return out

    def progress_spy(self, lo, hi, rows, shown=None):
        fields = orig_progress(self, lo, hi, rows, shown)
        seen.append((lo, hi, fields))
        return fields

    def loop_accuracy(s, y):
        if task == "slb":
            return sum(int(s[i].argmax()) == int(y[i]) for i in range(len(y))) / len(y)
        return sum(int(y[max((j for j in range(len(y)) if j != i), key=lambda j: float(s[i, j]))]) == int(y[i])
                   for i in range(len(y))) / len(y)

    extra = [f"benchmark={task}", f"dataset.root={fake_cifar}"] + (["critic.embed=8"] if task == "clb" else [])
    monkeypatch.setattr(ImageTask, "batch_scores", scores_spy)
    monkeypatch.setattr(ImageTask, "progress", progress_spy)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    run(compose_config(IMG + extra + ["trainer.enable_progress_bar=true"], out_dir=tmp_path / "on"), echo=False)
    err = sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    steps = pd.read_csv(tmp_path / "on" / "steps.csv")
    assert len(seen) >= 4 and len(batches) == len(steps)
    for lo, hi, fields in seen:
        assert fields["train acc"] == pytest.approx(np.mean([loop_accuracy(*b) for b in batches[lo:hi]]), abs=1e-6)
        assert fields["est"] == pytest.approx(steps["estimate"].iloc[lo:hi].mean(), rel=1e-6)
    assert seen[0][2]["epoch"] == "1/2" and seen[-1][2]["epoch"] == "2/2"
    assert f"{task} infonce" in err and "train acc=" in err and "epoch=2/2" in err
    assert ("10/10 [" in err) == (task == "slb")  # SLB's planned steps are known (CLB's random batches may skip)
    monkeypatch.setattr(ImageTask, "progress", orig_progress)
    run(compose_config(IMG + extra + ["trainer.enable_progress_bar=false"], out_dir=tmp_path / "off"), echo=False)
    assert (tmp_path / "on" / "steps.csv").read_bytes() == (tmp_path / "off" / "steps.csv").read_bytes()
    on, off = (pd.read_csv(tmp_path / k / "epochs.csv").drop(columns="wall_s") for k in ("on", "off"))
    pd.testing.assert_frame_equal(on, off)


def test_dim_probe_bar_shows_each_probes_training_accuracy(monkeypatch):
    """DIM pretraining is unsupervised; its accuracy is the probes', shown per probe while they train. The
    bar changes no number: the same probes reach the same test accuracy with it off."""
    from mibench.probes import Probes, train_probes

    torch.manual_seed(0)
    y = torch.arange(40) % 4
    sep = {layer: torch.nn.functional.one_hot(y, 4).float().repeat(1, 3) + 0.01 * torch.randn(40, 12)
           for layer in ("fc", "y")}
    seen = []
    orig = Probes.progress

    def spy(self, lo, hi, rows, shown=None):
        fields = orig(self, lo, hi, rows, shown)
        seen.append(fields)
        return fields

    monkeypatch.setattr(Probes, "progress", spy)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    torch.manual_seed(1)
    on = train_probes(sep, y, sep, y, 4, epochs=30, lr=1e-2, batch_size=8, progress=True)
    err = sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    torch.manual_seed(1)
    off = train_probes(sep, y, sep, y, 4, epochs=30, lr=1e-2, batch_size=8, progress=False)
    assert on == off and len(seen) == 30
    assert set(seen[-1]) == {"epoch", "mlp/fc", "mlp/y", "linear/fc", "linear/y"} and seen[-1]["epoch"] == "30/30"
    # learned the separable labels; measured (calibrate_training.py, data / training seeds 0-4 x {AVX512, DEFAULT}):
    # 0.25 in the first epoch and 1.0 in the last in all 10 runs (no spread)
    assert seen[-1]["linear/y"] == 1.0 and seen[0]["linear/y"] < 1.0
    assert "dim_probes" in err and "linear/y=1.000" in err


def test_a_task_with_the_old_three_argument_hook_still_gets_its_bar(monkeypatch, tmp_path):
    """Stable interface: a task that overrides progress(lo, hi, rows) (before Step.shown) is called as before."""
    from mibench.benchmarks.staircase import Staircase

    calls = []

    def old_style(self, lo, hi, rows):
        calls.append((lo, hi))
        return {"lo": lo}

    monkeypatch.setattr(Staircase, "progress", old_style)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    run(compose_config(TINY + ["trainer.enable_progress_bar=true"], out_dir=tmp_path / "r"), echo=False)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    assert calls == [(0, 5), (5, 10), (10, 15)]
