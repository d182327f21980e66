"""Many runs of a sweep trained as one batched model (``hydra/launcher=vectorized``).

Runs that share the benchmark, critic architecture and data shapes (:func:`mibench.engine.plan.group_key`)
form a group; :class:`GroupStepper` is its step, driven by the loop every run shares
(:class:`mibench.engine.driver.Driver`: records, divergence, checkpoints, stop signals, resume).
Each run keeps everything of its own: its task (data stream, seed, records, outputs), its networks'
initial values (each run's task is set up from its own seed, exactly as alone), its estimator and
state (MINE's EMA, eta, a learned baseline), its learning rates and optimizer state. Only the
arithmetic is shared:

* every parameter and buffer of the runs' networks is stacked into one tensor ``[runs, ...]``; each
  run's modules keep *views* into it, so checkpoints, ``on_block`` / ``evaluate`` / ``finish`` hooks and
  resume see the run's current values without a copy;
* the task's :meth:`Task.score` runs once per step for the whole group under ``torch.func.vmap``
  (batched matmuls instead of one small matmul per run), the estimator once per set of runs with the
  same estimator config (also vmapped, with its stacked state);
* one backward of the summed losses (each run's gradient depends on its own loss only) and one
  optimizer update with the formulas of ``torch.optim.Adam`` / ``SGD`` on the stacked tensors, each
  run on its own learning rate.

A run whose record turns non-finite is recorded as diverged at the end of that block, exactly as when
alone, and leaves the group (so does a run whose task is ``done``: early stopping): its update is masked out
from then on (its values stay frozen), the other runs go on untouched. Checkpoints are the single-run format,
one per run directory, so a killed group resumes (grouped or alone) to the same numbers. What the batched step
cannot do (:func:`refusal`: a learning-rate schedule, an adversary, progress-bar values, frozen parameters,
estimator parameter groups with options besides a learning rate) keeps a run out of any group.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.adam import adam as adam_update  # the functional update behind Adam(fused=True)
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .backend import Backend
from .logging import Progress, log_every_s
from .loop import Engine
from .task import Optim, Scores, Task
from ..precision import full


class GroupRefused(ValueError):
    """A run with something the group stepper cannot do (:func:`refusal`) was put in a group."""


def refusal(task: Task) -> str | None:
    """What of ``task``'s run the group stepper cannot do, in words (None: nothing). Asked of a bare task when
    the launcher forms groups (:func:`mibench.engine.plan.why_alone`), of a set-up one when a group is planned
    (:func:`mibench.engine.plan.plan_groups`: the runs then train alone, and the log says why), and of every
    member before a group trains (:class:`GroupStepper` raises :class:`GroupRefused`): nothing is left out
    silently."""
    if not task.capabilities(task.cfg).vectorized:
        return per_process(task.cfg)
    opt = task.optim()
    if opt.milestones:
        return (f"a learning-rate schedule (MultiStepLR at segments {list(opt.milestones)}): the stacked optimizer "
                f"keeps each run's rate")
    if task.adversary is not None or opt.adversary_lr is not None:
        return "an adversary (a second optimizer): the batched step updates the main networks only"
    if task.shown_columns:
        return (f"progress-bar values ({', '.join(task.shown_columns)}, Step.shown): the batched step computes the "
                f"record only")
    frozen = [name for name, p in task.nets.named_parameters() if not p.requires_grad]
    if frozen:
        return f"frozen parameters ({', '.join(frozen)}): the stacked optimizer would train them"
    options = {k for est in task.estimators for g in est.param_groups(opt.lr) for k in g} - {"params", "lr"}
    if options:
        return (f"estimator parameter groups with {', '.join(sorted(options))}: the stacked optimizer takes a "
                f"learning rate per group only")
    return None


def per_process(cfg: Any) -> str:
    """The refusal of a benchmark whose capabilities for ``cfg`` say it is not ``vectorized``."""
    return f"benchmark={cfg.benchmark.name} trains one run per process"


def estimator_key(cfg: Any) -> str:
    """A run's estimator config as a key: runs with equal keys share one vmapped estimator call."""
    return json.dumps(OmegaConf.to_container(cfg.estimator, resolve=True), sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------- stacking
class Stacked:
    """The parameters and buffers of several modules of one architecture as ``[n, ...]`` tensors.

    Each module's parameters become views into the stacked tensors (``requires_grad`` views that take
    no part in the group's graph): in-place updates of the stack show in every module.
    """

    def __init__(self, modules: list[nn.Module]):
        self.template = modules[0]
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        for name, _ in self.template.named_parameters():
            t = torch.stack([m.get_parameter(name).detach() for m in modules])
            if t.dim() == 3:  # a Linear weight [out, in]: stored as [runs, in, out] in memory, the layout of the
                t = t.transpose(1, 2).contiguous().transpose(1, 2)  # gradient vmap's batched linear gives back
            self.params[name] = t.requires_grad_()
        for name, _ in self.template.named_buffers():
            self.buffers[name] = torch.stack([m.get_buffer(name) for m in modules])
        for r, m in enumerate(modules):  # (setattr replaces a registered parameter or buffer, keeping its kind)
            for name, t in self.params.items():
                setattr(*_owner(m, name), nn.Parameter(t.detach()[r], requires_grad=True))
            for name, t in self.buffers.items():
                setattr(*_owner(m, name), t[r])

    def index(self, module: nn.Module) -> dict[int, str]:
        """id(parameter of ``module``) -> its name in the stack."""
        return {id(p): n for n, p in module.named_parameters()}


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule that holds parameter or buffer ``name``, and its name there."""
    prefix, _, leaf = name.rpartition(".")
    return (module.get_submodule(prefix) if prefix else module), leaf


class _Scorer(nn.Module):
    """``task.score`` as a module call, so that ``functional_call`` can swap in the stacked networks."""

    def __init__(self, task: Task):
        super().__init__()
        self.nets = task.nets
        self.task = [task]  # not a submodule

    def forward(self, batch: Any) -> dict[str, Any]:
        s = self.task[0].score(batch)
        out = {"scores": s.scores, "joint": s.joint, "marginal": s.marginal, "y": s.y, "aux": s.aux}
        return {k: v for k, v in out.items() if v is not None}  # vmap returns tensors only


class _Estimating(nn.Module):
    """The estimator on one run's scores and the task's record of the step, as a module call."""

    def __init__(self, task: Task, estimator: nn.Module):
        super().__init__()
        self.est = estimator
        self.task = [task]

    def forward(self, s: dict[str, Any]) -> tuple[Tensor, Tensor]:
        sc = Scores(s["scores"], s.get("joint"), s.get("marginal"), s.get("y"), s["aux"])
        e = self.est(sc.scores, sc.joint, sc.marginal, y=sc.y)
        values = self.task[0].values(e, sc)
        return e.loss, torch.stack([full(v) for v in values])


# ---------------------------------------------------------------------------------------------- optimizer
@dataclass
class _Slot:
    """One stacked tensor the optimizer updates, with each row's learning rate and the run it belongs to."""

    param: Tensor
    lr: list[float]
    runs: list[int]  # group index of each row
    state: dict[str, Tensor] = field(default_factory=dict)


class StackedOptimizer:
    """``torch.optim.Adam`` / ``SGD`` (no nesterov, no dampening) applied row-wise to stacked tensors.

    Rows are updated in contiguous ranges that share a learning rate (the whole tensor when the runs
    share one): Adam through torch's functional fused update (``torch.optim.adam.adam(fused=True)``, what
    ``Adam(fused=True)`` calls: one pass over memory, 4x faster than the single-tensor update on stacked
    tensors, the same formula to rounding), SGD with the single-tensor update of ``torch.optim.SGD``. Rows of
    runs that left the group are not updated.
    """

    def __init__(self, slots: list[_Slot], opt: Optim):
        self.slots, self.opt, self.t = slots, opt, 0
        self.active: set[int] = {r for s in slots for r in s.runs}
        self.step_t: list[Tensor] = []  # Adam's step count, one per row range (the fused update adds 1 to each)
        self._plan()

    def _plan(self) -> None:
        """(lr -> [(slot, lo, hi)]): maximal row ranges with one rate, active runs only."""
        self.ranges: dict[float, list[tuple[_Slot, int, int]]] = {}
        for s in self.slots:
            i = 0
            while i < len(s.runs):
                if s.runs[i] not in self.active:
                    i += 1
                    continue
                j = i
                while j < len(s.runs) and s.runs[j] in self.active and s.lr[j] == s.lr[i]:
                    j += 1
                self.ranges.setdefault(s.lr[i], []).append((s, i, j))
                i = j

    def drop(self, run: int) -> None:
        self.active.discard(run)
        self._plan()

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for s in self.slots:
            if "exp_avg" not in s.state and self.opt.name == "adam":
                s.state["exp_avg"], s.state["exp_avg_sq"] = torch.zeros_like(s.param), torch.zeros_like(s.param)
        for lr, ranges in self.ranges.items():
            ranges = [r for r in ranges if r[0].param.grad is not None]
            if not ranges:
                continue
            if self.opt.name == "sgd":
                for s, lo, hi in ranges:
                    self._sgd(s, lo, hi, lr)
                continue
            while len(self.step_t) < len(ranges):
                self.step_t.append(torch.zeros((), device=ranges[0][0].param.device))
            steps = self.step_t[: len(ranges)]
            for st in steps:
                st.fill_(float(self.t - 1))  # (no host sync: a fill)
            rows = [tuple(_dense(t[lo:hi]) for t in (s.param, s.param.grad, s.state["exp_avg"], s.state["exp_avg_sq"]))
                    for s, lo, hi in ranges]
            p, g, m, v = (list(x) for x in zip(*rows))
            adam_update(p, g, m, v, [], steps, fused=True, amsgrad=False, beta1=0.9, beta2=0.999, lr=lr,
                        weight_decay=self.opt.weight_decay, eps=1e-8, maximize=False)

    def _sgd(self, s: _Slot, lo: int, hi: int, lr: float) -> None:
        p, grad, mom, wd = s.param[lo:hi], s.param.grad[lo:hi], self.opt.momentum, self.opt.weight_decay
        if wd != 0:
            grad = grad.add(p, alpha=wd)
        if mom != 0:  # (torch starts the buffer as a copy of the first gradient: 0 * mom + grad is that)
            buf = s.state.setdefault("momentum_buffer", torch.zeros_like(s.param))[lo:hi]
            grad = buf.mul_(mom).add_(grad)
        p.add_(grad, alpha=-lr)

    # the per-run torch optimizers hold the state in checkpoints (the single-run format)
    STATE_KEYS = {"adam": ("exp_avg", "exp_avg_sq"), "sgd": ("momentum_buffer",)}

    def export(self, owner: dict[int, tuple[int, int]], opt: torch.optim.Optimizer) -> None:
        """Write one run's rows of the state into its torch optimizer (``owner``: id(param) -> (slot, row))."""
        for group in opt.param_groups:
            for p in group["params"]:
                si, row = owner[id(p)]
                st = self.slots[si].state
                keys = [k for k in self.STATE_KEYS[self.opt.name] if k in st]
                if not keys:
                    continue
                opt.state[p] = {k: st[k][row].clone() for k in keys}
                if self.opt.name == "adam":
                    opt.state[p]["step"] = torch.tensor(float(self.t))

    def load(self, owner: dict[int, tuple[int, int]], opt: torch.optim.Optimizer) -> None:
        """Read one run's rows of the state from its torch optimizer (after a checkpoint was loaded)."""
        for group in opt.param_groups:
            for p in group["params"]:
                if p not in opt.state:
                    continue
                si, row = owner[id(p)]
                slot, st = self.slots[si], opt.state[p]
                for k in self.STATE_KEYS[self.opt.name]:
                    if k in st:
                        if k not in slot.state:
                            slot.state[k] = torch.zeros_like(slot.param)
                        slot.state[k][row].copy_(st[k])
                if "step" in st:
                    self.t = int(st["step"])


def _dense(t: Tensor) -> Tensor:
    """A contiguous view of an elementwise-updated tensor: a stacked Linear weight is stored transposed
    (:class:`Stacked`), and the fused kernel would otherwise copy it; Adam does not care about the order."""
    if t.is_contiguous() or t.dim() != 3 or not t.transpose(1, 2).is_contiguous():
        return t
    return t.transpose(1, 2)


# ---------------------------------------------------------------------------------------------- the group
def _in_dims(batch: Any) -> Any:
    """vmap's in_dims for a stacked batch: 0 for its tensors, None for its empty entries."""
    if isinstance(batch, (tuple, list)):
        return type(batch)(_in_dims(b) for b in batch)
    return None if batch is None else 0


def _stack_batches(batches: tuple[Any, ...]) -> Any:
    first = batches[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.stack(batches)
    return type(first)(_stack_batches(b) for b in zip(*batches))


class GroupStepper:
    """Several set-up runs of one group in one batched step (:class:`mibench.engine.driver.Stepper`; module
    docstring). ``engines``: each run's engine (records, checkpoints), reordered so that the runs of one
    estimator config are contiguous rows."""

    def __init__(self, engines: list[Engine], backend: Backend, progress: bool = False):
        for e in engines:
            why = refusal(e.task)
            if why is not None:
                raise GroupRefused(f"benchmark={e.task.cfg.benchmark.name} run {e.out_dir}: cannot train in a group: "
                                   f"{why}")
        self.runs = sorted(engines, key=lambda e: estimator_key(e.task.cfg))  # one estimator config: contiguous rows
        self.backend, self.device, self.R = backend, backend.device, len(self.runs)
        tasks = [e.task for e in self.runs]
        for t in tasks:
            nn.ModuleDict({"n": t.nets, "e": t.estimators}).to(backend.device)
        template = tasks[0]
        self.width = len(template.columns)
        self.nets = Stacked([t.nets for t in tasks])
        self.scorer = _Scorer(template)
        self.net_state = ({f"nets.{k}": v for k, v in self.nets.params.items()},
                          {f"nets.{k}": v for k, v in self.nets.buffers.items()})
        self.subgroups = self._subgroups(tasks)
        self.est_state = {(lo, hi): (_prefixed(st.params), _prefixed(st.buffers)) if st is not None else ({}, {})
                          for lo, hi, _, st in self.subgroups}
        self.progress = Progress(progress and backend.is_global_zero, template.total_steps(),
                                 f"{template.name} x{self.R}",  # (short: 80 columns keep the fields)
                                 log_every_s(template.cfg) if backend.is_global_zero else None)
        for e in self.runs:
            e.build_optimizers()  # per-run torch optimizers: parameter order and checkpoint format
        self.optimizer, self.owner = self._build_optimizer()

    def _subgroups(self, tasks: list[Task]) -> list[tuple[int, int, _Estimating, Stacked | None]]:
        """[lo, hi) rows with one estimator config, its module call and its stacked state (None: stateless)."""
        subgroups = []
        lo = 0
        while lo < self.R:
            key = estimator_key(tasks[lo].cfg)
            hi = lo
            while hi < self.R and estimator_key(tasks[hi].cfg) == key:
                hi += 1
            ests = [tasks[r].estimator for r in range(lo, hi)]
            has_state = any(True for _ in ests[0].parameters()) or any(True for _ in ests[0].buffers())
            stacked = Stacked(ests) if has_state else None
            subgroups.append((lo, hi, _Estimating(tasks[0], stacked.template if stacked else ests[0]), stacked))
            lo = hi
        return subgroups

    def _build_optimizer(self) -> tuple[StackedOptimizer, list[dict[int, tuple[int, int]]]]:
        """One slot per stacked tensor, each row on its run's learning rate for that parameter."""
        slots: list[_Slot] = []
        owner: list[dict[int, tuple[int, int]]] = [{} for _ in range(self.R)]
        lr = [float(e.task.optim().lr) for e in self.runs]
        for name, t in self.nets.params.items():
            slots.append(_Slot(t, list(lr), list(range(self.R))))
            for r, e in enumerate(self.runs):
                owner[r][id(e.task.nets.get_parameter(name))] = (len(slots) - 1, r)
        for lo, hi, _, st in self.subgroups:
            if st is None:
                continue
            rates = []
            for r in range(lo, hi):
                est = self.runs[r].task.estimator
                names = st.index(est)
                rates.append({names[id(p)]: float(g["lr"]) for g in est.param_groups(lr[r]) for p in g["params"]})
            for name, t in st.params.items():
                if name not in rates[0]:
                    continue  # not trained through the main optimizer (e.g. Algorithm 1's eta)
                slots.append(_Slot(t, [rates[i][name] for i in range(hi - lo)], list(range(lo, hi))))
                for i, r in enumerate(range(lo, hi)):
                    owner[r][id(self.runs[r].task.estimator.get_parameter(name))] = (len(slots) - 1, i)
        return StackedOptimizer(slots, self.runs[0].task.optim()), owner

    @property
    def trainable(self) -> list[Tensor]:
        return [s.param for s in self.optimizer.slots]

    # ------------------------------------------------------------------ one batched step
    def forward(self, batch: Any) -> tuple[Tensor, Tensor]:
        """Every run's loss [R] and record [R, columns] for one stacked batch."""
        scored = vmap(lambda p, b, x: functional_call(self.scorer, (p, b), (x,)),
                      in_dims=(0, 0, _in_dims(batch)))(*self.net_state, batch)
        losses, values = [], []
        for lo, hi, est, st in self.subgroups:
            part = scored if (lo, hi) == (0, self.R) else _rows(scored, lo, hi)
            p, b = self.est_state[(lo, hi)]
            loss, vals = vmap(lambda p_, b_, s_: functional_call(est, (p_, b_), (s_,)))(p, b, part)
            losses.append(loss)
            values.append(vals)
        if len(losses) == 1:
            return losses[0], values[0]
        return torch.cat(losses), torch.cat(values)

    def step(self, batches: tuple[Any, ...]) -> Tensor:
        """One batched step of every run on its batch: one backward of the summed losses (a run's gradient
        depends on its own loss only), one stacked update; the runs' values ``[runs, columns]``."""
        batch = _stack_batches(batches)
        with self.backend.autocast():
            loss, values = self.forward(batch)
        for p in self.trainable:
            p.grad = None
        loss.sum().backward()
        self.optimizer.step()
        return values.detach()

    def resumed(self, r: int) -> None:
        """Run ``r``'s optimizer state, loaded from its checkpoint into its torch optimizer, into the stack."""
        self.optimizer.load(self.owner[r], self.runs[r].optimizers[0])

    def leave(self, r: int) -> None:
        """Run ``r``'s rows are no longer updated (its values stay frozen)."""
        self.optimizer.drop(r)

    def export(self, r: int) -> None:
        """Run ``r``'s rows of the stacked state into its torch optimizer, which its checkpoint saves."""
        self.optimizer.export(self.owner[r], self.runs[r].optimizers[0])

    def fields(self, fields: list[dict[str, Any]], live: int) -> dict[str, Any]:
        """The group's bar (:func:`group_fields`)."""
        return group_fields(fields, live)


def group_fields(fields: list[dict[str, Any]], active: int) -> dict[str, Any]:
    """A group's bar: each field its runs share once (level 3/5), a float that differs as its range over
    the runs (est 4.91..5.73), and the number of runs still training."""
    out: dict[str, Any] = {}
    for k in dict.fromkeys(k for f in fields for k in f):
        vals = [f[k] for f in fields if k in f]
        if all(v == vals[0] for v in vals):
            out[k] = vals[0]
        elif all(isinstance(v, float) for v in vals):
            out[k] = f"{min(vals):.3f}..{max(vals):.3f}"
    out["runs"] = active
    return out


def _prefixed(d: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"est.{k}": v for k, v in d.items()}


def _rows(tree: Any, lo: int, hi: int) -> Any:
    if isinstance(tree, Tensor):
        return tree[lo:hi]
    if isinstance(tree, dict):
        return {k: _rows(v, lo, hi) for k, v in tree.items()}
    return tree


__all__ = ["GroupRefused", "GroupStepper", "Stacked", "StackedOptimizer", "estimator_key", "group_fields", "per_process",
           "refusal"]
