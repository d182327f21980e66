"""Running one composed config: validate, seed, dispatch to the benchmark, write the run's records."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, validate
from .results import atomic_write_text


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run(cfg: DictConfig, out_dir: str | Path | None = None, echo: bool = True) -> dict[str, Any]:
    """Run the benchmark ``cfg`` describes and write its records under ``out_dir`` (default: cfg.out_dir)."""
    notes = validate(cfg)
    out = Path(out_dir if out_dir is not None else cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["out_dir"] = str(out)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    for note in notes:
        print(f"mibench: note: {note}", file=sys.stderr)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    from .benchmarks import BENCHMARKS

    t0 = time.time()
    result = BENCHMARKS[cfg.benchmark.name].run(cfg, out)
    est = cfg.estimator
    record = {
        "status": "diverged" if result.get("diverged_step") is not None else "completed",
        "benchmark": cfg.benchmark.name, "dataset": cfg.dataset.name, "estimator": est.name,
        "critic": cfg.critic.name, "lam": est.get("lam"), "c_star": est.get("c_star"), "seed": int(cfg.seed),
        "git_commit": git_commit(), "wall_time_s": round(time.time() - t0, 3),
        "diverged_step": result.get("diverged_step"), "steps_done": result.get("steps_done"),
        "metrics": result.get("metrics"),
        "levels": result["summary"].to_dict(orient="records") if result.get("summary") is not None else None,
    }
    atomic_write_text(out / "result.json", json.dumps(record, indent=2, default=float))
    if echo:
        print(result["text"])
        print(f"[{record['status']}] {record['wall_time_s']:.1f}s -> {out}")
    return result


def hydra_entry() -> Any:
    import hydra

    conf_dir = str(Path(__file__).resolve().parents[1] / "conf")

    @hydra.main(version_base="1.3", config_path=conf_dir, config_name="config")
    def _main(cfg: DictConfig) -> float | None:
        try:
            result = run(cfg)
        except ConfigError as e:
            print(f"mibench: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        if result.get("objective") is not None:
            return float(result["objective"])
        s = result.get("summary")
        return float(s["mse"].mean()) if s is not None and "mse" in s and len(s) else None

    return _main()
