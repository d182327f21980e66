"""Run records: one ``result.json`` per run directory, its identity and outcome, written atomically.

A record's ``status`` is ``running`` from the moment the run starts, then ``completed``,
``diverged`` (a result: the bound went non-finite) or ``crashed`` (an exception, with its message).
A run killed from outside stays ``running`` with a ``pid`` and ``host``, which is how
aggregation and ``resume=true`` recognise it. The identity includes a hash of the resolved
config without the keys that cannot change a result (where it writes, logging, progress bars),
so identical configs are found again: re-running one is skipped unless ``overwrite=true``.

Schema 2 (``schema_version``; a record without one is version 1) adds what tables need to tell
configurations apart and to trust a pooled mean: ``variant_hash`` (the config hash without the
seed: seeds of one configuration share it, any other difference separates them), ``config`` (the
hashed config flattened to dotted keys, to name what differs between variants), ``versions``
(mibench, torch, Python, device) and ``conventions``; ``machine`` (:func:`machine`) is the compute environment
(CPU kernels, BLAS, threads, device), absent from records written before it. Version-1 records get
``variant_hash`` and ``config`` derived from the run's ``config.yaml`` when read (:func:`upgrade`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

from . import cluster
from .results import atomic_write_text, first_line

RECORD = "result.json"
CHECKPOINT = "checkpoint.pt"  # a resumable run's state (mibench.engine.loop writes it at segment ends)
CONFIG = "config.yaml"
SCHEMA_VERSION = 2
# keys that do not change a run's numbers: left out of the config hash
_NOT_HASHED = ("out_dir", "runs_root", "overwrite", "resume", "logger", "hydra")
_NOT_HASHED_TRAINER = ("enable_progress_bar", "progress_refresh_rate", "enable_model_summary", "checkpoint_every_min",
                       "log_every_min")
# also left out of the variant hash: the seed, the command-line spellings of estimator.lam and
# estimator.c_star (validate() folds them in, or ignores them for an unregularized estimator), and a
# preset's per_estimator table (validate() folds the running estimator's entry into estimator.*)
NOT_VARIANT = ("seed", "lambda", "c_star", "per_estimator")


# Options added after schema 1 whose default reproduces what schema-1 runs did: left out of the hashes
# when they hold that default, so a run written before they existed is still the same configuration
# (skip, resume and leaderboard pooling keep working across the upgrade).
ADDED_DEFAULTS: dict[tuple[str, str], Any] = {
    ("estimator", "clip_joint"): False, ("estimator", "reg_term"): "log_partition", ("estimator", "value"): "nwj",
    ("benchmark", "normalise"): "dataset", ("benchmark", "eval_bn"): "running", ("benchmark", "features"): "head",
    ("benchmark", "eta_schedule"): "joint", ("benchmark", "critic_steps"): 1, ("benchmark", "marginals"): "pairs",
    ("trainer", "diverge_above"): 10.0, ("trainer", "diverge_loss"): 1e6,
}


# keys that earlier versions wrote and that never changed a number: left out of the hashes, and a record hashed
# with one gets its hashes again from its config.yaml when read (:func:`upgrade`), so it still matches the same
# configuration run today (benchmark.datasets: the benchmark's dataset allow-list, now the registry's kinds)
REMOVED_KEYS = (("benchmark", "datasets"),)


def hashed_config(cfg: DictConfig | dict) -> dict[str, Any]:
    """The resolved config as plain data, without the keys that cannot change a result (nor options added
    later that hold the default which reproduces the older runs, see ADDED_DEFAULTS)."""
    if isinstance(cfg, DictConfig):
        c = OmegaConf.to_container(cfg, resolve=True)
    else:
        c = json.loads(json.dumps(cfg, default=str))  # a deep copy
    for k in _NOT_HASHED:
        c.pop(k, None)
    for k in _NOT_HASHED_TRAINER:
        (c.get("trainer") or {}).pop(k, None)
    for (group, key), default in ADDED_DEFAULTS.items():
        node = c.get(group)
        if isinstance(node, dict) and key in node and node[key] == default:
            node.pop(key)
    for group, key in REMOVED_KEYS:
        node = c.get(group)
        if isinstance(node, dict):
            node.pop(key, None)
    return c


def _hash(c: dict[str, Any]) -> str:
    blob = json.dumps(c, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_hash(cfg: DictConfig | dict) -> str:
    """sha256 (first 16 hex digits) of the resolved config, without output/logging-only keys."""
    return _hash(hashed_config(cfg))


def variant_hash(cfg: DictConfig | dict) -> str:
    """:func:`config_hash` without the seed (and ``lambda`` / ``c_star``, see NOT_VARIANT): one per configuration."""
    c = hashed_config(cfg)
    for k in NOT_VARIANT:
        c.pop(k, None)
    return _hash(c)


def flat_config(cfg: DictConfig | dict) -> dict[str, Any]:
    """The hashed config flattened to dotted keys (``estimator.clip``); lists stay values."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(hashed_config(cfg), "")
    return out


