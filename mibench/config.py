"""Validation of a composed config: one clear line per problem, raised before any training.

Generic checks live here; each benchmark checks its own values (``Task.validate``), and whether an
estimator fits a benchmark is decided from what the registry says the estimator needs
(``Spec.layout``, ``Spec.needs_y``, ``Spec.trainable``, ``Spec.conditional``, ``check_params``) against
what the task gives (its ``Capabilities`` for the config: ``layout``, ``gives_y``, ``conditional``): no benchmark keeps a
list of estimators.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from .registry import DATASETS, ESTIMATORS, TASKS, providing
from .checks import (Bool, Choice, ConfigError, Int, Maybe, Number, Numbers, OneOf, Plain, as_dict, check_rules,
                     check_runs_root, check_seed, check_size, frozen, num, plain, writable)
from .precision import PRECISIONS
from .estimators import LAYOUTS, build_estimator, check_params, usable

LOGGERS = ("csv", "wandb", "none")
LAYOUT_TEXT = {"rows": "a row-wise partition (row i pairs x_i with its positives and negatives)",
               "paired": "a square matrix of paired samples (joint pairs on the diagonal)"}

__all__ = ["ConfigError", "apply_overrides", "validate", "LOGGERS"]

# the keys every benchmark's engine reads (a group's options may lack some: only the present ones are checked)
GENERIC = {
    "trainer": {"enable_progress_bar": Bool(), "deterministic": Bool(),
                "checkpoint_every_min": Maybe(Number(0.0, text="minutes >= 0 (0: none)"), "null for none"),
                "log_every_min": Maybe(Number(0.0, text="minutes >= 0 (0: none)"), "null for none")},
    "hardware": {"threads": Maybe(Int(1), "null for torch's default"), "num_workers": Int(0),
                 "devices": OneOf(Int(1, minus_one=True), Numbers(Int(0), "device indices"), Choice("auto"),
                                  text="-1 for all, an integer >= 1, a list of device indices, or auto")},
}


def apply_overrides(cfg: DictConfig | Plain) -> list[str]:
    """Fold ``per_estimator.<name>`` (a preset's options for the estimator that runs, e.g. the authors'
    conventions of each regularized loss in a sweep over estimators), then the top-level ``lambda`` /
    ``c_star``, into the estimator node (of the config itself: :func:`validate` folds a plain copy, a run
    folds its config after validating it). Returns notes for the user."""
    notes: list[str] = []
    spec = ESTIMATORS.get(cfg.estimator.name)
    per = cfg.get("per_estimator")
    if per is not None and not isinstance(per, (DictConfig, dict)):
        raise ConfigError(f"per_estimator={per!r} is invalid (valid: a mapping estimator name -> options)")
    if per:
        bad = [k for k in per if k not in ESTIMATORS]
        if bad:
            raise ConfigError(f"per_estimator.{bad[0]} is not an estimator (valid: {', '.join(sorted(ESTIMATORS))})")
        for name, opts in per.items():  # every estimator's options, not only the one that runs: a sweep runs them all
            check_options(f"per_estimator.{name}", name, opts)
        opts = per.get(cfg.estimator.name)
        if opts:
            with writable(cfg.estimator):
                for k, v in opts.items():
                    cfg.estimator[k] = v
    for top, key in (("lambda", "lam"), ("c_star", "c_star")):
        value = cfg.get(top)
        if value is None:
            continue
        if not num(value):
            raise ConfigError(f"{top}={value!r} is not a number (valid: a finite number{', >= 0' if top == 'lambda' else ''})")
        if top == "lambda" and value < 0:
            raise ConfigError(f"lambda={value} is negative (valid: lambda >= 0, e.g. 0.1, 0.01, 0.001)")
        if spec is not None and spec.regularized:
            with writable(cfg.estimator):
                cfg.estimator[key] = float(value)
        else:
            regs = ", ".join(n for n, s in ESTIMATORS.items() if s.regularized)
            notes.append(f"{top}={value} ignored: estimator={cfg.estimator.name} has no regularizer (regularized: {regs})")
    return notes


def check_options(path: str, name: str, opts: Any) -> None:
    """``opts`` (a mapping of estimator ``name``'s parameters, at ``path``) against the registry's rules."""
    if not isinstance(opts, (DictConfig, dict)):
        raise ConfigError(f"{path}={opts!r} is invalid (valid: a mapping of estimator={name}'s parameters)")
    check_params(name, opts, path, known=True)


def dim_y(cfg: DictConfig) -> int:
    """``dataset.dim`` for the estimator's learned parts (2 where the dataset has none, or the benchmark's
    own check will reject it)."""
    v = cfg.dataset.get("dim", 2)
    return v if Int(1).ok(v) else 2


def check_estimator_fits(cfg: DictConfig, task: Any, meta: Any) -> None:
    """The estimator's needs (registry) against what ``task`` gives: trainability, score layout, y per column
    (``meta``: the estimator on the meta device, for the smoke call)."""
    est = cfg.estimator
    spec = ESTIMATORS[est.name]
    if not task.caps.uses_estimator:  # (the class's declaration: jigsaw's objective=ce is checked as before)
        return
    caps = task.capabilities(cfg)
    layout, gives_y, cond, trains = caps.layout, caps.gives_y, caps.conditional, caps.trains_critic
    valid = ", ".join(usable(layout, gives_y, trains, cond))
    if spec.conditional and not cond:
        raise ConfigError(f"estimator={est.name} is a structured bound: its scores must be a known encoder's "
                          f"log p(y|x), which benchmark={task.name} does not give here (valid: {valid}; or a "
                          f"benchmark with a tractable encoder: {', '.join(conditional_benchmarks())})")
    if trains and not spec.trainable:
        raise ConfigError(f"estimator={est.name} needs the true critic and cannot be trained "
                          f"(valid: use it in benchmark=optimal, or one of {valid})")
    if LAYOUTS.index(spec.layout) > LAYOUTS.index(layout):
        raise ConfigError(f"estimator={est.name} needs {LAYOUT_TEXT[spec.layout]}, which benchmark={task.name} "
                          f"does not give here (valid: {valid})")
    if spec.needs_y(as_dict(est)) and not gives_y:
        raise ConfigError(f"estimator={est.name} with estimator.baseline=learned needs the y of every score column, which "
                          f"benchmark={task.name} does not give (valid: estimator.baseline=constant, or one of {valid})")
    smoke_call(cfg, layout, gives_y, meta)


def conditional_benchmarks() -> list[str]:
    """Benchmarks whose scores can be a known encoder's log p(y|x) (with their option where one is needed)."""
    return sorted(n for n, t in TASKS.items() if t.caps.known_encoder)


