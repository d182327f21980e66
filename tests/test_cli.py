"""The command line as a user runs it: python -m mibench ... in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FAST = ["dataset.steps_per_level=20", "dataset.mi_levels=[2,4]", "trainer.enable_progress_bar=false"]


def mibench(*args, runs: Path, timeout=300, env=None):
    env = {**(os.environ if env is None else env), "MIBENCH_RUNS": str(runs), "WANDB_MODE": "offline",
           "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_dirs(runs: Path):
    return sorted(p.parent for p in runs.rglob("summary.csv"))


@pytest.mark.slow
def test_default_run(runs_dir):
    """The default run (staircase 2..10 nats, separable critic, InfoNCE, batch 64, Adam 5e-4) on CPU, with
    500 instead of 4,000 steps a level to keep CI short: every other setting is the default."""
    p = mibench("dataset.steps_per_level=500", runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    (d,) = run_dirs(runs_dir)
    assert d.parent == runs_dir / "staircase" / "gaussian"
    steps = pd.read_csv(d / "steps.csv")
    assert len(steps) == 2_500 and sorted(steps["true_mi"].unique()) == [2, 4, 6, 8, 10]
    summary = pd.read_csv(d / "summary.csv")
    assert list(summary["true_mi"]) == [2, 4, 6, 8, 10]
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["estimator"]["name"] == "infonce" and cfg["critic"]["name"] == "separable"
    assert cfg["dataset"]["batch_size"] == 64 and cfg["benchmark"]["lr"] == 5e-4
    assert (d / "staircase.png").exists()
    assert "true_mi" in p.stdout and "mse" in p.stdout  # the printed summary table
    # InfoNCE at batch 64 cannot exceed log 64 = 4.16 nats, so it is far below MI = 10
    assert summary["mean"].iloc[-1] < 4.2


@pytest.mark.slow
def test_override_lambda(runs_dir):
    p = mibench("estimator=remine", "lambda=0.01", "critic=bilinear", *FAST, runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    (d,) = run_dirs(runs_dir)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["estimator"]["name"] == "remine" and cfg["estimator"]["lam"] == 0.01
    assert cfg["critic"]["name"] == "bilinear"


@pytest.mark.slow
def test_multirun_sweep(runs_dir):
    p = mibench("-m", "estimator=mine,remine", "seed=0,1", *FAST, runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    dirs = run_dirs(runs_dir)
    assert len(dirs) == 4
    seen = {(yaml.safe_load((d / "config.yaml").read_text())["estimator"]["name"],
             yaml.safe_load((d / "config.yaml").read_text())["seed"]) for d in dirs}
    assert seen == {("mine", 0), ("mine", 1), ("remine", 0), ("remine", 1)}


@pytest.mark.slow
def test_lambda_sweep(runs_dir):
    p = mibench("-m", "estimator=remine", "lambda=0.1,0.01,0.001", *FAST, runs=runs_dir)
    assert p.returncode == 0, p.stderr[-2000:]
    lams = sorted(yaml.safe_load((d / "config.yaml").read_text())["estimator"]["lam"] for d in run_dirs(runs_dir))
    assert lams == [0.001, 0.01, 0.1]


@pytest.mark.parametrize("args,needles", [
    (["estimator=mien"], ["mien", "remine", "infonce"]),
    (["critic=mlp"], ["mlp", "separable", "concat", "bilinear"]),
    (["estimator=remine", "lambda=-0.1"], ["lambda=-0.1", ">= 0"]),
    (["dataset.batch_size=1"], ["batch_size=1", ">= 2"]),
    (["-m", "estimator=infonce,nope"], ["nope", "remine"]),
    (["estimator.clip=0", "estimator=nwj"], ["clip=0", "positive"]),
])
@pytest.mark.slow
def test_bad_input_one_line_no_training(runs_dir, args, needles):
    p = mibench(*args, runs=runs_dir, timeout=120)
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("mibench: error:")
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not runs_dir.exists() or not any(runs_dir.rglob("*.csv"))  # nothing trained


def test_help_lists_groups(runs_dir):
    p = mibench("--help", runs=runs_dir)
    assert p.returncode == 0
    listed = {ln.split(":")[0].strip(): {c.strip() for c in ln.split(":", 1)[1].split(",")}
              for ln in p.stdout.splitlines() if ":" in ln and not ln.startswith(" ")}
    for group, names in (("estimator", "alpha dv eta_mine infonce js mine nwj reinfonce rejs remine renwj"),
                         ("critic", "bilinear clb concat separable slb"),
                         ("dataset", "cifar10 cifar100 cubic gaussian"), ("model", "convnet none resnet18 resnet18_224"),
                         ("hardware", "cpu ddp gpu")):
        assert set(names.split()) <= listed.get(group, set()), (group, listed.get(group))
    assert "lambda" in p.stdout


@pytest.mark.slow
def test_sweep_presets_need_m_and_are_validated_before_launch():
    """A preset's own sweep (Hydra syntax, e.g. range(0,10)) is expanded and validated like a command-line one."""
    from mibench.cli import preflight

    for preset in ("eta_fig3a", "remine_fig7", "poole_fig2", "onehot_fig4"):
        assert preflight(["-m", f"experiment={preset}"]) is None, preset
        assert "add -m" in preflight([f"experiment={preset}"])
    assert preflight(["-m", "experiment=remine_fig7", "estimator=mien"]).startswith("unknown estimator 'mien'")
    # a seed sweep is validated with one seed after every seed value passed the seed check
    assert preflight(["-m", "seed=0,-1", "dataset.steps_per_level=2"]).startswith("seed=-1 is invalid")