REG_TERM_NAMES = {"softplus": "softplus_marginal", "bound": "own_partition"}


def conventions(cfg: DictConfig) -> dict[str, Any]:
    """The authors'-code conventions a run follows where they differ from mibench's defaults (issue 11), e.g.
    ``{"rejs_reg": "softplus_marginal", "clip": "both"}``; ``{}`` for a run on the defaults (the paper's
    conventions), so that records of either kind are told apart and older records stay comparable."""
    est = cfg.get("estimator") or {}
    name = est.get("name")
    out: dict[str, Any] = {}
    term = est.get("reg_term")
    if term is not None and term != "log_partition":
        out[f"{name}_reg"] = REG_TERM_NAMES.get(term, term)
    if name == "renwj" and est.get("distance") == "euclidean":  # (log E_Q e^T)^2, not eq. 15's e^(T-1)
        out["renwj_reg"] = "log_mean_exp"
    if est.get("clip_joint") and est.get("clip") is not None:
        out["clip"] = "both"
    if est.get("value") not in (None, "nwj"):
        out["js_value"] = est.get("value")
    if name in ("tuba", "retuba") and est.get("baseline") == "learned" or name == "alpha" and (
            est.get("baseline") != "learned" or est.get("baseline_hidden", 256) != 256):
        out["baseline"] = (f"learned_{est.get('baseline_layers', 2)}x{est.get('baseline_hidden', 256)}"
                           if est.get("baseline") == "learned" else "constant")
    for key in BENCHMARK_CONVENTIONS:
        value = (cfg.get("benchmark") or {}).get(key)
        if value is not None and value != BENCHMARK_CONVENTIONS[key]:
            out[key] = value
    return out


# benchmark options of the authors' conventions and their defaults (docs/benchmarks/slb_clb.md, eta_gaussian.md)
BENCHMARK_CONVENTIONS: dict[str, Any] = {"normalise": "dataset", "eval_bn": "running", "features": "head",
                                         "eta_schedule": "joint", "critic_steps": 1, "marginals": "pairs"}


def versions(cfg: DictConfig) -> dict[str, str]:
    """mibench, torch and Python versions, and the device the run computes on."""
    import torch

    from . import __version__

    return {"mibench": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "device": device_name(cfg)}


def device_name(cfg: DictConfig) -> str:
    """The CUDA device's name when the run is on CUDA, else the CPU model."""
    return cuda_name(cfg) or cpu_name()