_SMOKED: dict[tuple, str | None] = {}  # smoke_call's answers by (estimator parameters, layout, y)


def smoke_call(cfg: DictConfig, layout: str, gives_y: bool, est: Any) -> None:
    """Call the configured estimator once on a tiny score matrix of the task's layout (with y when the task
    gives it), so that a combination that cannot run fails here, before training, with one line. ``est`` is
    validate's meta-device instance (shapes only): the call and its backward run on meta tensors, so checking
    builds no real estimator (an estimator that reads a value on the host cannot run there: a real one on the
    CPU is called instead)."""
    key = (frozen(as_dict(cfg.estimator)), layout, gives_y, dim_y(cfg))
    if key not in _SMOKED:
        if len(_SMOKED) > 4096:
            _SMOKED.clear()
        why = _smoke(est, "meta", layout, gives_y, dim_y(cfg))
        if why is not None and "meta" in why:  # a host read (.item(), if tensor:): the same call on the CPU
            dy = min(dim_y(cfg), 8)  # the layout and y are what can fail here, not y's size (checked above)
            why = _smoke(lambda: build_estimator(as_dict(cfg.estimator), dim_y=dy), "cpu", layout, gives_y, dy)
        _SMOKED[key] = why
    if _SMOKED[key] is not None:
        raise ConfigError(f"estimator={cfg.estimator.name} cannot run on benchmark={cfg.benchmark.name}: {_SMOKED[key]}")


