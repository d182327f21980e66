"""Progress a person can read: the task's own fields on the bar, no bar off a terminal or with
trainer.enable_progress_bar=false, one line per finished sweep job, and the same records either way."""
import io
import sys

import numpy as np
import pandas as pd
import pytest

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

    def spy(self, lo, hi, rows):
        fields = orig(self, lo, hi, rows)
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