HEAVY = ("torch", "lightning", "pandas", "matplotlib")
# runs `python -m mibench ARGS` in this interpreter, then names the heavy packages it imported (on stderr)
PROBE = f"""
import runpy, sys
sys.argv = ["mibench", *sys.argv[1:]]
try:
    runpy.run_module("mibench", run_name="__main__")
finally:
    print("imported:", *sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})), file=sys.stderr)
"""


def probe(*args):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    *rest, last = p.stderr.splitlines() or [""]
    assert last.startswith("imported:"), p.stderr[-2000:]
    return p, set(last.split()[1:]), rest


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"], ["-m", "--help"]])
def test_help_imports_no_training_stack(args):
    """--help is rendered from conf/ by the CLI itself: no torch, Lightning, pandas or matplotlib."""
    p, heavy, _ = probe(*args)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Usage: python -m mibench" in p.stdout and "estimator: " in p.stdout
    assert heavy == set(), heavy


def test_help_page_is_hydras(capsys, monkeypatch):
    """The CLI's own rendering prints exactly what Hydra's --help prints from conf/hydra/default.yaml."""
    import hydra

    from mibench.cli import CONF_DIR, help_text

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def app(cfg):
        raise AssertionError("--help runs no job")

    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # compose_config (earlier tests) keeps one initialised
    monkeypatch.setattr(sys, "argv", ["mibench", "--help"])
    with pytest.raises(SystemExit) as e:
        app()
    assert e.value.code == 0
    assert capsys.readouterr().out == help_text() + "\n"


def test_unknown_key_fails_before_torch_is_imported():
    """A config that does not compose is reported without importing the validators (and torch)."""
    p, heavy, lines = probe("dataset.nope=1")
    assert p.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("mibench: error:") and "dataset.nope" in lines[0], lines
    assert "torch" not in heavy, heavy


def test_benchmark_alone_adds_its_default_dataset_and_estimator():
    from mibench.cli import implied
    from mibench.compose import compose_config

    assert implied(["benchmark=dsprites"]) == ["benchmark=dsprites", "dataset=dsprites", "estimator=struct_js"]
    assert implied(["benchmark=dsprites", "estimator=tnce"]) == ["benchmark=dsprites", "estimator=tnce", "dataset=dsprites"]
    assert implied(["benchmark=staircase"]) == ["benchmark=staircase", "dataset=gaussian"]  # no default_estimator
    assert implied(["benchmark=migan", "experiment=migan_fast"]) == ["benchmark=migan", "experiment=migan_fast"]
    assert compose_config(["benchmark=migan"]).estimator.name == "eta_mine"


def test_a_sweep_in_process_leaves_no_handler_on_a_closed_stream(runs_dir, monkeypatch):
    """The Python API and notebooks run mibench more than once in one process, under redirected output (pytest's
    capture, contextlib.redirect_stdout). Hydra's own logging set-up bound a handler to the stdout of the moment;
    once that stream closed, every later mibench line was a 'Logging error' traceback. Both of Hydra's logging
    set-ups now use mibench's console, which looks its stream up per line."""
    import contextlib
    import io
    import logging

    from mibench.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["-m", "dataset.steps_per_level=5", "dataset.mi_levels=[1]", "dataset.dim=2", "seed=0,1",
                     "trainer.enable_progress_bar=false", "logger=none", f"runs_root={runs_dir}"])
    assert code in (0, None) and "[2/2 done" in out.getvalue(), out.getvalue()
    # what the sweep's console showed of its own (the job lines, the summary) is kept in the sweep's sweep.log
    shown = [ln for ln in out.getvalue().splitlines() if ln.startswith("[") and "][HYDRA]" not in ln]
    (log,) = runs_dir.rglob("sweep.log")
    kept = [ln.split("] ", 1)[1] for ln in log.read_text().splitlines()]
    assert len(shown) >= 3 and kept == shown, (shown, kept)
    out.close()
    err, later = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "stdout", later)
    logging.getLogger("mibench").info("mibench: a later line")
    logging.getLogger("mibench").warning("mibench: note: a later note")
    assert "Logging error" not in err.getvalue() and "a later note" in err.getvalue()
    assert later.getvalue() == "mibench: a later line\n"