def _smoke(est: Any, device: str, layout: str, gives_y: bool, dy: int) -> str | None:
    """:func:`smoke_call`'s call of ``est`` (or of what ``est()`` builds) on ``device``: None, or the first line of
    what went wrong."""
    import torch

    try:
        with torch.device(device):
            est = est() if not isinstance(est, torch.nn.Module) else est
            n = 4
            scores = torch.linspace(-1.0, 1.0, n * n).reshape(n, n)
            eye = torch.eye(n, dtype=torch.bool)
            joint, marginal = (None, None) if layout == "paired" else (eye, ~eye)
            out = est(scores, joint, marginal, y=torch.zeros(n, dy) if gives_y else None)
            out.loss.backward() if out.loss.requires_grad else None
    except (ValueError, TypeError, RuntimeError, NotImplementedError) as e:
        return (str(e).splitlines() or [type(e).__name__])[0]
    return None


def validate(config: DictConfig | Plain, check_hardware: bool = True) -> list[str]:
    """Raise :class:`ConfigError` on the first bad value; return informational notes. Pure: the checks read a
    resolved plain copy (:func:`mibench.checks.plain`), ``config`` is left as it was. The runs root comes
    first: no other check matters when the run cannot write its records."""
    cfg = plain(config)
    if cfg.get("runs_root"):
        check_runs_root(cfg.runs_root)
    est = cfg.estimator
    if est.name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {est.name!r} (valid: {', '.join(sorted(ESTIMATORS))})")
    notes = apply_overrides(cfg)
    check_params(est.name, est)
    bench = cfg.benchmark
    if bench.name not in TASKS:
        raise ConfigError(f"unknown benchmark {bench.name!r} (valid: {', '.join(sorted(TASKS))})")
    task = TASKS[bench.name]
    data = DATASETS.get(cfg.dataset.name)
    if data is None:
        raise ConfigError(f"unknown dataset {cfg.dataset.name!r} (valid: {', '.join(sorted(DATASETS))})")
    if task.needs_data is not None and task.needs_data not in data.provides:
        raise ConfigError(f"dataset={cfg.dataset.name} does not fit benchmark={bench.name} "
                          f"(valid: {', '.join(providing(task.needs_data))})")
    if "lr" in bench and not (num(bench.lr) and bench.lr > 0):
        raise ConfigError(f"benchmark.lr={bench.lr} is invalid (valid: a positive learning rate)")
    check_seed(cfg.seed)
    if cfg.logger.name not in LOGGERS:
        raise ConfigError(f"unknown logger {cfg.logger.name!r} (valid: {', '.join(LOGGERS)})")
    check_rules(cfg, GENERIC, present=True)
    if str(cfg.hardware.get("precision", "32-true")) not in PRECISIONS:
        raise ConfigError(f"hardware.precision={cfg.hardware.get('precision')} is invalid (valid: {', '.join(PRECISIONS)})")
    if check_hardware and cfg.hardware.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"hardware={cfg.hardware.name} but no CUDA device is visible here "
                              f"(valid on this machine: hardware=cpu)")
    params = as_dict(est)  # unknown parameters and impossible sizes fail here, not mid-run
    meta = check_size(lambda: build_estimator(params, dim_y=dim_y(cfg)), f"estimator={est.name} (y of dimension {dim_y(cfg)})",
               "smaller estimator.baseline_hidden / baseline_layers / components, or a smaller y",
               key=("estimator", frozen(params), dim_y(cfg)))
    if cfg.get("critic") is not None and cfg.critic.get("name") == "conditional" and not task.capabilities(cfg).conditional:
        raise ConfigError(f"critic=conditional is a known encoder's log p(y|x), which benchmark={bench.name} does "
                          f"not have (valid: benchmark={' or '.join(conditional_benchmarks())})")
    data.check(cfg)
    task.validate(cfg)
    check_estimator_fits(cfg, task, meta)
    return notes + (task.notes(cfg) if hasattr(task, "notes") else [])  # e.g. the data's constant columns
