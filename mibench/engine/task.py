"""What a benchmark says about itself, registered with :func:`register`: a :class:`Task` (it trains) or an
:class:`Analysis` (it computes its tables and trains nothing). Both are a :class:`Benchmark`: a config schema, the
kind of data read, what it supports for a config (:class:`Capabilities`), setup, evaluate, finish; what they need
from the engine comes in a :class:`mibench.engine.context.RunContext`.

A task owns its data, its networks, how a batch becomes scores and masks (and any extra loss),
what it evaluates at the end, its extra record columns and its outputs. It does not own an
optimizer, a loop, a record buffer, divergence checks or checkpoints: :mod:`mibench.engine.loop` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ..checks import ConfigError, Rule, check_rules
from ..critics import build_critic
from ..estimators import build_estimator
from .divergence import SCHEMA as DIVERGENCE
from .context import RunContext
from .result import RunResult

TASKS: dict[str, type["Benchmark"]] = {}


def register(name: str) -> Callable[[type["Benchmark"]], type["Benchmark"]]:
    """Class decorator: ``@register("staircase")`` makes the task (or analysis) ``benchmark=staircase``."""
    def deco(cls: type[Benchmark]) -> type[Benchmark]:
        cls.name = name
        TASKS[name] = cls
        return cls
    return deco


@dataclass
class Step:
    """One training step's outcome, as the task computes it from a batch.

    loss:      what the main optimizer minimises
    values:    the step's record, in the order of ``Task.columns`` (0-d tensors; detached by the engine)
    adversary: a second loss, computed after the main step and minimised by the adversary's optimizer
               (DIM's prior discriminator); its value is appended to the record
    shown:     values for the progress bar only, in the order of ``Task.shown_columns`` (e.g. the batch
               accuracy): copied with the record once per block, never written
    """

    loss: Tensor
    values: list[Tensor]
    adversary: Callable[[], Tensor] | None = None
    shown: list[Tensor] = field(default_factory=list)


@dataclass
class Scores:
    """What a task's :meth:`Task.score` gives its estimator: ``scores[i, j] = T(x_i, y_j)``, the masks
    (None: diagonal / off-diagonal), the y of every column (learned baselines) and the task's own terms
    for the record (``aux``, e.g. the one-hot table's statistics)."""

    scores: Tensor
    joint: Tensor | None = None
    marginal: Tensor | None = None
    y: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Optim:
    """The optimizer of a task's trainable networks (``Task.optim``)."""

    name: str = "adam"  # adam | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    milestones: tuple[int, ...] = ()  # MultiStepLR(0.1) at these segment (epoch) ends
    adversary_lr: float | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a benchmark supports for one config (:meth:`Benchmark.capabilities`): checked against the estimator
    registry before any work, and read by the engine, the group planner and the run's labels."""

    trains: bool = True  # the run trains (False: it only evaluates: no optimizer, no steps, no steps file)
    resumable: bool = False  # it checkpoints at each segment's end; resume=true continues from there
    # runs may train as one batched model (mibench.engine.group): the step is ``estimator(score(batch))`` with
    # ``values`` as its record, and nothing in it draws from a global generator or syncs with the host
    vectorized: bool = False
    layout: str = "paired"  # the score layout it gives an estimator: any | rows | paired (mibench.estimators.Spec)
    gives_y: bool = True  # it passes the y of every score column (learned baselines need it)
    conditional: bool = False  # the scores are a known encoder's log p(y_j | x_i) (the structured bounds)
    known_encoder: bool = False  # it has a tractable encoder: ``conditional``, always or by an option
    uses_estimator: bool = True  # the run trains or evaluates the estimator group
    uses_critic: bool = True  # a network is built from the critic group (False: the task's own, or none)
    trains_critic: bool = True  # the critic is trained (False: evaluation-only bounds are allowed)
    method: str = ""  # what names a run that uses no estimator, beside its seed ("": the benchmark's name)


class Benchmark:
    """What every benchmark declares, trained (:class:`Task`) or not (:class:`Analysis`). The engine makes it with
    its config, its run directory and its :class:`RunContext`, then calls ``setup()``; a task then trains; then
    ``evaluate()`` and ``finish(result)``."""

    name: ClassVar[str] = ""
    # the kind of data it reads (mibench.data.dataset.KINDS): every dataset that provides it fits, no other
    needs_data: ClassVar[str | None] = None
    # its config keys and what each may hold: {"benchmark": {"steps": Int(1)}, "dataset": {...}}
    schema: ClassVar[dict[str, dict[str, Rule]]] = {}
    caps: ClassVar[Capabilities] = Capabilities()  # what it supports unless :meth:`capabilities` says otherwise

    def __init__(self, cfg: DictConfig, out_dir: Path | None, ctx: RunContext):
        self.cfg: DictConfig = cfg
        self.out_dir: Path | None = Path(out_dir) if out_dir is not None else None
        self.ctx: RunContext = ctx  # what it needs from the engine: device, rank, where training stands
        self.device: torch.device = ctx.device

    @classmethod
    def validate(cls, cfg: DictConfig) -> None:
        """Raise :class:`ConfigError` (one line) on a bad value: the divergence limits and ``schema`` first, then
        :meth:`check`."""
        check_rules(cfg, DIVERGENCE)
        check_rules(cfg, cls.schema)
        cls.check(cfg)

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        """Checks that span several keys or need the data (after ``schema``)."""

    @classmethod
    def capabilities(cls, cfg: DictConfig | dict | None) -> Capabilities:
        """What a run of ``cfg`` supports: ``caps``, with ``method`` defaulting to the benchmark's name. A benchmark
        whose options change it overrides this; ``cfg`` may be a config.yaml read as plain data (read it by key)."""
        return replace(cls.caps, method=cls.caps.method or cls.name)

    def setup(self) -> None:
        """Load data (missing data: raise ConfigError) and build what the run needs."""

    def generated_data(self) -> str | None:
        """After :meth:`setup`: what about the data this run trains or evaluates on is GENERATED, a stand-in for a
        paper's dataset, in words (``GENERATED cifar10 files (/data/cifar-10-batches-py), not CIFAR-10``); None on
        the real dataset, and for data that is synthetic by design (the staircase's Gaussians). The run's record,
        console line, tables and figures say so (:func:`mibench.engine.run.conclude`, mibench.leaderboard)."""
        return None

    def evaluate(self) -> dict[str, Any]:
        """End-of-run metrics (a task: after training; an analysis: its whole computation)."""
        return {}

    def finish(self, result: RunResult) -> None:
        """Write the benchmark's own outputs (summary, figures) and fill ``result.summary/metrics/text``."""


class Task(Benchmark):
    """A benchmark that trains. Subclasses set the class attributes and override the hooks they need.

    The engine calls, in order: ``setup()``; for each segment from ``segments(start)``: ``step(batch)``
    per batch, ``on_block(lo, hi, rows)`` every ``block`` steps, ``end_segment(index, rows)`` at its end;
    then ``evaluate()`` and ``finish(result)``. Where training stands is ``self.ctx`` (``step``, ``segment``,
    ``diverged_step``), never the engine.
    """

    columns: ClassVar[tuple[str, ...]] = ("estimate", "loss", "joint", "marginal")  # per-step record
    context_columns: ClassVar[tuple[str, ...]] = ()  # host-side columns between ``step`` and ``columns``
    finite_columns: ClassVar[tuple[str, ...] | None] = None  # a non-finite value here = divergence (None: all)
    # the columns holding an estimate of the run's bound: each must stay in the bound's valid range, and the
    # ``loss`` within trainer.diverge_loss (mibench.engine.divergence), measured against :meth:`true_mi_of` and
    # :meth:`candidates`; () checks only non-finite values
    estimate_columns: ClassVar[tuple[str, ...]] = ("estimate",)
    steps_file: ClassVar[str | None] = "steps.csv"
    int_columns: ClassVar[tuple[str, ...]] = ()  # record columns written as integers (besides ``step``)
    shown_columns: tuple[str, ...] = ()  # ``Step.shown``: per-step values for the progress bar, never recorded
    cpu_threads: ClassVar[int | None] = None  # intra-op threads on a CPU while training (None: torch's setting)
    # what a segment is called where a run's progress is shown (the heartbeat, ``mibench status``): level, epoch
    segment_unit: ClassVar[str | None] = None

    def __init__(self, cfg: DictConfig, out_dir: Path | None, ctx: RunContext):
        super().__init__(cfg, out_dir, ctx)
        self.nets = nn.ModuleDict()  # trained by the main optimizer
        self.estimators = nn.ModuleList()  # their own parameters (eta, a(y), q(y)) join the main optimizer
        self.estimator: nn.Module | None = None  # what the default step (and a vectorised group) calls on the scores
        self.adversary: nn.Module | None = None  # trained by a second optimizer on Step.adversary

    @property
    def block(self) -> int:
        """Steps between host syncs (records copied, divergence checked, ``on_block`` called)."""
        return 100

    def segments(self, start: int) -> Iterator[Iterable[Any]]:
        """Batches, grouped in segments (a level, an epoch; checkpoints fall between them), from ``start``."""
        return iter(())

    def step(self, batch: Any) -> Step:
        """One training step's loss and record. Default: the estimator on :meth:`score`, recorded by :meth:`values`."""
        s = self.score(batch)
        est = self.estimator(s.scores, s.joint, s.marginal, y=s.y)
        return Step(est.loss, self.values(est, s))

    def score(self, batch: Any) -> Scores:
        """The batch's score matrix and masks from ``self.nets`` (a pure function of the nets and the batch)."""
        raise NotImplementedError

    def values(self, est: Any, s: Scores) -> list[Tensor]:
        """The step's record (``columns``) from the estimate and the scores."""
        return [est.mi, est.loss, est.joint, est.marginal]

    def optim(self) -> Optim:
        """The optimizer of the trained networks: Adam (or ``benchmark.optimizer``) at ``benchmark.lr``."""
        b = self.cfg.benchmark
        return Optim(b.get("optimizer", "adam"), float(b.lr), float(b.get("weight_decay", 0.0)),
                     float(b.get("momentum", 0.0)))

    def total_steps(self) -> int | None:
        """Planned steps (for the progress bar), if known."""
        return None

    def segment_count(self) -> int | None:
        """Planned segments when the task names them (``segment_unit``); default: ``benchmark.epochs`` for a
        task whose segments are epochs."""
        b = self.cfg.get("benchmark") or {}
        return int(b.epochs) if self.segment_unit == "epoch" and b.get("epochs") is not None else None

    def data_bytes(self) -> int:
        """Device bytes of the data the task holds while training (sizes groups of vectorised runs)."""
        return 0

    def no_work_hint(self) -> str:
        """What to change when a run did no step (its ``NoWorkError``)."""
        return "check the data size against the batch size"

    def context(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Host-side columns of steps [lo, hi) (e.g. the staircase's level and true MI)."""
        return {}

    def true_mi_of(self, rows: np.ndarray) -> np.ndarray | float | None:
        """The true MI of each host row (``step``, context columns, ``columns``), or one for all, or a ceiling of it
        (e.g. log C for a C-class label); None: unknown. Default: the ``true_mi`` context column, when the task has
        one."""
        if "true_mi" not in self.context_columns:
            return None
        return rows[:, 1 + self.context_columns.index("true_mi")]

    def candidates(self) -> int | None:
        """K, the most candidates in a row of the score matrix (InfoNCE's estimate is at most log K); None: not
        fixed."""
        return None

    def on_block(self, lo: int, hi: int, rows: np.ndarray) -> bool:
        """After each block: return True when the run diverged here (e.g. a non-finite test estimate)."""
        return False

    def progress(self, lo: int, hi: int, rows: np.ndarray, shown: np.ndarray | None = None) -> dict[str, Any]:
        """The fields of the progress bar and of the job log's progress and end lines for the steps [lo, hi)
        (``rows``: their records, ``step``, the context columns, then ``columns``; ``shown``: their
        ``shown_columns``, or None), e.g. ``{"level": "3/5", "true MI": 6.0}``. [lo, hi) is a block, or the
        block so far (the bar between block ends); called on host rows the engine already copied, never per
        step, and only when a bar, a progress line or a segment end (the end line) asks. Default: the mean
        estimate of the rows when the task records an ``estimate`` column."""
        if "estimate" not in self.columns or not len(rows):
            return {}
        col = rows[:, 1 + len(self.context_columns) + self.columns.index("estimate")]
        col = col[np.isfinite(col)]
        return {"est": float(col.mean())} if len(col) else {"est": "nan"}

    def done(self) -> bool:
        """After each block (once ``on_block`` has run): True ends training cleanly here (early stopping)."""
        return False

    def end_segment(self, index: int, rows: np.ndarray, wall: float) -> dict[str, float]:
        """After each segment (rows: its steps' records); return metrics to log (e.g. ``level/mse``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Non-tensor state a resumed run needs (e.g. epoch history); networks are saved by the engine."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a resumed run)."""

    # ------------------------------------------------------------------ helpers for subclasses
    def build_estimator(self, dim_y: int | None, **overrides: Any) -> nn.Module:
        """The configured estimator (``overrides`` on its keys), its parameters on the main optimizer's groups."""
        est = build_estimator({**OmegaConf.to_container(self.cfg.estimator, resolve=True), **overrides}, dim_y=dim_y)
        self.estimators.append(est)
        return est

    def build_critic(self, dim_x: int, dim_y: int) -> nn.Module:
        """The configured critic for x of ``dim_x`` and y of ``dim_y`` dimensions."""
        return build_critic(OmegaConf.to_container(self.cfg.critic, resolve=True), dim_x, dim_y)

    def record_columns(self) -> list[str]:
        """The columns of a host row: ``step``, ``context_columns``, then ``columns``."""
        return ["step", *self.context_columns, *self.columns]


def data_error(e: Exception) -> ConfigError:
    """A data loader's one-line error as a ConfigError (exit 2 before training)."""
    return ConfigError(str(e).splitlines()[0])


class Analysis(Benchmark):
    """A benchmark that trains nothing (the optimal critic's bounds, the structured sandwich, gradient accuracy):
    ``setup()``, ``evaluate()`` (its tables) and ``finish(result)``, run without the training loop; no estimator
    or critic of the config groups unless its capabilities say so."""

    caps = Capabilities(trains=False, uses_estimator=False, uses_critic=False, trains_critic=False)


__all__ = ["TASKS", "Analysis", "Benchmark", "Capabilities", "Task", "Scores", "Step", "Optim", "register",
           "data_error"]