def cuda_name(cfg: DictConfig) -> str | None:
    """The CUDA device's name when the run is on CUDA, else None."""
    import torch

    accelerator = str(cfg.hardware.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        rank = int(os.environ.get("LOCAL_RANK", 0))  # a DDP rank's own GPU, when this process sees it
        return torch.cuda.get_device_name(rank if rank < torch.cuda.device_count() else 0)
    return None


def cpu_name() -> str:
    try:  # platform.processor() is only "x86_64" on Linux
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


# environment variables that change which kernels run or how many threads they use, recorded when set
MACHINE_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def machine(cfg: DictConfig, threads: int | None = None) -> dict[str, Any]:
    """The compute environment a run's numbers come from: the device (``cpu`` or the CUDA device's name), the
    CPU kernels torch dispatches to (``cpu_capability``: AVX512, AVX2, DEFAULT, ...; ``ATEN_CPU_CAPABILITY``
    lowers it), the BLAS / LAPACK torch was built with, the intra-op ``threads`` (default: torch's setting
    now), torch's version, the platform, the CPU model and the environment variables of MACHINE_ENV that are
    set. Runs whose environments differ may differ in their last digits (docs/results.md)."""
    import torch

    blas, lapack = blas_lapack()
    return {"device": cuda_name(cfg) or "cpu", "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "blas": blas, "lapack": lapack, "threads": int(torch.get_num_threads() if threads is None else threads),
            "torch": str(torch.__version__), "platform": platform.machine(), "cpu": cpu_name(),
            "env": {k: os.environ[k] for k in MACHINE_ENV if k in os.environ}}


def blas_lapack() -> tuple[str, str]:
    """The BLAS and LAPACK of torch's build (``BLAS_INFO``, ``LAPACK_INFO`` in ``torch.__config__.show()``,
    e.g. ``mkl``, ``open``), MKL with its version (``mkl 2024.2``); ``unknown`` where the build does not say."""
    import torch

    text = torch.__config__.show()
    found = [re.search(rf"\b{key}=([^,\s]+)", text) for key in ("BLAS_INFO", "LAPACK_INFO")]
    blas, lapack = (m.group(1) if m else "unknown" for m in found)
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", text)
    return (f"{blas} {mkl.group(1)}" if blas == "mkl" and mkl else blas), lapack


def write_record(out_dir: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(Path(out_dir) / RECORD, json.dumps(record, indent=2, default=_jsonable))


def _jsonable(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def start_record(cfg: DictConfig, out_dir: Path, commit: str | None, names: dict[str, Any],
                 before: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``running`` record of a run's attempt, written atomically. ``names``: the fields that name the run
    (:func:`mibench.labels.identity`). ``before``: the record of the run this attempt continues (a resume, or a
    SLURM requeue in its directory): its interruptions and attempts carry over (:func:`carried_over`), so the
    finished record counts every attempt."""
    events, attempts = carried_over(before)
    job = cluster.job_id()
    attempt = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": socket.gethostname(), "pid": os.getpid(),
               "slurm_job_id": job, "restart": cluster.restart_count() if job else None, "wall_s": 0.0,
               "ended": "running"}
    last = (before or {}).get("heartbeat") or {}
    rec = {"schema_version": SCHEMA_VERSION, "status": "running", **names, "config_hash": config_hash(cfg),
           "variant_hash": variant_hash(cfg), "git_commit": commit, "hardware": cfg.hardware.name,
           "versions": versions(cfg), "machine": machine(cfg), "conventions": conventions(cfg),
           "started_at": attempt["started_at"], "pid": os.getpid(), "pid_start": process_start(os.getpid()),
           "host": socket.gethostname(), "config": flat_config(cfg),
           "slurm": {"job_id": job, "restart_count": cluster.restart_count()} if job else None,
           "interruptions": events, "interruption_counts": interruption_counts(events),
           "attempts": [*attempts, attempt], "time_used_s": round(sum(a.get("wall_s") or 0.0 for a in attempts), 3),
           "heartbeat": {**{k: last.get(k) for k in ("step", "total", "segment", "segments", "unit", "estimate")},
                         "phase": "setup", "at": attempt["started_at"], "unix": round(time.time(), 3),
                         "every_s": QUIET_EVERY_S, "attempt_s": 0.0, "rate": None}}
    write_record(out_dir, rec)
    return rec


def carried_over(before: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(interruptions, attempts) of the run an attempt continues. A ``running`` record there is an attempt that
    ended without a word (SIGKILL, a node failure, the out-of-memory killer): counted as a ``killed``
    interruption at its last heartbeat. A record from before attempts were recorded is one attempt of its
    ``wall_time_s``."""
    if before is None:
        return [], []
    events = [e for e in before.get("interruptions") or [] if isinstance(e, dict)]
    attempts = [dict(a) for a in before.get("attempts") or [] if isinstance(a, dict)]
    if not attempts and time_used_s(before) is not None:
        attempts = [{"started_at": before.get("started_at"), "wall_s": time_used_s(before),
                     "ended": before.get("status")}]
    if unrecorded_kill(before, events, attempts):
        why = "the attempt ended without recording why (SIGKILL, a node failure, the out-of-memory killer)"
        events = merge_events(events, [kill_event(before, why)])
        if attempts:
            attempts[-1]["ended"] = "killed"
    return events, attempts


def unrecorded_kill(rec: dict[str, Any], events: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> bool:
    """Whether ``rec`` stands for an attempt killed without a word that no interruption counts yet: it still says
    ``running``, or ``killed`` with its last attempt never closed (or, without attempts, no ``killed`` event)."""
    if rec.get("status") == "running":
        return True
    if rec.get("status") != "killed":
        return False
    if attempts:
        return attempts[-1].get("ended") == "running"
    return not any(e.get("kind") == "killed" for e in events)


# what a result.json may say: ``killed`` is written by whoever finds a ``running`` record whose process is gone
# (:func:`declare_dead`: ``mibench status``, a sweep's progress lines, a SLURM launcher that saw the run's job leave
# the queue without a result), never by the run itself
RECORD_STATUSES = ("running", "completed", "diverged", "crashed", "interrupted", "killed")
FINISHED_STATUSES = ("completed", "diverged")  # a result: skipped by a rerun of the same config (unless overwrite)
UNFINISHED_STATUSES = ("running", "crashed", "interrupted", "killed")  # a checkpoint of one of these is resumed
INTERRUPTION_KINDS = ("time_limit", "preemption", "killed")  # interruptions[].kind (killed: no signal, found dead)
# what tables say of a run directory besides its record's status
NO_RECORD = "no record"  # a config.yaml but no result.json
INVALID = "invalid"  # a record (or a file a table needs) that cannot be used: listed with why (Skipped)
EMPTY_RUN_DIR = "empty run directory: no config.yaml or result.json (the run never started writing)"
# what a record's fields may hold when present and not null (a record breaking one is not read as a run)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("status", "benchmark", "dataset", "estimator", "critic", "started_at", "config_hash",
                     "variant_hash", "error", "host", "diverged_reason", "generated_data"), (str,)),
    **dict.fromkeys(("metrics", "config", "versions", "machine", "conventions", "heartbeat", "interruption_counts",
                     "slurm"), (dict,)),
    "levels": (list,), "figures": (list,), "interruptions": (list,), "attempts": (list,),
    **dict.fromkeys(("seed", "steps_done", "diverged_step", "schema_version", "pid"), (int,)),
    **dict.fromkeys(("lam", "c_star", "wall_time_s", "time_used_s"), (int, float)),
}
# the heartbeat of a run (:func:`heartbeat`): its fields, when present and not null
HEARTBEAT_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("step", "total", "segment", "segments"), (int,)),
    **dict.fromkeys(("unix", "every_s", "attempt_s", "estimate", "rate"), (int, float)),
    **dict.fromkeys(("at", "phase", "unit"), (str,)),
}
ATTEMPT_TYPES: dict[str, tuple[type, ...]] = {"wall_s": (int, float), "ended": (str,), "started_at": (str,)}
JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
              bool: "a boolean", type(None): "null"}


