"""Issue 26 (req 8): generated bad values for every numeric key of every config group, through validation only.

Each option of each group (conf/<group>/<option>.yaml) is composed in a context where its keys are read (a
model under a benchmark that builds one, a structured bound under benchmark=sandwich, data from small fakes).
Every key its file sets whose composed value is a number, a list of numbers or null (and, for a benchmark that
trains, every key of its dataset) gets negative, zero, huge, NaN and string values, each validated in-process
with ``mibench.config.validate``: what the CLI's preflight runs for every job before any starts. Validation
reads a resolved plain copy of the config (``mibench.checks.plain``), so the values are set in that copy. Each must be
a one-line ConfigError that names the key, or valid; a valid value must not be absurd (NaN, a string, an empty
list, a negative or zero value) unless the tables below say what it means for that key. New keys and options
are covered by the enumeration: a new key that accepts nonsense fails here until it has a rule
(mibench/checks.py) or a line in a table.
"""
from __future__ import annotations

import copy
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from mibench.checks import ConfigError, Plain, plain, select
from mibench.compose import CONF_DIR, compose_config
from mibench.config import validate

FAKE_BMI = Path(__file__).parent / "fixtures" / "fake_bmi"
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
HUGE_INT, HUGE = 2**40, 1e30
# negative, zero, huge, NaN and a string; a list also empty; a key that is null gets numbers and a string
BAD = {"int": [-1, 0, HUGE_INT, math.nan, "abc"], "float": [-1.0, 0.0, HUGE, math.nan, "abc"],
       "list": [[-1], [0], [], [math.nan], "abc"], "null": [-1, 0, "abc"]}

# what an option needs besides itself to be valid and have its keys read
CONTEXT = {
    ("benchmark", "onehot"): ["estimator=nwj"], ("dataset", "onehot"): ["estimator=nwj"],
    ("dataset", "bmi"): ["dataset.task=fake-2v2-0.8", "dataset.n=600"],
    ("experiment", "bmi_fast"): ["dataset.task=fake-2v2-0.8", "dataset.n=600"],
    ("experiment", "bmi_suite"): ["dataset.task=fake-2v2-0.8", "dataset.n=600"],
    ("critic", "clb"): ["benchmark=clb"], ("critic", "slb"): ["benchmark=slb"],
    ("dataset", "mixture25"): ["benchmark=migan"], ("dataset", "random_gaussian"): ["benchmark=eta_gaussian"],
    ("dataset", "stl10"): ["benchmark=layerpair"], ("dataset", "imagenet10"): ["benchmark=jigsaw"],
    ("dim", "local"): ["benchmark=dim"], ("dim", "global"): ["benchmark=dim"],
    ("model", "resnet18"): ["benchmark=slb"], ("model", "resnet18_224"): ["benchmark=slb"],
    ("model", "convnet"): ["benchmark=slb"], ("model", "resnet50"): ["benchmark=jigsaw"],
    **{(g, o): ["benchmark.eval_size=16"] for g, o in (("benchmark", "dsprites"), ("dataset", "dsprites"),
                                                        ("experiment", "poole_dsprites"))},
    **{("estimator", e): ["benchmark=sandwich"] for e in ("loo_upper", "tnce", "rate", "struct_nwj", "struct_alpha",
                                                          "struct_js")},
}

# valid values that mean something for their key (the key's last part; per_estimator.<e>.<k> counts as <k>)
NEGATIVE_OK = {
    "c_star": "C* is on a log scale", "eta_init": "eta is a log-partition estimate, any real",
    "max_steps": "-1: no step limit", "max_per_class": "-1: no cap", "train_size": "-1: all images",
    "test_size": "-1: all images", "images": "-1: all images", "devices": "-1: every device",
}
ZERO_OK = {
    **{k: "a seed" for k in ("seed", "split_seed", "sample_seed", "data_seed", "subset_seed", "eval_seed",
                             "perm_seed", "seeds")},
    **{k: "a weight or penalty that may be off" for k in ("lambda", "lam", "weight_decay", "mi_weight", "alpha",
                                                          "beta", "gamma", "tc_weight", "smooth_weight",
                                                          "convex_l2")},
    "c_star": "C* is on a log scale", "eta_init": "eta starts anywhere",
    "tc_max": "a constraint bound (nats) may be 0", "smooth_max": "a constraint bound (nats) may be 0",
    "noise_std": "no smoothness noise", "dropout": "no dropout", "gray_p": "a probability",
    "factor_threshold": "a threshold", "active_threshold": "a threshold", "mi_values": "MI 0 is a level",
    "mi_levels": "MI 0 is a level", "num_workers": "0: data loaded in the main process",
    "checkpoint_every_min": "0: no timed checkpoints", "log_every_min": "0: no progress lines", "layers": "0 hidden layers: a linear network",
    "baseline_layers": "0 hidden layers: a linear baseline", "crop_pad": "no padding",
    "epochs": "0: the random-init encoder baseline (benchmark=dim, layerpair), no probe training (jigsaw)",
}
EMPTY_OK = {"milestones": "no learning-rate steps"}
# keys no code reads (left for old runs' configs and their hashes): any value changes nothing
UNUSED = {"trainer.max_epochs", "trainer.progress_refresh_rate", "dataset.num_classes"}
# read only under some benchmarks: elsewhere any value changes nothing
UNUSED_UNDER = {("layerpair", "dataset.batch_size"): "layerpair batches by benchmark.batch_size",
                ("dim", "dataset.batch_size"): "DIM batches by benchmark.batch_size"}
