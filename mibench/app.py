"""Running one composed config: validate, seed, dispatch to the benchmark, write the run's records."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from .checks import ConfigError
from .records import CHECKPOINT, find_same, start_record, write_record
from .results import atomic_write_text

if TYPE_CHECKING:
    from .engine import RunResult



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


def _previous_run(cfg: DictConfig, out: Path) -> tuple[Path | None, Path | None, str | None]:
    """(skip_to, resume_dir, note) for ``overwrite`` / ``resume`` against earlier runs of this config."""
    from .records import config_hash

    root = cfg.get("runs_root")
    if not root:
        return None, None, None
    same = find_same(root, config_hash(cfg), exclude=out)
    if cfg.get("resume"):
        for d, r in same:
            if r.get("status") in ("running", "crashed") and (d / CHECKPOINT).exists():
                return None, d, f"resume=true: continuing {d} from its checkpoint"
        return None, None, f"resume=true: no interrupted run of this config under {root}; starting afresh"
    if not cfg.get("overwrite"):
        for d, r in same:
            if r.get("status") in ("completed", "diverged"):
                return d, None, None
    return None, None, None


def run(cfg: DictConfig, out_dir: str | Path | None = None, echo: bool = True, reuse: bool = False) -> "RunResult":
    """Run the benchmark ``cfg`` describes and write its records under ``out_dir`` (default: cfg.out_dir).

    ``reuse`` (the CLI sets it) looks for earlier runs of the same config under ``cfg.runs_root``:
    a completed one is skipped unless ``overwrite=true``; ``resume=true`` continues an interrupted one.
    """
    from .config import validate
    from .engine import TASKS, RunResult, run_task, seed_everything

    notes = validate(cfg)
    task = TASKS[cfg.benchmark.name]
    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    resume_from = None
    if cfg.get("resume") and not task.resumable:
        resumable = ", ".join(n for n, t in TASKS.items() if t.resumable)
        raise ConfigError(f"resume=true is not supported by benchmark={cfg.benchmark.name} (resumable: {resumable})")
    if reuse:
        skip_to, resume_dir, note = _previous_run(cfg, out)
        if note:
            notes.append(note)
        if skip_to is not None:
            _discard_fresh(out)
            msg = f"skipped: this config already ran -> {skip_to} (overwrite=true runs it again)"
            if echo:
                print(f"mibench: {msg}")
            return RunResult(status="skipped", out_dir=skip_to, text=msg)
        if resume_dir is not None:
            _discard_fresh(out)
            out, resume_from = resume_dir, resume_dir / CHECKPOINT
    out.mkdir(parents=True, exist_ok=True)
    if process_rank() > 0:  # DDP: rank 0 writes the records, the other ranks only train
        seed_everything(int(cfg.seed))
        return run_task(cfg, out, resume=resume_from)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["out_dir"] = str(out)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    for note in notes:
        print(f"mibench: note: {note}", file=sys.stderr)
    seed_everything(int(cfg.seed))

    record = start_record(cfg, out, git_commit())
    t0 = time.time()
    try:
        result = run_task(cfg, out, resume=resume_from)
    except BaseException as e:
        kind = "interrupted" if isinstance(e, KeyboardInterrupt) else "crashed"
        write_record(out, {**record, "status": kind, "wall_time_s": round(time.time() - t0, 3),
                           "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"})
        raise
    record.update({
        "status": result.status, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "wall_time_s": round(time.time() - t0, 3), "resumed": resume_from is not None,
        "diverged_step": result.diverged_step, "steps_done": result.steps_done, "metrics": result.metrics or None,
        "levels": result.summary.to_dict(orient="records") if result.summary is not None else None,
        "figures": [str(p.name) for p in result.figures],
    })
    _log_to_wandb(cfg, out, record)
    write_record(out, record)
    if echo:
        print(result.text)
        print(f"[{record['status']}] {record['wall_time_s']:.1f}s -> {out}")
    return result


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


def _set_threads(cfg: DictConfig, hc: Any) -> None:
    """CPU threads per job: ``hardware.threads`` if set; under the joblib launcher, the cores shared
    out between its parallel jobs (oversubscribed OpenMP threads spin and slow every job down)."""
    import os

    import torch

    threads = cfg.hardware.get("threads")
    if threads is None:
        n_jobs = OmegaConf.select(hc, "launcher.n_jobs") if "joblib" in str(OmegaConf.select(hc, "launcher._target_")) else None
        if n_jobs is not None and n_jobs != 1:
            cores = os.cpu_count() or 1
            jobs = cores if n_jobs < 0 else n_jobs
            threads = max(1, cores // max(1, jobs))
    if threads is not None:
        torch.set_num_threads(int(threads))


def hydra_entry() -> Any:
    import hydra

    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")

    @hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")
    def _main(cfg: DictConfig) -> float | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        multirun = hc.mode == RunMode.MULTIRUN
        if multirun and cfg.logger.name == "wandb" and cfg.logger.get("group") is None:
            from omegaconf import open_dict

            with open_dict(cfg):  # W&B group = the sweep
                cfg.logger.group = Path(hc.sweep.dir).name
        _set_threads(cfg, hc)
        try:
            result = run(cfg, reuse=True)
        except ConfigError as e:
            print(f"mibench: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception as e:
            # recorded as crashed in result.json; a sweep goes on with its other jobs
            print(f"mibench: error: run crashed: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
            traceback.print_exc()
            if multirun:
                return None
            raise SystemExit(1) from None
        return result.objective

    return _main()
