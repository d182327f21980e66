"""Many runs of a sweep trained as one batched model (``hydra/launcher=vectorized``).

Runs that share the benchmark, critic architecture and data shapes (:func:`group_key`) form a group.
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
alone, and leaves the group (so does a run whose task is ``done``: early stopping): its update is masked out from then on (its values stay frozen), the
other runs go on untouched. Checkpoints are the single-run format, one per run directory, so a
killed group resumes (grouped or alone) to the same numbers.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.adam import adam as adam_update  # the functional update behind Adam(fused=True)
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn
from torch.func import functional_call, vmap

from .. import cluster
from .backend import Backend, needs_fabric
from .logging import Logger, Progress, log_every_s
from .interrupt import Interrupts
from .loop import Engine, Resume, fault_injection, log_interruption
from .task import TASKS, Optim, Scores, Task
from ..precision import full
from ..records import HEARTBEAT_S

# config keys that may differ between the runs of a group (everything else must be equal)
PER_RUN_KEYS = ("seed", "estimator", "lambda", "c_star", "per_estimator", "benchmark.lr", "out_dir",
                "resume", "overwrite", "runs_root", "logger")


def group_key(cfg: DictConfig) -> str | None:
    """Runs with equal keys can train together; None: this config trains alone (and why is in
    :func:`why_alone`)."""
    if why_alone(cfg) is not None:
        return None
    c = cfg.copy()
    with open_dict(c):
        for key in PER_RUN_KEYS:  # blanked before resolving: out_dir needs Hydra's runtime, estimator ${lambda}
            OmegaConf.update(c, key, None, force_add=True)
    return json.dumps(OmegaConf.to_container(c, resolve=True), sort_keys=True, default=str)


def why_alone(cfg: DictConfig) -> str | None:
    """Why runs of this config cannot share a batched step (None: they can)."""
    task = TASKS.get(cfg.benchmark.name)
    if task is None or not task.vectorized_for(cfg):
        return f"benchmark={cfg.benchmark.name} trains one run per process"
    if needs_fabric(cfg.hardware):
        return "DDP / several devices / fp16 (Lightning Fabric) runs train alone"
    if cfg.logger.name == "wandb":
        return "logger=wandb runs train alone"
    return None


def estimator_key(cfg: DictConfig) -> str:
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
        for r, m in enumerate(modules):
            for name, t in self.params.items():
                owner, leaf = _owner(m, name)
                owner._parameters[leaf] = nn.Parameter(t.detach()[r], requires_grad=True)
            for name, t in self.buffers.items():
                owner, leaf = _owner(m, name)
                owner._buffers[leaf] = t[r]

    def index(self, module: nn.Module) -> dict[int, str]:
        """id(parameter of ``module``) -> its name in the stack."""
        return {id(p): n for n, p in module.named_parameters()}


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
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


@dataclass
class Member:
    """One run of a group: its task, its engine (records, checkpoints) and where it stands."""

    task: Task
    engine: Engine
    logger: Logger
    resume: Path | None = None  # its checkpoint, when it continues an interrupted run
    active: bool = True
    seg_first: int = 0


class GroupEngine:
    """Trains several set-up tasks of one group in one batched step (module docstring)."""

    def __init__(self, members: list[Member], backend: Backend, progress: bool = False):
        members = sorted(members, key=lambda m: estimator_key(m.task.cfg))  # one estimator config: contiguous rows
        self.members, self.backend = members, backend
        self.R = len(members)
        tasks = [m.task for m in members]
        for t in tasks:
            nn.ModuleDict({"n": t.nets, "e": t.estimators}).to(backend.device)
        template = tasks[0]
        self.nets = Stacked([t.nets for t in tasks])
        self.scorer = _Scorer(template)
        self.net_state = ({f"nets.{k}": v for k, v in self.nets.params.items()},
                          {f"nets.{k}": v for k, v in self.nets.buffers.items()})
        # estimator subgroups: [lo, hi) rows with one estimator config
        self.subgroups: list[tuple[int, int, _Estimating, Stacked | None]] = []
        lo = 0
        while lo < self.R:
            key = estimator_key(tasks[lo].cfg)
            hi = lo
            while hi < self.R and estimator_key(tasks[hi].cfg) == key:
                hi += 1
            ests = [tasks[r].estimator for r in range(lo, hi)]
            has_state = any(True for _ in ests[0].parameters()) or any(True for _ in ests[0].buffers())
            stacked = Stacked(ests) if has_state else None
            self.subgroups.append((lo, hi, _Estimating(template, stacked.template if stacked else ests[0]), stacked))
            lo = hi
        self.est_state = {(lo, hi): (_prefixed(st.params), _prefixed(st.buffers)) if st is not None else ({}, {})
                          for lo, hi, _, st in self.subgroups}
        self.progress = Progress(progress and backend.is_global_zero, template.total_steps(),
                                 f"{template.name} x{self.R}",  # (short: 80 columns keep the fields)
                                 log_every_s(template.cfg) if backend.is_global_zero else None)
        for m in members:
            m.engine.build_optimizers()  # per-run torch optimizers: parameter order and checkpoint format
        self.optimizer, self.owner = self._build_optimizer()

    def _build_optimizer(self) -> tuple[StackedOptimizer, list[dict[int, tuple[int, int]]]]:
        """One slot per stacked tensor, each row on its run's learning rate for that parameter."""
        slots: list[_Slot] = []
        owner: list[dict[int, tuple[int, int]]] = [{} for _ in range(self.R)]
        lr = [float(m.task.optim().lr) for m in self.members]
        for name, t in self.nets.params.items():
            slots.append(_Slot(t, list(lr), list(range(self.R))))
            for r, m in enumerate(self.members):
                owner[r][id(m.task.nets.get_parameter(name))] = (len(slots) - 1, r)
        for lo, hi, _, st in self.subgroups:
            if st is None:
                continue
            rates = []
            for r in range(lo, hi):
                est = self.members[r].task.estimator
                names = st.index(est)
                rates.append({names[id(p)]: float(g["lr"]) for g in est.param_groups(lr[r]) for p in g["params"]})
            for name, t in st.params.items():
                if name not in rates[0]:
                    continue  # not trained through the main optimizer (e.g. Algorithm 1's eta)
                slots.append(_Slot(t, [rates[i][name] for i in range(hi - lo)], list(range(lo, hi))))
                for i, r in enumerate(range(lo, hi)):
                    owner[r][id(self.members[r].task.estimator.get_parameter(name))] = (len(slots) - 1, i)
        return StackedOptimizer(slots, self.members[0].task.optim()), owner

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

    # ------------------------------------------------------------------ the loop
    def train(self) -> None:
        members, be = self.members, self.backend
        ats = [m.engine.begin(m.resume) for m in members]
        for r, m in enumerate(members):
            if m.resume is not None:
                self.optimizer.load(self.owner[r], m.engine.optimizers[0])
        starts = {(m.engine.fit.t, at.offset) for m, at in zip(members, ats)}
        if len(starts) != 1:
            raise ValueError(f"a group's runs must start at the same step (got {sorted(starts)})")
        for m in members:
            m.engine.modules().train()
        t = members[0].engine.fit.t
        self.progress.resume_at(t)
        segment0 = members[0].engine.fit.segment
        block = max(1, members[0].task.block)
        width = len(members[0].task.columns)
        buf = torch.zeros(block, self.R, width, device=be.device)
        for r, at in enumerate(ats):
            if len(at.pending):
                buf[: len(at.pending), r] = at.pending.to(be.device)
        lo = t - len(ats[0].pending)
        engines = [m.engine for m in members]
        every = min((e.checkpoint_every_s for e in engines if e.checkpoint and e.checkpoint_every_s), default=None)
        checkpoints = any(e.checkpoint for e in engines)
        beats, next_beat = any(e.on_beat is not None for e in engines), 0.0
        streams = [m.task.segments(segment0) for m in members]
        with Interrupts(every if checkpoints else None, lead_s=cluster.signal_lead_s(),
                        install=None if checkpoints else False) as stop:
            for seg_index, segments in enumerate(zip(*streams), start=segment0):
                t0 = time.perf_counter()
                offset = ats[0].offset
                its = [iter(s) for s in segments]
                for r, m in enumerate(members):
                    m.seg_first = ats[r].seg_first if offset else len(m.engine.fit.rows)
                    m.engine.seg_start = t - offset
                    for _ in itertools.islice(its[r], offset):  # resumed inside this segment: skip what was trained
                        pass
                if offset:
                    ats[0].restore_rng()
                    ats = [Resume()] * len(members)
                for batches in zip(*its):
                    batch = _stack_batches(batches)
                    with be.autocast():
                        loss, values = self.forward(batch)
                    for p in self.trainable:
                        p.grad = None
                    loss.sum().backward()
                    self.optimizer.step()
                    buf[t - lo] = values.detach()
                    t += 1
                    if t - lo == block:
                        self._flush(buf, lo, t, seg_index, t0)
                        lo = t
                        if not any(m.active for m in members):
                            break
                    elif self.progress.due():  # between block ends: the rows so far (at most every TICK_S)
                        self.peek(buf[: t - lo], lo, t)
                    if beats and time.monotonic() >= next_beat:  # every run's heartbeat (no device sync)
                        next_beat = time.monotonic() + HEARTBEAT_S
                        for m in members:
                            if m.active:
                                m.engine.beat(t, m.engine.fit.segment + 1)
                    if checkpoints and stop.due(t):  # mid-segment: the wall clock, or the cluster stops the job
                        self.interrupt(stop, buf[: t - lo], t)
                if t > lo:
                    self._flush(buf, lo, t, seg_index, t0)
                    lo = t
                for m in members:
                    if m.active:
                        m.engine.end_segment(seg_index, m.seg_first, t0)
                if not any(m.active for m in members):
                    break
                self.checkpoint(seg_index + 1)
                stop.saved()
            if checkpoints and stop.signum is not None and any(m.active for m in members):  # after the last step
                self.interrupt(stop, buf[:0], t)
            self.progress.close()
        for m in members:
            m.engine.modules().eval()

    def interrupt(self, stop: Interrupts, pending: Tensor, t: int) -> None:
        """Every active run's mid-segment checkpoint (as :meth:`Engine.interrupt`, with its own pending rows)."""
        event = stop.event(t) if stop.signum is not None else None
        for r, m in enumerate(self.members):
            if m.active and m.engine.checkpoint:
                m.engine.fit.t = t
                if event is not None:
                    m.engine.fit.interruptions.append(event)
                self.optimizer.export(self.owner[r], m.engine.optimizers[0])
                m.engine.save_checkpoint(pending[:, r])
        stop.saved()
        if event is not None:
            for m in self.members:
                if m.active and m.engine.on_interrupt is not None:
                    m.engine.on_interrupt(list(m.engine.fit.interruptions))
            self.progress.close()
            log_interruption(event, self.progress, "in each run's directory")
            stop.forward()

    def _flush(self, buf: Tensor, lo: int, hi: int, seg_index: int, t0: float) -> None:
        """One host copy for the group's block; each active run records its rows (and may leave the group)."""
        rec = buf[: hi - lo].cpu().numpy().astype(np.float64)
        fields: list[dict[str, Any]] = []
        wanted = self.progress.wanted()
        for r, m in enumerate(self.members):
            if not m.active:
                continue
            m.engine.fit.t = hi
            m.engine.record(rec[:, r, :], lo, hi)
            if wanted:  # this run's fields from the rows it just recorded
                fields.append(m.engine.block_fields())
            if m.engine.fit.stopped:  # diverged or done (early stopping): end its segment as alone, freeze it
                m.active = False
                self.optimizer.drop(r)
                m.engine.end_segment(seg_index, m.seg_first, t0)
        if wanted:
            self.progress.show(hi, group_fields(fields, sum(m.active for m in self.members)))

    def peek(self, pending: Tensor, lo: int, t: int) -> None:
        """The group's bar and progress line between block ends, from the rows of the block so far (one copy,
        when :meth:`Progress.due`: never per step)."""
        host = pending.cpu().numpy().astype(np.float64)
        active = [(r, m) for r, m in enumerate(self.members) if m.active]
        fields = [m.engine.fields(lo, t, m.engine.rows(host[:, r, :], lo, t)) for r, m in active]
        self.progress.show(t, group_fields(fields, len(active)))

    def checkpoint(self, segment: int) -> None:
        for r, m in enumerate(self.members):
            if m.active and m.engine.checkpoint:
                self.optimizer.export(self.owner[r], m.engine.optimizers[0])
                m.engine.save_checkpoint()
        fault_injection(segment)


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