TOP = {"seed", "lambda", "c_star", "per_estimator", "out_dir", "runs_root", "overwrite", "resume"}


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    """Small fakes of every data set a group option reads, found through $MIBENCH_DATA."""
    from mibench.data import dsprites
    from mibench.data.fake_cifar import write_fake_cifar
    from mibench.data.imagefolder import write_generated_tree
    from mibench.data.samples import save_samples
    from mibench.data.stl10 import write_fake_stl10

    root = tmp_path_factory.mktemp("data")
    write_fake_cifar(root, classes=10, train_per_class=2, test_per_class=1)
    write_fake_cifar(root, classes=100, train_per_class=1, test_per_class=1)
    write_fake_stl10(root, train_per_class=1, test_per_class=1)
    write_generated_tree(root / "imagenet", classes=10, train_per_class=2, val_per_class=1, size=(40, 40))
    rng = np.random.default_rng(0)
    classes = np.stack([np.zeros(24, int)] + [rng.integers(0, s, 24) for s in dsprites.SIZES], 1)
    dsprites.data_path(root).parent.mkdir(parents=True)
    np.savez_compressed(dsprites.data_path(root), imgs=(rng.random((24, 64, 64)) < 0.05).astype(np.uint8),
                        latents_classes=classes, latents_values=classes.astype(float))
    x = rng.standard_normal((600, 2))
    pairs = save_samples(root / "pairs.npz", x, x + rng.standard_normal((600, 2)), 0.5)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIBENCH_DATA", str(root))
        mp.syspath_prepend(str(FAKE_BMI))
        yield {("benchmark", "samples"): [f"dataset.path={pairs}"], ("dataset", "samples"): [f"dataset.path={pairs}"]}
    for name in [m for m in sys.modules if m == "bmi" or m.startswith("bmi.")]:
        del sys.modules[name]  # the fake Beyond-Normal package


def options(group: str) -> list[str]:
    return sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml"))


def own_keys(group: str, option: str) -> list[str]:
    """The dotted keys conf/<group>/<option>.yaml sets (its group's node, or a _global_ file's own paths)."""
    path = CONF_DIR / group / f"{option}.yaml"
    glob = any(ln.startswith("# @package _global_") for ln in path.read_text().splitlines())
    out: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            if k in ("defaults", "hydra"):
                continue
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else out.append(f"{prefix}{k}")

    walk(OmegaConf.to_container(OmegaConf.load(path), resolve=False), "" if glob else f"{group}.")
    return out


def read_keys(cfg: Plain, group: str, option: str) -> list[str]:
    """The option's keys, and for a benchmark that trains its dataset's (read by more than one benchmark)."""
    from mibench.config import TASKS

    keys = own_keys(group, option)
    if group == "benchmark" and TASKS[cfg.benchmark.name].caps.trains:
        keys += [f"dataset.{k}" for k in cfg.dataset if f"dataset.{k}" not in keys]
    return keys


_COMPOSED: dict[tuple[str, ...], DictConfig] = {}


def composed(overrides: list[str]) -> DictConfig:
    """Hydra's config for ``overrides``, with its ``hydra`` node, composed once a process."""
    key = tuple(overrides)
    if key not in _COMPOSED:
        _COMPOSED[key] = compose_config(overrides, hydra=True)
    return _COMPOSED[key]