def _holds(v: Any) -> str:
    """What a JSON value is, in words (``a list``)."""
    return JSON_NAMES.get(type(v), type(v).__name__)


def _mistyped(key: str, v: Any, types: tuple[type, ...]) -> str | None:
    """Why ``v`` (the value of ``key``) is not one of ``types``, or None when it is (a bool is no number)."""
    if isinstance(v, types) and not isinstance(v, bool):
        return None
    return f"{key} holds {_holds(v)} ({str(v)[:40]}), not {' or '.join(dict.fromkeys(JSON_NAMES[t] for t in types))}"


def record_problem(rec: Any) -> str | None:
    """Why ``rec`` (a parsed result.json) cannot be read as a run's record, or None when it can."""
    if not isinstance(rec, dict):
        return f"holds {_holds(rec)}, not an object"
    for key, types in FIELD_TYPES.items():
        why = _mistyped(key, rec[key], types) if rec.get(key) is not None else None
        if why:
            return why
    for key, types, items in (("heartbeat", HEARTBEAT_TYPES, [rec.get("heartbeat")]),
                              ("attempts", ATTEMPT_TYPES, rec.get("attempts") or [])):
        for i, item in enumerate(i for i in items if i is not None):
            where = key if key == "heartbeat" else f"attempts[{i}]"
            if not isinstance(item, dict):
                return f"{where} holds {_holds(item)}, not an object"
            why = next((w for k, t in types.items() if item.get(k) is not None
                        and (w := _mistyped(f"{where}.{k}", item[k], t))), None)
            if why:
                return why
    status = rec.get("status")
    if status not in RECORD_STATUSES:
        return f"unknown status {status!r} (valid: {', '.join(RECORD_STATUSES)})" if status is not None else "no status"
    return None


