"""Running one composed config: validate, seed, dispatch to the benchmark, write the run's records."""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from . import cluster
from .checks import ConfigError
from .config import apply_overrides, validate
from .engine import RunResult, run_task, seed_everything, train_group
from .engine.checkpoint import read_checkpoint
from .engine.logging import join_fields
from .engine.plan import plan_groups
from .handover import Prepared, hand_over
from .labels import identity
from .log import LOG, duration, run_logs
from .records import (CHECKPOINT, FINISHED_STATUSES, HEARTBEAT_S, QUIET_EVERY_S, RECORD, UNFINISHED_STATUSES,
                      config_hash, find_same, interruption_counts, known_alive, machine, merge_events, read_record,
                      slurm_job, start_record, upgrade, write_record)
from .registry import TASKS
from .results import atomic_write_text
from .threads import set_threads


def process_rank() -> int:
    """This process's rank under DDP (Fabric sets RANK / LOCAL_RANK in the processes it launches), else 0."""
    import os

    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _discard_fresh(out: Path) -> None:
    """Remove a run directory Hydra just made for a job that will not run there (only .hydra/ and logs)."""
    if out.exists() and all(p.name in (".hydra", "app.log", "config.yaml") for p in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


def own_record(cfg: DictConfig, out: Path) -> dict[str, Any] | None:
    """The record in ``out`` when it is of this config (the same command run again in its directory; an older
    schema's record upgraded, as :func:`mibench.records.find_same` reads them)."""
    rec = read_record(out)
    rec = upgrade(rec, out) if rec is not None else None
    return rec if rec is not None and rec.get("config_hash") == config_hash(cfg) else None


def requeued_here(cfg: DictConfig, out: Path) -> Path | None:
    """When this process is a SLURM requeue of the run in ``out`` (stopped for its time limit or preempted,
    and started again by SLURM or submitit): its checkpoint, or ``out`` itself when that run had already
    finished (stopped after its last step); else None."""
    if cluster.restart_count() < 1:
        return None
    rec = own_record(cfg, out)
    if rec is None:
        return None
    if rec.get("status") in FINISHED_STATUSES:
        return out
    ok = rec.get("status") in UNFINISHED_STATUSES and (out / CHECKPOINT).exists()
    return out / CHECKPOINT if ok else None


@dataclass
class Previous:
    """What earlier runs of a config mean for this one: skip to one (and why), resume one, a note."""

    skip_to: Path | None = None
    skip_why: str = ""
    resume_dir: Path | None = None
    note: str | None = None


def _previous_run(cfg: DictConfig, out: Path) -> Previous:
    """Earlier runs of this config: the one in ``out`` itself (an explicit ``hydra.run.dir`` / ``hydra.sweep.dir``:
    the same command run again), then those under ``runs_root``, newest first. A completed (or diverged) one is
    skipped to unless ``overwrite=true``; with ``resume=true`` an unfinished one with a checkpoint is continued.
    The run in ``out`` whose process still runs (here, or its SLURM job) is skipped to: no second process
    writes into its directory (but the other ranks of a DDP run, which rank 0 started, join it)."""
    own = own_record(cfg, out)
    same = ([(out, own)] if own is not None else []) + (
        find_same(cfg.runs_root, config_hash(cfg), exclude=out) if cfg.get("runs_root") else [])
    if own is not None and own.get("status") == "running" and process_rank() == 0:  # (a DDP rank joins rank 0's run)
        job = slurm_job(own)
        if job is not None and job != cluster.job_id():
            from hydra_plugins.mibench_launcher.slurm_jobs import queue_states

            alive = known_alive(own, queue_states([job]))
        else:
            alive = known_alive(own)
        if alive:
            return Previous(out, f"skipped: this config is still running in {out} ({alive})")
    if not cfg.get("overwrite"):
        for d, r in same:
            if r.get("status") in FINISHED_STATUSES:
                return Previous(d, f"skipped: this config already ran -> {d} (overwrite=true runs it again)")
    if not cfg.get("resume"):
        return Previous()
    for d, r in same:
        if r.get("status") in UNFINISHED_STATUSES and (d / CHECKPOINT).exists():
            return Previous(resume_dir=d, note=f"resume=true: continuing {d} from its checkpoint")
    where = f"in {out}" + (f" or under {cfg.runs_root}" if cfg.get("runs_root") else "")
    return Previous(note=f"resume=true: no interrupted run of this config {where}; starting afresh")


def _skipped(run_dir: Path, msg: str, echo: bool) -> "RunResult":
    """A run not trained again: its earlier directory, as this process's last record and its result."""
    hand_over({"status": "skipped", "out_dir": str(run_dir)})
    if echo:
        LOG.info(f"mibench: {msg}")
    return RunResult(status="skipped", out_dir=run_dir, text=msg)


def prepare(cfg: DictConfig, out_dir: str | Path | None = None, echo: bool = True,
            reuse: bool = False) -> "Prepared | RunResult":
    """Validate ``cfg``, pick its directory (or the earlier run it skips to / resumes), write config.yaml and
    the ``running`` record, seed the global generators. A skipped run comes back as its RunResult."""
    notes = validate(cfg)
    apply_overrides(cfg)  # the run's own estimator node gets what validate folded into its copy
    task = TASKS[cfg.benchmark.name]
    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    resume_from = None
    if cfg.get("resume") and not task.capabilities(cfg).resumable:  # (a SLURM requeue of such a run starts again)
        resumable = ", ".join(n for n, t in TASKS.items() if t.caps.resumable)
        raise ConfigError(f"resume=true is not supported by benchmark={cfg.benchmark.name} (resumable: {resumable})")
    requeue = requeued_here(cfg, out) if reuse else None
    before = None  # the record of the run this attempt continues (its interruptions and attempts carry over)
    if requeue == out:
        return _skipped(out, f"skipped: SLURM requeued this job after its run had finished -> {out}", echo)
    if requeue is not None:
        resume_from, before = requeue, read_record(out)
        notes.append(f"SLURM requeue {cluster.restart_count()} of job {cluster.job_id()}: continuing {out} from its "
                     f"checkpoint")
    elif reuse and cluster.restart_count() > 0 and (own := own_record(cfg, out)) is not None \
            and own.get("status") in UNFINISHED_STATUSES:  # requeued with no checkpoint: again from step 0
        before = own
    elif reuse:
        prev = _previous_run(cfg, out)
        if prev.note:
            notes.append(prev.note)
        if prev.skip_to is not None:
            if prev.skip_to != out:
                _discard_fresh(out)
            return _skipped(prev.skip_to, prev.skip_why, echo)
        if prev.resume_dir is not None:
            if prev.resume_dir != out:
                _discard_fresh(out)
            out, resume_from = prev.resume_dir, prev.resume_dir / CHECKPOINT
            before = read_record(out)
    if resume_from is not None:  # a file that cannot be resumed from: one line, before any record is touched
        read_checkpoint(resume_from, mmap=True)
    out.mkdir(parents=True, exist_ok=True)
    if process_rank() > 0:  # DDP: rank 0 writes the records, the other ranks only train
        seed_everything(int(cfg.seed))
        return Prepared(cfg, out, resume_from, {}, time.time(), echo)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["out_dir"] = str(out)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    for note in notes:
        LOG.warning(f"mibench: note: {note}")  # (stderr; without a logging set-up, Python's last resort shows it)
    seed_everything(int(cfg.seed))
    record = start_record(cfg, out, git_commit(), identity(cfg), before)
    return Prepared(cfg, out, resume_from, record, time.time(), echo, carried=list(record["interruptions"]))


def start_line(prep: "Prepared") -> str:
    """The job log's first line of a run: what it is, its config hash (as its records), where it writes. The
    estimator and critic only where the run uses them (their record fields are null otherwise: labels.roles)."""
    record = prep.record
    named = "".join(f" {name}={record[k]}" for k, name in (("estimator", "estimator"), ("lam", "lambda"),
                                                           ("critic", "critic")) if record.get(k) is not None)
    resume = f" (resuming from {prep.resume_from})" if prep.resume_from is not None else ""
    return (f"mibench: start {record['benchmark']}/{record['dataset']}{named} seed={record['seed']} "
            f"config={record['config_hash']} -> {prep.out}{resume}")


def end_line(prep: "Prepared", result: "RunResult | None" = None) -> str:
    """The job log's last line of a run: its status, wall time (and over all attempts, when it was resumed), steps,
    why it diverged or crashed, the task's last progress fields and held-out estimate (the final estimate), where
    it wrote."""
    record = prep.record
    why = record.get("diverged_reason") or record.get("error")
    parts = [f"{record['wall_time_s']:.1f}s"]
    attempts = len(record.get("attempts") or [])
    if attempts > 1 and record.get("time_used_s") is not None:  # a resumed run: its time over all attempts too
        parts[0] += f" ({duration(record['time_used_s'])} over {attempts} attempts)"
    if record.get("steps_done") is not None and record["status"] != "crashed":
        parts.append(f"{record['steps_done']} steps")
    fields = dict(result.extra.get("fields") or {}) if result is not None else {}
    test = (result.metrics or {}).get("test_estimate") if result is not None else None
    if isinstance(test, float):
        fields["test estimate"] = test
    shown = f": {join_fields(fields, ', ')}" if fields else ""
    return f"mibench: end {record['status']} after {', '.join(parts)}{f' ({why})' if why else ''}{shown} -> {prep.out}"


class RecordError(RuntimeError):
    """A run's record could not be written (e.g. a full disk); the message is one line."""


def write_outcome(prep: Prepared, outcome: str) -> None:
    """Write ``prep.record`` atomically. When that fails, a record still saying ``running`` is removed (no run
    looks alive that is not) and :class:`RecordError` says so in one line."""
    try:
        write_record(prep.out, prep.record)
    except OSError as e:
        stale = read_record(prep.out)
        removed = stale is not None and stale.get("status") == "running"
        if removed:
            (prep.out / RECORD).unlink(missing_ok=True)
        raise RecordError(f"{e.strerror or e}; the run {outcome} but is not recorded"
                          f"{'; its stale running record was removed' if removed else ''}") from None


def end_attempt(prep: Prepared, ended: str) -> None:
    """The record's current attempt: its wall time so far and how it ended (``running`` while it runs), and the
    run's ``time_used_s`` over all its attempts."""
    rec = prep.record
    wall = round(time.time() - prep.t0, 3)
    attempts = rec.setdefault("attempts", [])
    if attempts:
        attempts[-1].update(wall_s=wall, ended=ended)
    rec["wall_time_s"] = wall
    rec["time_used_s"] = round(sum(a.get("wall_s") or 0.0 for a in attempts), 3)


def set_interruptions(prep: Prepared, events: list[dict[str, Any]]) -> None:
    """Every interruption of the run: those of earlier attempts (``prep.carried``) and this attempt's."""
    merged = merge_events(prep.carried, events)
    prep.record["interruptions"], prep.record["interruption_counts"] = merged, interruption_counts(merged)


def record_interruption(prep: Prepared, interruptions: list[dict[str, Any]]) -> None:
    """A stop signal was handled and the run checkpointed: ``interrupted``, with every interruption so far
    (the requeued job resumes it and ends with the status of the finished run)."""
    set_interruptions(prep, interruptions)
    prep.record.update({"status": "interrupted", "error": None})
    end_attempt(prep, "interrupted")
    write_outcome(prep, "was interrupted")


class Heartbeat:
    """The engine's ``on_beat`` for one run: its record's ``heartbeat`` (where it stands: step of total, segment,
    last block's estimate, steps per second this attempt, when) and time used, written atomically. The engine
    calls it at most every HEARTBEAT_S seconds and at segment ends (no device sync); ``every_s`` is the interval
    the next one should come within (docs/records.md#heartbeat)."""

    def __init__(self, prep: Prepared):
        self.prep = prep
        self.last: float | None = None
        self.first: tuple[int, float] | None = None  # (step, monotonic time) of this attempt's first beat
        self.rate: float | None = None

    def __call__(self, beat: dict[str, Any]) -> None:
        now = time.monotonic()
        step = int(beat["step"])
        if self.first is None:
            self.first = (step, now)
        elif step > self.first[0] and now > self.first[1]:
            self.rate = (step - self.first[0]) / (now - self.first[1])
        every = QUIET_EVERY_S if beat.get("phase") != "training" else (
            HEARTBEAT_S if self.last is None else max(HEARTBEAT_S, now - self.last))
        self.last = now
        rec = self.prep.record
        est = beat.get("estimate")
        rec["heartbeat"] = {**beat, "estimate": (rec.get("heartbeat") or {}).get("estimate") if est is None else est,
                            "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "unix": round(time.time(), 3),
                            "every_s": round(every, 1), "attempt_s": round(time.time() - self.prep.t0, 1),
                            "rate": None if self.rate is None else round(self.rate, 3)}
        end_attempt(self.prep, "running")
        try:
            write_record(self.prep.out, rec)
        except OSError:  # a heartbeat is best effort (a full disk: the checkpoint or the final record says so)
            pass


def record_crash(prep: Prepared, e: BaseException) -> None:
    if isinstance(e, SystemExit) and prep.record.get("status") == "interrupted":
        return  # the cluster's handler ended the process after the interruption was recorded (a requeue)
    kind = "interrupted" if isinstance(e, KeyboardInterrupt) else "crashed"
    end_attempt(prep, kind)
    prep.record.update({"status": kind,
                        "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"})
    LOG.info(end_line(prep))
    hand_over(prep.record)
    write_outcome(prep, f"{kind} ({prep.record['error']})")


def record_result(prep: Prepared, result: "RunResult", **extra: Any) -> "RunResult":
    """The finished run's record (status, metrics, levels, figures) written atomically; printed when ``echo``."""
    record = prep.record
    end_attempt(prep, result.status)
    record.update({
        "status": result.status, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "resumed": prep.resume_from is not None,
        "diverged_step": result.diverged_step, "diverged_reason": result.diverged_reason,
        "generated_data": result.generated_data,
        "steps_done": result.steps_done, "metrics": result.metrics or None,
        "levels": result.summary.to_dict(orient="records") if result.summary is not None else None,
        "figures": [str(p.name) for p in result.figures], **extra,
        "machine": machine(prep.cfg, result.extra.get("threads")),  # the threads the run computed with
    })
    set_interruptions(prep, result.extra.get("interruptions") or [])
    if cluster.job_id() is not None:  # every requeue, also one signalled before the run had started training
        record["slurm"] = {"job_id": cluster.job_id(), "restart_count": cluster.restart_count()}
    _log_to_wandb(prep.cfg, prep.out, record)
    hand_over(record)
    write_outcome(prep, str(record["status"]))
    if prep.echo and result.text:
        LOG.info(result.text)
    LOG.info(end_line(prep, result))
    return result


def run(cfg: DictConfig, out_dir: str | Path | None = None, echo: bool = True, reuse: bool = False) -> "RunResult":
    """Run the benchmark ``cfg`` describes and write its records under ``out_dir`` (default: cfg.out_dir).

    ``reuse`` (the CLI sets it) looks for earlier runs of the same config under ``cfg.runs_root``:
    a completed one is skipped unless ``overwrite=true``; ``resume=true`` continues an interrupted one.
    """
    prep = prepare(cfg, out_dir, echo, reuse)
    if not isinstance(prep, Prepared):
        return prep
    moved = prep.out != Path(out_dir if out_dir is not None else cfg.out_dir)  # resume=true: an earlier run's directory
    with run_logs([prep.out]) if moved else contextlib.nullcontext():  # (its app.log gets the lines)
        return _run_prepared(prep)


def _run_prepared(prep: Prepared) -> "RunResult":
    cfg = prep.cfg
    if process_rank() > 0:
        return run_task(cfg, prep.out, resume=prep.resume_from)
    LOG.info(start_line(prep))
    try:
        result = run_task(cfg, prep.out, resume=prep.resume_from, on_interrupt=lambda ev: record_interruption(prep, ev),
                          on_beat=Heartbeat(prep))
    except BaseException as e:
        record_crash(prep, e)
        raise
    return record_result(prep, result)


def run_group(preps: list[Prepared], max_group_size: int | None = None, memory_fraction: float = 0.5,
              progress: bool = False) -> list["RunResult | Exception"]:
    """Train prepared runs of one group (:func:`mibench.engine.plan.group_key`) together and record each.

    Runs resuming from different steps train in separate groups; a group larger than ``memory_fraction`` of
    the device's free memory (or than ``max_group_size`` runs) is split. Returns each run's result, or the
    exception it crashed with (recorded as ``crashed``, as a run alone would be).
    """
    results: list[Any] = [None] * len(preps)
    for idx in plan_groups([(p.cfg, p.resume_from) for p in preps], max_group_size, memory_fraction):
        chunk = [preps[i] for i in idx]
        if len(chunk) == 1:  # a group of one trains alone (the single-run step, not vmapped)
            seed_everything(int(chunk[0].cfg.seed))  # (the other runs' preparation reseeded the generators)
            try:
                with run_logs([chunk[0].out]):
                    results[idx[0]] = _run_prepared(chunk[0])
            except Exception as e:  # noqa: BLE001 -- recorded as crashed by run()
                results[idx[0]] = e
            continue
        for p in chunk:
            with run_logs([p.out]):
                LOG.info(start_line(p))
        try:
            with run_logs([p.out for p in chunk]):  # the group's lines: in every one of its runs' app.log
                outs = train_group([p.cfg for p in chunk], [p.out for p in chunk], [p.resume_from for p in chunk],
                                   progress=progress,
                                   on_interrupt=[(lambda ev, p=p: record_interruption(p, ev)) for p in chunk],
                                   on_beat=[Heartbeat(p) for p in chunk])
        except SystemExit as e:  # a stop signal after the group checkpointed (a requeue): records say interrupted
            for p in chunk:
                record_crash(p, e)
            raise
        except Exception as e:  # noqa: BLE001 -- the shared training failed: every run of the chunk crashed
            outs = [e] * len(chunk)
        for i, p, out in zip(idx, chunk, outs):
            try:
                with run_logs([p.out]):  # its end line: in its own app.log
                    if isinstance(out, Exception):
                        results[i] = out
                        record_crash(p, out)
                    else:
                        results[i] = record_result(p, out, vectorized={"group_size": len(chunk)})
            except RecordError as e:  # this run is not recorded (said on one line); the others still are
                print(f"mibench: error: {e}", file=sys.stderr)
                results[i] = e
    return results


def _log_to_wandb(cfg: DictConfig, out: Path, record: dict[str, Any]) -> None:
    """logger=wandb: the run's figures and outcome go to the same W&B run as its metrics, then it closes."""
    if cfg.logger.name != "wandb":
        return
    import wandb

    if wandb.run is None:
        return
    images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted(out.glob("*.png"))}
    if images:
        wandb.log(images)
    scalars = {k: v for k, v in record.items() if isinstance(v, (int, float, str, bool)) and v is not None}
    scalars.update({f"metrics/{k}": v for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))})
    wandb.run.summary.update(scalars)
    wandb.finish()