def configured(group: str, option: str, extra: list[str]) -> DictConfig:
    """The config of ``group=option`` in its context, composed by Hydra (without its ``hydra`` node); a plain
    option (no defaults list, its own package) whose group the context leaves as its own option's file takes
    the context's config with the group's node replaced by the option's file, which is what Hydra composes for
    it (and 20x faster)."""
    path = CONF_DIR / group / f"{option}.yaml"
    node = OmegaConf.load(path)
    if "defaults" in node or "@package" in path.read_text():
        ctx, node = composed([f"{group}={option}", *extra]), None
    else:
        ctx = composed(list(extra))
        choice = ctx.hydra.runtime.choices.get(group)
        own = OmegaConf.load(CONF_DIR / group / f"{choice}.yaml") if choice else None
        if own is None or OmegaConf.to_container(ctx[group], resolve=False) != OmegaConf.to_container(own, resolve=False):
            ctx, node = composed([f"{group}={option}", *extra]), None  # a preset set some of its keys: Hydra merges
    cfg = copy.deepcopy(ctx)
    with open_dict(cfg):
        del cfg["hydra"]
        if node is not None:
            cfg[group] = node
    return cfg


def kind(v: Any) -> str | None:
    if v is None:
        return "null"
    if isinstance(v, bool) or isinstance(v, str):
        return None
    if isinstance(v, (int, float)):
        return "int" if isinstance(v, int) else "float"
    if isinstance(v, (list, ListConfig)) and len(v) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        return "list"
    return None


def verdict(cfg: Plain, key: str, bad: Any) -> str:
    """'error' (one line naming the key), 'valid', or what went wrong. ``cfg`` is changed in place and restored
    (validation works on its own copy)."""
    parent, _, leaf = key.rpartition(".")
    node = select(cfg, parent) if parent else cfg
    raw = node[leaf]
    node[leaf] = bad
    try:
        validate(cfg, check_hardware=False)
    except ConfigError as e:
        msg = str(e)
        if "\n" in msg:
            return f"a multi-line error: {msg!r}"
        return "error" if leaf in msg else f"an error that does not name {key}: {msg}"
    except Exception as e:  # noqa: BLE001 -- what the fuzz looks for
        return f"a crash: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    finally:
        node[leaf] = raw
    return "valid"


_SEEN: set[tuple] = set()  # (benchmark, dataset, estimator, the key's option, key): fuzzed once a process


def fuzzed_before(cfg: Plain, key: str) -> bool:
    """Whether ``key`` was fuzzed in a context with the same benchmark, dataset, estimator and option of its own
    group (an experiment sets many keys of a benchmark that its benchmark's option fuzzed already)."""
    node = cfg.get(key.split(".")[0])
    sig = (cfg.benchmark.name, cfg.dataset.name, cfg.estimator.name,
           node.get("name") if isinstance(node, dict) else None, key)
    seen = sig in _SEEN
    _SEEN.add(sig)
    return seen


def absurd(key: str, k: str, bad: Any, benchmark: str) -> str | None:
    """Why accepting ``bad`` for ``key`` is absurd, or None when the tables say what it means."""
    name = key.split(".")[-1]
    if key in UNUSED or (benchmark, key) in UNUSED_UNDER or key.split(".")[0] not in set(GROUPS) | TOP:
        return None  # read by no code here, or a preset's own table (read through an interpolation or not at all)
    items = bad if isinstance(bad, list) else [bad]
    if isinstance(bad, list) and not bad:
        return None if name in EMPTY_OK else "an empty list"
    if any(isinstance(b, str) or (isinstance(b, float) and not math.isfinite(b) and b != HUGE) for b in items):
        return "a string or a non-finite number"
    if any(b == -1 for b in items) and name not in NEGATIVE_OK:
        return "a negative value"
    if any(b == 0 for b in items) and name not in ZERO_OK:
        return "zero"
    return None


@pytest.mark.parametrize("group", GROUPS)
def test_bad_values_are_one_line_errors_or_meaningful(group, fakes):
    holes, cases = [], 0
    for option in options(group):
        extra = [*CONTEXT.get((group, option), []), *fakes.get((group, option), [])]
        base = plain(configured(group, option, extra))
        validate(base, check_hardware=False)  # the context itself is valid
        bench, before = base.benchmark.name, copy.deepcopy(base)
        for key in read_keys(base, group, option):
            k = kind(select(base, key))
            if k is None or fuzzed_before(base, key):
                continue
            for bad in BAD[k]:
                cases += 1
                got = verdict(base, key, bad)
                if got == "valid":
                    why = None if k == "null" else absurd(key, k, bad, bench)
                    got = f"valid although {why}" if why else "error"
                if got != "error":
                    holes.append(f"{group}={option}: {key}={bad!r}: {got}")
        assert base == before, f"{group}={option}: the fuzz or validation left a change"
    assert cases and not holes, "\n".join(holes)
