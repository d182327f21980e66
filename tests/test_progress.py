"""Progress a person can read: the task's own fields on a bar that moves within a block and fits 80 columns,
no bar off a terminal or with trainer.enable_progress_bar=false, mibench's own lines (start, progress, end) in the
job log and app.log, one line per finished sweep job with the time left, and the same records either way."""
import io
import json
import logging
import math
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hydra_plugins.mibench_launcher.sweep_progress import SweepTally
from mibench.app import run
from mibench.compose import compose_config
from mibench.engine import logging as progress_module
from mibench.engine.group import group_fields
from mibench.engine.logging import Progress
from mibench.engine.driver import log_interruption
from mibench.engine.task import Task
from test_cli import mibench
from test_requeue import STAIR, attempt, slurm  # noqa: F401 -- (slurm: the fake SLURM job fixture)

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
    monkeypatch.setattr(Staircase, "progress", orig)  # (the next run's spy wraps the hook, not this spy)
    return err.getvalue(), seen, out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny run three times: bar on a (fake) terminal, bar off by override, bar on but not a terminal
    (the bar only at block ends: no look inside a block, however slow the machine)."""
    tmp = tmp_path_factory.mktemp("progress")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress_module, "TICK_S", math.inf)
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
        assert fields["est"] == pytest.approx(ema.iloc[hi - 1], rel=1e-7, abs=1e-9)
    assert "staircase infonce" in err and "\r" in err  # the bar, named by benchmark and estimator
    assert "level=3/3" in err and "true MI=3.000" in err
    assert "v_num" not in err and "Epoch" not in err


def test_no_bar_with_the_override_or_off_a_terminal(runs, monkeypatch):
    for name in ("off", "ci"):
        err, seen, _ = runs[name]
        assert err.count("\r") == 0 and "staircase" not in err
        assert [(lo, hi) for lo, hi, _ in seen] == [(0, 5), (5, 10), (10, 15)]  # once a level: the end line's fields
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not Progress(True, 10, "x").enabled
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    assert Progress(True, 10, "x").enabled and not Progress(False, 10, "x").enabled


def test_records_are_byte_identical_with_progress_on_and_off(runs):
    on, off, ci = (runs[k][2] for k in ("on", "off", "ci"))
    for name in ("steps.csv", "summary.csv"):
        assert (on / name).read_bytes() == (off / name).read_bytes() == (ci / name).read_bytes()


# ------------------------------------------------------------------ a bar that moves, on 80 columns
BAR = re.compile(r"^(staircase infonce|staircase x2) (\d+)/15 \[[^\]]*\](.*)$")


def _drawn(err: str) -> list[tuple[int, str]]:
    """(steps done, the line) of every bar drawn (tqdm redraws after a carriage return)."""
    return [(int(m.group(2)), ln) for ln in err.split("\r") if (m := BAR.match(ln.strip("\n")))]


@pytest.fixture(scope="module")
def bar80(tmp_path_factory):
    """The tiny staircase on an 80-column (fake) terminal, the bar due after every step (TICK_S = 0: how a run
    of slow steps looks between its block ends, without depending on the clock)."""
    tmp = tmp_path_factory.mktemp("bar80")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(progress_module, "TICK_S", 0.0)
        mp.setenv("COLUMNS", "80")
        return _train(tmp, "r", ["trainer.enable_progress_bar=true"], mp)


def test_bar_fits_80_columns_with_true_mi_the_estimate_and_the_level_in_progress(bar80):
    err, _, out = bar80
    ema = pd.read_csv(out / "steps.csv")["estimate"].ewm(span=4).mean()
    drawn = _drawn(err)
    assert drawn and all(len(ln) < 80 for _, ln in drawn)  # (tqdm leaves the last column free)
    inside = [(n, ln) for n, ln in drawn if n % 5]  # steps of a level (5 each) done, the level not finished
    assert {n // 5 for n, _ in inside} == {0, 1, 2}
    for n, ln in inside:
        level = n // 5 + 1  # the level being trained
        assert f" level={level}/3 true MI={level:.3f} est=" in ln, ln
        est = float(re.search(r" est=(-?[\d.]+) ", ln).group(1))
        assert est == pytest.approx(ema.iloc[n - 1], abs=1.5e-3)  # the estimate of the steps so far (3 decimals)


def test_bar_step_count_advances_within_a_level(bar80, runs):
    err, seen, out = bar80
    for level in range(3):
        counts = {n for n, _ in _drawn(err) if level * 5 < n < (level + 1) * 5}
        assert len(counts) > 1, counts  # more than one update a level, not only at its end
    # the task's fields came from the rows copied so far (a look inside the block), then from the whole block
    assert [(lo, hi) for lo, hi, _ in seen if hi <= 5] == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5)]
    assert (out / "steps.csv").read_bytes() == (runs["off"][2] / "steps.csv").read_bytes()  # no number changed


def test_a_vectorised_groups_bar_fits_80_columns(tmp_path, monkeypatch):
    from mibench.engine import train_group

    monkeypatch.setattr(progress_module, "TICK_S", 0.0)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    outs = [tmp_path / f"s{s}" for s in (0, 1)]
    for d in outs:
        d.mkdir()
    train_group([compose_config(TINY + [f"seed={s}"], out_dir=d) for s, d in enumerate(outs)], outs, progress=True)
    err = sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    drawn = [(n, ln) for n, ln in _drawn(err) if n % 5]
    assert drawn and all(len(ln) < 80 for _, ln in drawn)
    for n, ln in drawn:
        assert re.search(rf" level={n // 5 + 1}/3 true MI={n // 5 + 1:.3f} est=-?[\d.]+\.\.-?[\d.]+", ln), ln


# ------------------------------------------------------------------ mibench's lines: the job log and app.log
@pytest.mark.slow
def test_app_log_holds_the_console_start_progress_and_end_lines(runs_dir):
    """A CLI run: start (identity, config hash, run dir), progress lines (trainer.log_every_min: here due at
    every look), end (status, steps, final fields); each once on the console and, time-stamped, in app.log."""
    p = mibench(*TINY, "trainer.enable_progress_bar=false", "trainer.log_every_min=1e-9", runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    (log,) = runs_dir.rglob("app.log")
    d, text = log.parent, log.read_text()
    rec = json.loads((d / "result.json").read_text())
    ours = [ln.split("][mibench][INFO] - ", 1)[1] for ln in text.splitlines() if "][mibench][INFO] - " in ln]
    assert ours[0] == (f"mibench: start staircase/gaussian estimator=infonce critic=separable seed=0 "
                       f"config={rec['config_hash']} -> {d}")
    assert re.fullmatch(rf"mibench: end completed after [\d.]+s, 15 steps: level=3/3, true MI=3\.000, "
                        rf"est=-?[\d.]+ -> {re.escape(str(d))}", ours[-1]), ours[-1]
    steps = [ln for ln in ours if ln.startswith("mibench: staircase infonce step ")]
    assert len(steps) >= 3 and all(re.search(r" step \d+/15 \(\d+%\) level=\d/3, true MI=[\d.]+, est=", ln)
                                   for ln in steps)
    for ln in ours:
        assert p.stdout.count(ln) == 1, ln  # on the console once, as in app.log
    assert all(ln in text for ln in p.stdout.splitlines())  # app.log holds what the console showed (the table too)
    assert rec["config_hash"] in text and "mibench" not in p.stderr


def test_interruption_is_a_line_of_the_job_log(slurm, runs_dir, caplog):
    """SLURM's stop signal: the line says which signal, the step and where the checkpoint is; the requeued job's
    start line says it resumes from it."""
    out = runs_dir / "job"
    go = lambda: run(compose_config(STAIR, out_dir=out), echo=False, reuse=True)  # noqa: E731
    with caplog.at_level(logging.INFO, logger="mibench"):
        attempt(slurm, 0, "13:USR2", go)
        attempt(slurm, 1, None, go)
    lines = [m for m in caplog.messages if m.startswith("mibench: ")]
    assert f"mibench: staircase mine: SIGUSR2 (time_limit) at step 13/30: checkpoint written -> " \
           f"{out / 'checkpoint.pt'}; handing the signal on" in lines
    (resumed,) = [m for m in lines if m.startswith("mibench: start") and "resuming" in m]
    assert resumed.endswith(f"-> {out} (resuming from {out / 'checkpoint.pt'})")
    assert lines[-1].startswith("mibench: end completed after") and " 30 steps: level=3/3" in lines[-1]


def test_console_routes_mibench_lines_and_formats_the_others(monkeypatch):
    from mibench.log import Console

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    h = Console()
    h.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    rec = lambda name, level, msg: logging.LogRecord(name, level, __file__, 1, msg, None, None)  # noqa: E731
    for r in (rec("mibench", logging.INFO, "mibench: start"), rec("mibench", logging.WARNING, "mibench: note: x"),
              rec("mibench.slurm", logging.ERROR, "mibench: error: y"), rec("torch", logging.WARNING, "z")):
        h.emit(r)
    assert out.getvalue() == "mibench: start\n[torch][WARNING] - z\n"
    assert err.getvalue() == "mibench: note: x\nmibench: error: y\n"


def test_default_hook_is_the_block_mean_estimate():
    class T(Task):
        columns = ("estimate", "loss")

    rows = np.array([[0, 1.0, 9.0], [1, 3.0, 9.0], [2, np.inf, 9.0]])
    assert T.progress(T.__new__(T), 0, 3, rows) == {"est": 2.0}


def test_group_fields_share_equal_values_and_range_the_others():
    fields = [{"level": "2/5", "true MI": 4.0, "est": 3.5}, {"level": "2/5", "true MI": 4.0, "est": 3.1}]
    assert group_fields(fields, 2) == {"level": "2/5", "true MI": 4.0, "est": "3.100..3.500", "runs": 2}


def test_sweep_lines_count_done_and_failed_and_the_time_left():
    now = iter([100.0, 130.0, 160.0, 250.0, 300.0]).__next__  # the sweep starts at 100 s; each line reads the clock
    tally = SweepTally(4, swept=["estimator", "seed"], clock=now)
    jobs = [(["estimator=infonce", "seed=0", "dataset.steps_per_level=100"], "completed", 1.23),
            (["estimator=nwj", "seed=0", "dataset.steps_per_level=100"], "crashed", 0.5),
            (["estimator=infonce", "seed=1", "dataset.steps_per_level=100"], "diverged", 2.0),
            (["estimator=nwj", "seed=1", "dataset.steps_per_level=100"], "failed", None)]
    lines = [tally.line(*j) for j in jobs]
    # time left: the sweep's time so far per finished job, times the jobs to come (30 s x 3; 30 x 2; 50 x 1)
    assert lines == ["[1/4 done, 0 failed, ~01:30 left] estimator=infonce seed=0 -> completed 1.2s",
                     "[2/4 done, 1 failed, ~01:00 left] estimator=nwj seed=0 -> crashed 0.5s",
                     "[3/4 done, 1 failed, ~00:50 left] estimator=infonce seed=1 -> diverged 2.0s",
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
    monkeypatch.setattr(progress_module, "TICK_S", math.inf)  # (block ends only)
    monkeypatch.setenv("COLUMNS", "200")  # every probe's field on the line (the 80-column fit is tested above)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    torch.manual_seed(1)
    on = train_probes(sep, y, sep, y, 4, epochs=30, lr=1e-2, batch_size=8, progress=True)
    err = sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    assert len(seen) == 30  # once a block (= an epoch here)
    torch.manual_seed(1)
    off = train_probes(sep, y, sep, y, 4, epochs=30, lr=1e-2, batch_size=8, progress=False)
    assert on == off
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
    monkeypatch.setattr(progress_module, "TICK_S", math.inf)  # (block ends only)
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    run(compose_config(TINY + ["trainer.enable_progress_bar=true"], out_dir=tmp_path / "r"), echo=False)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    assert calls == [(0, 5), (5, 10), (10, 15)]


CRASHING = """
import sys, warnings
from mibench.benchmarks.onehot import OneHot
def setup(self):
    warnings.warn("a warning the console shows")
    raise RuntimeError("boom in setup")
OneHot.setup = setup
from mibench.cli import main
main(sys.argv[1:])
"""


def test_app_log_holds_the_consoles_warnings_and_a_crashs_traceback(runs_dir, tmp_path):
    """Issue 29 req. 7: a job's Python warning and a crashed run's error line with its traceback are on stderr as
    before, and app.log holds every line the console showed."""
    import subprocess

    script = tmp_path / "crash.py"
    script.write_text(CRASHING)
    p = subprocess.run([sys.executable, str(script), "benchmark=onehot", "estimator=mine", "benchmark.steps=5",
                        "logger=none", "trainer.enable_progress_bar=false"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1
    assert "UserWarning: a warning the console shows" in p.stderr
    assert "mibench: error: run crashed: RuntimeError: boom in setup" in p.stderr and "Traceback" in p.stderr
    (log,) = runs_dir.rglob("app.log")
    text = log.read_text()
    shown = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    assert shown and all(ln in text for ln in shown), [ln for ln in shown if ln not in text]
    assert "][py.warnings][WARNING] - " in text and "][mibench][ERROR] - mibench: error: run crashed" in text