def prepare_job(cfg: DictConfig) -> "Prepared | RunResult":
    """The Hydra task function of a job in a vectorised group (mibench.launcher): its threads, its values
    that need Hydra's runtime (out_dir) resolved while this job's Hydra config is current, its preparation."""
    from hydra.core.hydra_config import HydraConfig

    set_threads(cfg.hardware.get("threads"), HydraConfig.get().launcher)
    OmegaConf.resolve(cfg)
    return prepare(cfg, reuse=True)


def hydra_entry(argv: Sequence[str]) -> None:
    """Hand the command line ``argv`` (after the program name, as the CLI checked it) to Hydra, which composes
    each job's config and calls :func:`job` on it (once, or once per job of a ``-m`` sweep)."""
    run_hydra(list(argv), job, Path(__file__).resolve().parents[1] / "conf")


def run_hydra(argv: list[str], task: Callable[[DictConfig], Any], conf_dir: Path) -> None:
    """What ``@hydra.main`` does, given the arguments instead of reading ``sys.argv``: the one place that calls
    Hydra's internal runner (``hydra._internal.utils._run_hydra``), checked against the Hydra release it was
    written for (``hydra.main`` itself offers no way to pass arguments)."""
    import hydra
    from hydra._internal.utils import _run_hydra, get_args_parser
    from hydra.core.utils import _flush_loggers
    from hydra.main import _get_rerun_conf
    from hydra.types import TaskFunction

    if not hydra.__version__.startswith("1.3."):
        raise RuntimeError(f"mibench runs with hydra-core 1.3 (requirements/lock.txt), not {hydra.__version__}")
    hydra.version.setbase("1.3")
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.experimental_rerun is not None:
        task(_get_rerun_conf(args.experimental_rerun, args.overrides))
        _flush_loggers()
        return
    fn: TaskFunction = task
    _run_hydra(args=args, args_parser=parser, task_function=fn, config_path=str(conf_dir), config_name="config")


