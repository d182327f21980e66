"""Issue 26, "Bad input never gives a wrong number": each case ends in one line naming the key or file and what
is valid (exit 2 on the command line, ValueError in the API) or in a correct result. The fuzz over every
numeric key is tests/test_config_fuzz.py."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mibench import estimate
from mibench.checks import ConfigError, check_dir
from mibench.cli import preflight
from mibench.compose import compose_config
from mibench.config import validate
from mibench.data.samples import STANDARDIZE_TOL, save_samples, standardize

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.enable_progress_bar=false", "logger=none", "benchmark.plot=false"]
TINY = ["benchmark.steps=40", "benchmark.eval_every=20", "benchmark.batch_size=64"]


def gaussian(n: int = 600, rho: float = 0.9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal((n, 2))


def one_line(e: BaseException, *needles: str) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


def samples_cfg(path, *extra: str):
    return compose_config(["dataset=samples", f"dataset.path={path}", *QUIET, *extra])


# ------------------------------------------------------------------------------- A: scale-free input numerics
def old_standardize(x: np.ndarray) -> np.ndarray:
    """mibench 0.1.0's: the values cast to float32, then mean and sd in float32 (overflowing as they may)."""
    with np.errstate(all="ignore"):
        x = x.astype(np.float32)
        sd = x.std(axis=0)
        return ((x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


def test_standardize_is_scale_free_and_keeps_the_float32_numbers_of_ordinary_data():
    x = np.random.default_rng(1).standard_normal((500, 3)) * [1.0, 30.0, 0.01] + [0.0, 5.0, -2.0]
    before = old_standardize(x)
    np.testing.assert_array_equal(standardize(x), before)  # ordinary data: bit for bit the numbers of 0.1.0
    truth = (x - x.mean(axis=0)) / x.std(axis=0)
    for scale in (1e-30, 1e20, 1e160, 1e-300, 2.0**-900):  # 0.1.0: sd 0 or inf, or NaN
        assert np.abs(standardize(x * scale) - truth).max() < STANDARDIZE_TOL, scale
        assert np.abs(old_standardize(x * scale) - before).max() > 0.5 or scale < 1e-300 or scale > 1e150
    assert np.abs(old_standardize(x + 1e8) - before).max() > 0.1  # float32 lost the digits under the offset
    assert np.abs(standardize(x + 1e8) - truth).max() < STANDARDIZE_TOL  # float64 keeps them (to its own 1e-8 x 1e8)
    z = standardize(np.c_[np.arange(10.0), np.full(10, 7e300)])
    assert (z[:, 1] == 0).all() and z.dtype == np.float32  # a constant column becomes 0


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    x, y = gaussian()
    root = tmp_path_factory.mktemp("scaled")
    return x, y, {s: save_samples(root / f"x{s:g}.npz", x * s, y * s) for s in (1e-30, 1.0, 1e20, 1e160)}


@pytest.mark.parametrize("path", ["dataset=samples", "api"])
def test_scaled_inputs_give_the_same_estimate(scaled, path, tmp_path):
    """x and y scaled by 1e-30, 1e20, 1e160 give the unscaled run's estimate (0.1.0: 6e-8 for the first two,
    diverged with NaN for 1e160). Measured, both paths: 1.4314909 (1e-30), 1.4314919 (1, as in 0.1.0),
    1.4314923 (1e20), 1.4314919 (1e160): the inputs differ by ~1e-6; the limit leaves room for training to
    amplify that on other CPUs."""
    from mibench.app import run

    x, y, files = scaled
    got = {}
    for s, f in files.items():
        if path == "api":
            r = estimate(x * s, y * s, estimator="infonce", overrides=TINY[1:], steps=40)
            got[s] = (r.status, r.best_test_estimate)
        else:
            cfg = samples_cfg(f, *TINY)
            r = run(cfg, tmp_path / f"{s:g}", echo=False)
            got[s] = (r.status, r.metrics["best_test_estimate"])
    base = got[1.0][1]
    assert base > 0.3, got
    for s, (status, est) in got.items():
        assert status == "completed" and abs(est - base) < 0.02, (s, got)


@pytest.mark.parametrize("scale,needle", [(1e160, "beyond float32's range"), (1e-45, "below float32's smallest normal")])
def test_unstandardised_values_float32_cannot_hold_are_one_line(scaled, tmp_path, scale, needle):
    x, y, _ = scaled
    f = save_samples(tmp_path / "p.npz", x * scale, y)
    with pytest.raises(ConfigError) as e:
        validate(samples_cfg(f, "dataset.standardize=false"))
    one_line(e.value, "p.npz: x column 0", needle, "dataset.standardize=true")
    validate(samples_cfg(f))  # standardised, the same values are fine


def test_a_constant_column_is_standardised_to_zero_with_a_note(tmp_path):
    x, y = gaussian()
    f = save_samples(tmp_path / "c.npz", np.c_[x, np.full(len(x), 3.0)], y)
    notes = validate(samples_cfg(f))
    assert any("c.npz: x column(s) 2 of 3 constant: standardised to 0" in n for n in notes), notes


# ------------------------------------------------------------------------------- B: keys ignored or overridden
def test_csv_column_keys_on_an_array_file_are_one_line(scaled):
    with pytest.raises(ConfigError) as e:
        validate(samples_cfg(scaled[2][1.0], "dataset.x=[a]"))
    one_line(e.value, "dataset.x=['a'] names CSV columns", ".npz file", "valid: dataset.x=null")


@pytest.mark.parametrize("override,valid", [("dataset.split_seed=-3", "null for the run's seed, or an integer from 0"),
                                            ("dataset.split_seed=1.5", "null for the run's seed"),
                                            ("seed=-1", "an integer from 0 to 4294967295")])
def test_seeds_are_checked_alike(scaled, override, valid):
    with pytest.raises(ConfigError) as e:
        validate(samples_cfg(scaled[2][1.0], override))
    one_line(e.value, f"{override} is invalid", valid)


def test_presets_the_command_line_overrides_implicitly_are_one_line_notes(scaled):
    notes: list[str] = []
    assert preflight(["dataset=samples", f"dataset.path={scaled[2][1.0]}", "critic=onehot"], notes) is None
    assert notes == ["critic=onehot replaces benchmark=samples's critic=concat (the command line wins); "
                     "benchmark=samples sets critic.hidden=[16, 8], critic.layers=2 over critic=onehot's 64, 1 "
                     "(set them on the command line to choose)"]
    notes = []
    assert preflight(["-m", "experiment=remine_fig7", "estimator=mine", "seed=0"], notes) is None
    assert notes == ["estimator=mine replaces experiment=remine_fig7's sweep estimator=mine,remine,smile,resmile,"
                     "infonce,reinfonce,nwj,renwj,tuba,retuba,js,rejs",
                     "seed=0 replaces experiment=remine_fig7's sweep seed=0,1,2,3,4"]
    notes = []
    assert preflight(["estimator=nwj", "critic=concat", "dataset.steps_per_level=2"], notes) is None and notes == []


# ------------------------------------------------------------------------------- C: the vectorized launcher
LAUNCHER = ["-m", "seed=0,1", "dataset.steps_per_level=2", "hydra/launcher=vectorized"]


@pytest.mark.parametrize("setting,valid", [
    ("max_group_size=0", "null for as many runs as fit memory_fraction, or an integer >= 1"),
    ("max_group_size=1.5", "an integer >= 1"), ("max_group_size=-1", "an integer >= 1"),
    ("max_group_size=abc", "an integer >= 1"), ("memory_fraction=0", "a fraction 0 < f <= 1"),
    ("memory_fraction=-1", "a fraction 0 < f <= 1"), ("memory_fraction=abc", "a fraction 0 < f <= 1"),
    ("memory_fraction=1.5", "a fraction 0 < f <= 1"), ("progress=maybe", "true or false"),
])
def test_launcher_settings_are_checked_before_any_job(setting, valid):
    err = preflight([*LAUNCHER, f"hydra.launcher.{setting}"])
    assert err == f"hydra.launcher.{setting} is invalid (valid: {valid})" or (valid in err and setting in err), err


@pytest.mark.parametrize("setting", ["max_group_size=null", "max_group_size=3", "memory_fraction=1", "progress=false"])
def test_valid_launcher_settings_pass(setting):
    assert preflight([*LAUNCHER, f"hydra.launcher.{setting}"]) is None


def test_the_launcher_itself_refuses_bad_settings():
    from hydra_plugins.mibench_launcher.vectorized_launcher import VectorizedLauncher

    with pytest.raises(ConfigError, match=r"hydra.launcher.max_group_size=-1 is invalid"):
        VectorizedLauncher(max_group_size=-1)
    assert VectorizedLauncher(max_group_size=2, memory_fraction=1).max_group_size == 2


@pytest.mark.parametrize("args,env,needle", [
    ([*LAUNCHER, "hydra.launcher.max_group_size=-1"], {}, "hydra.launcher.max_group_size=-1 is invalid"),
    (["-m", "seed=0,1", "dataset.steps_per_level=2"], {"MIBENCH_RUNS": "FILE"}, "(MIBENCH_RUNS) is a file, not a directory"),
])
def test_cli_exit_2_one_line_and_nothing_started(tmp_path, args, env, needle):
    (tmp_path / "FILE").write_text("")
    runs = tmp_path / "runs"
    env = {**os.environ, "MIBENCH_RUNS": str(runs), "PYTHONWARNINGS": "ignore",
           **{k: str(tmp_path / v) for k, v in env.items()}}
    p = subprocess.run([sys.executable, "-m", "mibench", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("mibench: error:"), p.stderr
    assert needle in lines[0], lines[0]
    assert not runs.exists()  # no sweep directory, no record left "running"


# ------------------------------------------------------------------------------- D: the API's errors
X, Y = gaussian(200)
API = {
    "out_dir a file": (dict(out_dir="FILE"), "is a file, not a directory"),
    "out_dir under /proc": (dict(out_dir="/proc/mibench"), "out_dir=/proc/mibench is under /proc"),
    "meta tensor": (dict(x=torch.empty(200, 2, device="meta")), "x is a meta tensor, which holds no values"),
    "complex": (dict(x=X.astype(complex)), "x holds complex numbers"),
    "ragged": (dict(y=[[1.0, 2.0], [3.0]]), "y cannot be read as an array of numbers"),
    "overrides a string": (dict(overrides="a=b"), "overrides='a=b' is invalid (valid: a list of 'key=value' strings"),
    "another dataset": (dict(overrides=["dataset=gaussian"]), "'dataset=gaussian' conflicts with estimate()'s data"),
    "the data's path": (dict(overrides=["dataset.path=x.npz"]), "'dataset.path=x.npz' conflicts with estimate()'s data"),
    "another estimator": (dict(estimator="infonce", overrides=["estimator=nwj"]),
                          "'estimator=nwj' conflicts with estimate()'s argument estimator='infonce'"),
    "a seed": (dict(overrides=["seed=3"]), "'seed=3' conflicts with estimate()'s argument seed=0"),
    "true_mi": (dict(true_mi="abc"), "true_mi='abc' is invalid (valid: one finite number >= 0, in nats)"),
    "steps": (dict(steps=0), "steps=0 is invalid (valid: an integer >= 1"),
    "an unknown key": (dict(overrides=["estimator.foo=1"]), "estimator.foo=1: estimator=infonce has no key 'foo'"),
}


@pytest.mark.parametrize("case", list(API))
def test_api_bad_input_is_one_line_value_error(case, tmp_path):
    kwargs, needle = API[case]
    (tmp_path / "FILE").write_text("")
    if kwargs.get("out_dir") == "FILE":
        kwargs = {**kwargs, "out_dir": tmp_path / "FILE"}
    args = {"x": X, "y": Y, **kwargs}
    with pytest.raises(ValueError) as e:
        estimate(args.pop("x"), args.pop("y"), **args)
    one_line(e.value, needle)


# ------------------------------------------------------------------------------- E: clear messages
@pytest.mark.parametrize("args,needles", [
    (["estimator.clip=-5"], ["estimator.clip=-5: estimator=infonce has no key 'clip' (its keys: name;",
                             "'clip' is a key of estimator=nwj, renwj", "a positive tau, or null"]),
    (["estimator.foo=1"], ["estimator.foo=1: estimator=infonce has no key 'foo' (its keys: name)"]),
    (["estimator=nwj", "estimator.clip=-5"], ["estimator.clip=-5 is invalid (valid: a positive tau"]),
    (["dataset.nope.deeper=1"], ["dataset.nope.deeper=1: dataset=gaussian has no key 'nope' (its keys: name, dim"]),
    (["-m", "seed=0,1", "hydra.launcher.max_group_size=3"],
     ["hydra/launcher=basic has no key 'max_group_size'", "is a key of hydra/launcher=vectorized"]),
])
def test_unknown_keys_say_why_and_what_is_valid(args, needles):
    err = preflight(args)
    for n in needles:
        assert n in err, (n, err)


def test_a_path_that_is_not_a_file_says_what_it_is(tmp_path):
    (tmp_path / "dir.npz").mkdir()
    os.mkfifo(tmp_path / "fifo.npz")
    (tmp_path / "loop.npz").symlink_to(tmp_path / "loop.npz")
    for name, what in (("dir.npz", "is a directory"), ("fifo.npz", "is not a regular file (it is a FIFO)"),
                       ("loop.npz", "is a symlink loop"), ("none.npz", "does not exist")):
        with pytest.raises(ConfigError) as e:
            validate(samples_cfg(tmp_path / name))
        one_line(e.value, f"dataset.path={tmp_path / name} {what}", "(valid: an existing .npz, .pt, .csv file)")


# ------------------------------------------------------------------------------- F: the runs root first
@pytest.fixture
def unwritable(tmp_path, monkeypatch):
    """Directories this user cannot write (``ro``) and on a read-only filesystem (``rofs``), whoever runs the
    tests (root may write anywhere; a read-only mount needs privileges)."""
    ro, rofs = tmp_path / "ro", tmp_path / "rofs"
    ro.mkdir(), rofs.mkdir()
    access, statvfs = os.access, os.statvfs
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == ro else access(p, mode, **kw))

    class ReadOnly:
        def __init__(self, st):
            self.f_flag = st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(statvfs(p)) if Path(p) == rofs else statvfs(p))
    (tmp_path / "file").write_text("")
    return tmp_path


@pytest.mark.parametrize("root,needle", [
    ("file", "is a file, not a directory"), ("file/runs", "cannot be made: {t}/file is a file, not a directory"),
    ("ro", "is not writable for this user"), ("ro/runs", "cannot be made: {t}/ro is not writable for this user"),
    ("rofs/runs", "cannot be made: {t}/rofs is on a read-only filesystem"), ("/proc/runs", "is under /proc"),
])
@pytest.mark.parametrize("how", ["runs_root=", "MIBENCH_RUNS", "-m runs_root=", "out_dir="])
def test_the_runs_root_is_checked_first(unwritable, monkeypatch, root, needle, how):
    t = unwritable
    path = root if root.startswith("/") else str(t / root)
    needle = needle.format(t=t)
    if how == "out_dir=":
        with pytest.raises(ValueError) as e:
            estimate(X, Y, out_dir=path)
        one_line(e.value, f"out_dir={path}", needle)
        return
    args = ["estimator=mien"]  # a bad config too: the runs root is reported first
    if how == "MIBENCH_RUNS":
        monkeypatch.setenv("MIBENCH_RUNS", path)
    else:
        args = (["-m", "seed=0,1"] if how.startswith("-m") else []) + [f"runs_root={path}", "dataset.steps_per_level=2"]
    err = preflight(args)
    assert err.startswith(f"runs_root={path}") and needle in err, err
    assert "(MIBENCH_RUNS)" in err if how == "MIBENCH_RUNS" else True


def test_check_dir_accepts_a_path_it_can_make(tmp_path):
    check_dir(tmp_path / "a" / "b", "runs_root=...")
    assert not (tmp_path / "a").exists()  # checked, not made
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(ConfigError, match="is a symlink loop"):
        check_dir(tmp_path / "loop" / "runs", "runs_root=...")


# ---------------------------------------------------------------------------------------------
# requirement 3 on every benchmark that trains an estimator: finite nonsense is `diverged`, with its reason

def _nonsense(fn):
    """``fn``'s bound with 1e12 added to the estimate and the loss: finite, and beyond any valid range."""
    import functools

    from mibench.estimators.bounds import Estimate

    @functools.wraps(fn)  # (Spec.params reads the signature through __wrapped__)
    def wrapped(*args, **kwargs):
        est = fn(*args, **kwargs)
        return Estimate(mi=est.mi + 1e12, loss=est.loss + 1e12, joint=est.joint, marginal=est.marginal)
    return wrapped


@pytest.fixture(scope="module")
def image_roots(tmp_path_factory):
    from mibench.data.fake_cifar import write_fake_cifar
    from mibench.data.imagefolder import write_generated_tree
    from mibench.data.stl10 import write_fake_stl10

    cifar = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(cifar, classes=10, train_per_class=4, test_per_class=2, seed=1)
    write_fake_stl10(cifar, train_per_class=1, test_per_class=1, seed=2)  # (layer-pair's probes)
    tree = write_generated_tree(tmp_path_factory.mktemp("imgs"), classes=3, train_per_class=3, val_per_class=2,
                                size=(72, 64))
    return {"cifar": cifar, "tree": tree}


IMAGE_SMALL = ["model=convnet", "model.width=8", "dataset=cifar10", "dataset.root={cifar}", "dataset.batch_size=8"]
# benchmark, estimator, overrides (>= 10 steps: the STREAK of the practical limits), what the reason names
DIVERGING = [
    ("slb", "infonce", IMAGE_SMALL + ["benchmark=slb", "benchmark.epochs=1"], "log K = log 10"),  # K = C
    ("clb", "dv", IMAGE_SMALL + ["benchmark=clb", "benchmark.epochs=3"], "10 x max(true MI, 1 nat) = 23"),  # log C
    ("dim", "infonce", ["benchmark=dim", "benchmark.batch_size=8", "benchmark.mi_units=8", "benchmark.epochs=1",
                        "benchmark.probe.epochs=1", "benchmark.probe.datasets=[cifar10]", "dataset.root={cifar}"],
     "log K = log 512"),  # local DIM: B x B*8*8
    ("layerpair", "dv", ["benchmark=layerpair", "benchmark.batch_size=4", "benchmark.head_units=8",
                           "benchmark.head_hidden=8", "benchmark.probe.epochs=1", "benchmark.epochs=2",
                           "dataset=cifar10", "dataset.root={cifar}"], "(trainer.diverge_loss)"),  # MI unknown
    ("jigsaw", "dv", ["experiment=jigsaw_fast", "model.width=2", "benchmark.images_per_batch=2",
                        "benchmark.perms_per_batch=3", "benchmark.epochs=4", "benchmark.max_steps=12",
                        "benchmark.check_every=1", "benchmark.witness.dim=16", "benchmark.descrambler.proj=8",
                        "benchmark.descrambler.hidden=8", "benchmark.pretext.images=2", "benchmark.pretext.perms=2",
                        "benchmark.probe.epochs=1", "dataset.root={tree}", "benchmark.perm_cache={tmp}"],
     "10 x max(true MI, 1 nat)"),  # log P
    ("dsprites", "infonce", ["experiment=dsprites_fast", "benchmark.steps=12", "benchmark.eval_every=6",
                             "benchmark.batch_size=8", "benchmark.eval_size=96", "benchmark.eval_batch=48"],
     "log K = log 8"),
    ("migan", "dv", ["benchmark=migan", "benchmark.steps=20", "benchmark.eval_every=10", "benchmark.batch_size=16",
                       "benchmark.eval_samples=200", "benchmark.g_hidden=16", "benchmark.d_hidden=16",
                       "critic.hidden=16", "critic.embed=8"], "10 x max(true MI, 1 nat) = 32.2"),  # log 25 (codes)
]


@pytest.mark.parametrize("bench,est,overrides,reason", DIVERGING, ids=[d[0] for d in DIVERGING])
def test_every_benchmark_records_finite_nonsense_as_diverged(bench, est, overrides, reason, image_roots, tmp_path,
                                                             monkeypatch):
    """A bound that returns 1e12 nats (finite) on SLB, CLB, DIM, layer-pair, Jigsaw, dSprites and MI-GAN ends
    `diverged`, at the step and for the reason its task's range gives (log K, a multiple of log C or log P, or the
    loss limit where the true MI is unknown), not `completed`."""
    import dataclasses
    import json

    from mibench.app import run
    from mibench.estimators import REGISTRY

    monkeypatch.setitem(REGISTRY, est, dataclasses.replace(REGISTRY[est], fn=_nonsense(REGISTRY[est].fn)))
    subs = {**{k: str(v) for k, v in image_roots.items()}, "tmp": str(tmp_path / "cache")}
    cfg = compose_config([o.format(**subs) for o in overrides] + [f"estimator={est}", *QUIET[:2]],
                         out_dir=tmp_path / "run")
    run(cfg, echo=False)
    record = json.loads((tmp_path / "run" / "result.json").read_text())
    assert record["status"] == "diverged", record
    assert reason in record["diverged_reason"], record["diverged_reason"]