# ---------------------------------------------------------------------------------------------- memory
def run_bytes(task: Task, batch: Any) -> int:
    """Device bytes one run adds to a group: parameters x 4 (value, gradient, two optimizer moments), the
    activations its step saves for backward (x 2: temporaries) and its data (``Task.data_bytes``)."""
    saved = [0]

    def pack(t: Tensor) -> Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    params = sum(p.numel() * p.element_size() for mod in (task.nets, task.estimators) for p in mod.parameters())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        task.step(batch)
    return 4 * params + 2 * saved[0] + task.data_bytes()


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def split_sizes(n: int, per_run: int, budget: int, cap: int | None = None) -> list[int]:
    """Sizes of the groups ``n`` runs are cut into so that each fits ``budget`` bytes (and ``cap`` runs)."""
    most = max(1, budget // max(1, per_run))
    if cap:
        most = min(most, int(cap))
    k = math.ceil(n / most)
    base, extra = divmod(n, k)
    return [base + (i < extra) for i in range(k)]


def start_step(resume: Path | None) -> int:
    if resume is None:
        return 0
    return int(torch.load(resume, map_location="cpu", weights_only=False)["t"])


def probe_bytes(cfg: DictConfig) -> tuple[int, torch.device]:
    """:func:`run_bytes` of one run of ``cfg``, measured on a throw-away task (one step, no update)."""
    from .backend import make_backend

    backend = make_backend(cfg.hardware)
    task = TASKS[cfg.benchmark.name](cfg, None, backend.device)
    task.backend = backend
    task.setup()
    nn.ModuleDict({"n": task.nets, "e": task.estimators}).to(backend.device)
    batch = next(iter(next(iter(task.segments(0)))))
    return run_bytes(task, batch), backend.device


def plan_groups(runs: list[tuple[DictConfig, Path | None]], max_group_size: int | None = None,
                memory_fraction: float = 0.5) -> list[list[int]]:
    """Indices of ``runs`` (configs of one :func:`group_key`, each with its checkpoint or None) per group:
    runs that start at the same step, at most as many as fit ``memory_fraction`` of the device's free
    memory (:func:`run_bytes`) and ``max_group_size``."""
    by_start: dict[int, list[int]] = {}
    for i, (_, resume) in enumerate(runs):
        by_start.setdefault(start_step(resume), []).append(i)
    plan: list[list[int]] = []
    for idx in by_start.values():
        per_run, device = probe_bytes(runs[idx[0]][0])
        sizes = split_sizes(len(idx), per_run, int(memory_fraction * free_bytes(device)), max_group_size)
        lo = 0
        for n in sizes:
            plan.append(idx[lo:lo + n])
            lo += n
    return plan


__all__ = ["GroupEngine", "Member", "PER_RUN_KEYS", "Stacked", "StackedOptimizer", "free_bytes", "group_key",
           "plan_groups", "run_bytes", "split_sizes", "why_alone"]