def load_record(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None), or (None, why it cannot be read); (None, None) when the run has no result.json."""
    text, problem = read_text(Path(run_dir) / RECORD)
    if text is None:
        return None, problem
    try:
        rec = json.loads(text)
    except ValueError as e:
        return None, f"not valid JSON ({first_line(e)})"
    problem = record_problem(rec)
    return (None, problem) if problem else (rec, None)


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's record, or None when there is none or it cannot be read (see :func:`load_record`)."""
    return load_record(run_dir)[0]


# what tables need of a config.yaml: names (required), numbers (when present)
CONFIG_KEYS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("benchmark.name", "dataset.name", "estimator.name", "critic.name"), (str,)),
    "seed": (int,), "estimator.lam": (int, float), "estimator.c_star": (int, float), "dataset.batch_size": (int,)}


def read_text(path: Path) -> tuple[str | None, str | None]:
    """(the file's text, None), or (None, why it cannot be read); (None, None) when there is no such file."""
    if not path.exists():
        return None, None
    try:
        return path.read_text(), None
    except UnicodeDecodeError:
        return None, "not text (binary data)"
    except OSError as e:
        return None, f"cannot be read ({e.strerror})"




def load_config(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the run's resolved config.yaml as plain data, None), or (None, why it cannot be read); (None, None)
    when the run has none."""
    text, problem = read_text(Path(run_dir) / CONFIG)
    if text is None:
        return None, problem
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return None, f"not valid YAML ({first_line(e)})"
    if not isinstance(cfg, dict):
        return None, f"holds {_holds(cfg)}, not a mapping"
    for key, types in CONFIG_KEYS.items():
        group, _, name = key.rpartition(".")
        node = cfg.get(group) if group else cfg
        v = node.get(name) if isinstance(node, dict) else None
        why = f"no {key}" if v is None and str in types else _mistyped(key, v, types) if v is not None else None
        if why:
            return None, why
    return cfg, None


def read_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's resolved ``config.yaml`` as plain data, or None when there is none or it cannot be read."""
    return load_config(run_dir)[0]


def upgrade(rec: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """``rec`` with ``schema_version`` (1 when absent) and, where missing, the hashes and ``config`` derived from
    the run's config.yaml. Versions and conventions of a version-1 record stay absent: unknown."""
    out = {"schema_version": 1, **rec}
    flat = out.get("config") if isinstance(out.get("config"), dict) else {}
    stale = any(f"{group}.{key}" in flat for group, key in REMOVED_KEYS)  # hashed with a key since removed
    if not stale and all(k in out for k in ("config_hash", "variant_hash", "config")):
        return out
    cfg = read_config(run_dir)
    if cfg is not None:
        stale = stale or any(isinstance(cfg.get(group), dict) and key in cfg[group] for group, key in REMOVED_KEYS)
        for k, f in (("config_hash", config_hash), ("variant_hash", variant_hash), ("config", flat_config)):
            if k not in out or stale:
                out[k] = f(cfg)
    return out


def scan_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """(run_dir, record, problem) for every run directory below ``root``: a directory with a config.yaml or a
    result.json. ``record`` is None when there is none or it cannot be read, ``problem`` then says why (None
    when there is no result.json). Every record goes through :func:`upgrade`, so older schemas read like
    today's."""
    root = Path(root)
    if not root.exists():
        return
    seen: set[Path] = set()
    for p in sorted(root.rglob(CONFIG)):
        if p.parent.name == ".hydra":
            continue
        seen.add(p.parent)
        yield (p.parent, *_read_upgraded(p.parent))
    for p in sorted(root.rglob(RECORD)):
        if p.parent not in seen:
            yield (p.parent, *_read_upgraded(p.parent))


def iter_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """(run_dir, record) for every run directory below ``root`` (:func:`scan_records`); a run that has a
    config but no readable record yields ``None``."""
    for d, rec, _ in scan_records(root):
        yield d, rec


def _read_upgraded(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    rec, problem = load_record(run_dir)
    return (None if rec is None else upgrade(rec, run_dir)), problem


RUN_LEFTOVERS = (".hydra", "app.log", "main.log")  # what a run that died before writing anything leaves


def empty_run_dirs(root: str | Path) -> list[Path]:
    """Directories below ``root``, not inside a run directory nor a hidden one, with no subfolder and nothing in
    them but Hydra's leftovers (RUN_LEFTOVERS, logs): run directories whose run never wrote its config.yaml
    or result.json."""
    root = Path(root)
    out = []
    for d in sorted(p for p in root.rglob("*") if p.is_dir()):
        inside = [a for a in d.relative_to(root).parents if a != Path(".")]
        if any(part.startswith(".") for part in d.relative_to(root).parts) or any(
                (root / a / CONFIG).exists() or (root / a / RECORD).exists() for a in inside):
            continue
        kids = list(d.iterdir())
        if all(k.name in RUN_LEFTOVERS or k.suffix == ".log" for k in kids) and not any(
                k.is_dir() and k.name != ".hydra" for k in kids):
            out.append(d)
    return out


def find_same(root: str | Path, chash: str, exclude: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Runs under ``root`` with config hash ``chash`` (newest first by start time)."""
    hits = [(d, r) for d, r in iter_records(root)
            if r is not None and r.get("config_hash") == chash and (exclude is None or d.resolve() != exclude.resolve())]
    return sorted(hits, key=lambda dr: dr[1].get("started_at", ""), reverse=True)


# ----------------------------------------------------------------------------------------- liveness
# A ``running`` record is rewritten by its run (its ``heartbeat``) at every segment end and, inside a segment,
# after a record block at most every HEARTBEAT_S seconds. Whoever reads it decides whether its process is gone
# with :func:`dead_verdict` (docs/records.md#heartbeat).
HEARTBEAT_S = 30.0
STALE_FACTOR = 10  # a heartbeat older than STALE_FACTOR x its interval (and STALE_FLOOR_S) is stale
STALE_FLOOR_S = 1800.0
QUIET_EVERY_S = 3600.0  # the interval a run promises outside training (set-up, final evaluation)
# squeue states of a job that still holds its processes; PENDING ones wait for a requeue (the attempt is gone)
JOB_ALIVE = ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT")
JOB_WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT")


def process_start(pid: int) -> str | None:
    """When process ``pid`` of this host started (clock ticks since boot, /proc/<pid>/stat), or None when there
    is no such process or /proc cannot tell; a pid reused by another process has another start."""
    try:
        text = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = text.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, start: str | None = None) -> bool:
    """Process ``pid`` of this host exists (and, where ``start`` is known and /proc tells, started then)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return start is None or now is None or now == start


def record_age_s(rec: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds since the record's last heartbeat (None: it has none)."""
    hb = rec.get("heartbeat") or {}
    unix = hb.get("unix")
    return None if not isinstance(unix, (int, float)) else (time.time() if now is None else now) - float(unix)


def stale_after_s(rec: dict[str, Any]) -> float:
    """How old a ``running`` record's heartbeat may be before the run counts as dead (when nothing better tells)."""
    every = (rec.get("heartbeat") or {}).get("every_s") or QUIET_EVERY_S
    return max(STALE_FACTOR * float(every), STALE_FLOOR_S)


def slurm_job(rec: dict[str, Any]) -> str | None:
    """The SLURM job id the record's attempt ran in, if any."""
    job = (rec.get("slurm") or {}).get("job_id")
    return str(job) if job is not None else None


def dead_verdict(rec: dict[str, Any], jobs: dict[str, str] | None = None,
                 now: float | None = None) -> tuple[str, str] | None:
    """For a ``running`` record whose process is gone: (the status it becomes, why); None while it may live.

    The rule, first that applies: (1) written on this host: its pid is alive (and started when the run did);
    (2) written in a SLURM job and ``jobs`` is squeue's answer (``{job id: state}`` of the jobs it lists:
    :func:`hydra_plugins.mibench_launcher.slurm_jobs.queue_states`; None: squeue cannot tell): the job still holds
    its processes (RUNNING, COMPLETING, ...); pending again (requeued) -> ``interrupted``, not listed or ended ->
    ``killed``; (3) its heartbeat is at most :func:`stale_after_s` old (STALE_FACTOR x the interval it promised,
    at least STALE_FLOOR_S); a record without a heartbeat (written before heartbeats existed) is trusted."""
    if rec.get("status") != "running":
        return None
    pid, host = rec.get("pid"), rec.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        if pid == os.getpid() or process_alive(pid, rec.get("pid_start")):
            return None
        return "killed", f"its process {pid} on {host} is gone"
    job = slurm_job(rec)
    if job is not None and jobs is not None:
        state = jobs.get(job)
        if state is not None and state.split()[0] in JOB_ALIVE:
            return None
        if state is not None and state.split()[0] in JOB_WAITING:
            return "interrupted", f"its SLURM job {job} is {state} (requeued): this attempt is gone"
        return "killed", f"its SLURM job {job} is {'gone from the queue' if state is None else state}"
    age = record_age_s(rec, now)
    if age is not None and age > stale_after_s(rec):
        return "killed", f"no heartbeat for {age / 60:.0f} min (stale after {stale_after_s(rec) / 60:.0f} min)"
    return None


def known_alive(rec: dict[str, Any], jobs: dict[str, str] | None = None) -> str | None:
    """Where a ``running`` record's process is known to run (``pid 123 on node7``, ``SLURM job 77 (RUNNING)``),
    or None when it is not known to: finished, gone, or nothing can tell. An earlier attempt of this process's
    own SLURM job (a requeue) and this process itself are never alive."""
    if rec.get("status") != "running":
        return None
    job, pid, host = slurm_job(rec), rec.get("pid"), rec.get("host")
    if job is not None and job == cluster.job_id():
        return None
    if host == socket.gethostname() and isinstance(pid, int):
        alive = pid != os.getpid() and process_alive(pid, rec.get("pid_start"))
        return f"pid {pid} on {host}" if alive else None
    state = (jobs or {}).get(job) if job is not None else None
    return f"SLURM job {job} ({state})" if state is not None and state.split()[0] in JOB_ALIVE else None


def interruption_counts(interruptions: list[dict[str, Any]]) -> dict[str, int]:
    """How many interruptions of each kind (INTERRUPTION_KINDS)."""
    return {k: sum(isinstance(e, dict) and e.get("kind") == k for e in interruptions) for k in INTERRUPTION_KINDS}


def merge_events(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Interruptions from several sources (the record, the checkpoint) once each, in time order."""
    seen: dict[str, dict[str, Any]] = {}
    for events in lists:
        for e in events or []:
            seen.setdefault(json.dumps(e, sort_keys=True, default=str), e)
    return sorted(seen.values(), key=lambda e: str(e.get("at", "")))


def kill_event(rec: dict[str, Any], why: str) -> dict[str, Any]:
    """The interruption a dead ``running`` record stands for: at its last heartbeat (its last sign of life)."""
    hb = rec.get("heartbeat") or {}
    slurm = rec.get("slurm") or {}
    return {"kind": "killed", "signal": None, "step": hb.get("step"), "at": hb.get("at") or rec.get("started_at"),
            "slurm_job_id": slurm.get("job_id"), "restart": slurm.get("restart_count"), "why": why,
            "attempt_s": hb.get("attempt_s")}


def time_used_s(rec: dict[str, Any]) -> float | None:
    """Seconds the run has used over all its attempts (``attempts``; a record without them: its ``wall_time_s``)."""
    attempts = rec.get("attempts")
    if attempts:
        return float(sum(a.get("wall_s") or 0.0 for a in attempts if isinstance(a, dict)))
    wall = rec.get("wall_time_s")
    return float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None


def declare_dead(run_dir: str | Path, rec: dict[str, Any], status: str, why: str) -> dict[str, Any]:
    """``rec`` as ``status`` (``killed``; ``interrupted`` while its SLURM job waits for a requeue), ``why`` in its
    ``error``, with ``killed_at``: the one way a record is declared dead (:func:`dead_verdict`'s finding, or a
    SLURM launcher's that saw the job leave the queue). A ``running`` record's attempt ended without a word: the
    kill is counted among its interruptions (once) and the attempt ends ``killed``; an ``interrupted`` one (its
    signal already counted) only changes status. Written atomically, unless the file changed since it was read
    (the run wrote it meanwhile): then the file's record is returned unchanged. OSError when it cannot be
    written."""
    new = dict(rec, status=status, error=why, killed_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if rec.get("status") == "running":
        events = merge_events(rec.get("interruptions") or [], [kill_event(rec, why)])
        attempts = [dict(a) for a in rec.get("attempts") or [] if isinstance(a, dict)]
        if attempts:
            attempts[-1]["ended"] = "killed"
        new.update(interruptions=events, interruption_counts=interruption_counts(events),
                   attempts=attempts or rec.get("attempts"))
    now, _ = load_record(run_dir)
    if now is not None and now != rec and upgrade(now, run_dir) != rec:
        return now
    write_record(run_dir, new)
    return new