def job(cfg: DictConfig) -> float | None:
    """One job of a Hydra run or sweep: its run, its errors as one line (exit 2 for a bad config), its
    objective for a sweeper."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    logging.captureWarnings(True)  # a job's warnings: on the console as they are and in app.log (mibench.log)
    if multirun and cfg.logger.name == "wandb" and cfg.logger.get("group") is None:
        from omegaconf import open_dict

        with open_dict(cfg):  # W&B group = the sweep
            cfg.logger.group = Path(hc.sweep.dir).name
    try:
        set_threads(cfg.hardware.get("threads"), hc.launcher)
        result = run(cfg, reuse=True)
    except ConfigError as e:  # (errors: stderr and app.log, through mibench.log)
        LOG.error(f"mibench: error: {e}")
        raise SystemExit(2) from None
    except (RecordError, OSError) as e:  # the machine, not the code (a full disk): one line, no traceback
        LOG.error(f"mibench: error: {e}" if isinstance(e, RecordError) else
                  f"mibench: error: run crashed: {type(e).__name__}: {e}".splitlines()[0])
        if multirun:
            return None
        raise SystemExit(1) from None
    except Exception as e:
        # recorded as crashed in result.json; a sweep goes on with its other jobs
        # the line and its traceback: on stderr as before, and in app.log (mibench.log.Console)
        LOG.error(f"mibench: error: run crashed: {type(e).__name__}: {e}".splitlines()[0], exc_info=True)
        if multirun:
            return None
        raise SystemExit(1) from None
    return result.objective
