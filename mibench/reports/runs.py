"""The one loader of run records for every table and figure (the leaderboard, the report, ``python -m mibench.figures``).

:func:`scan` reads every run directory below a root once (:func:`mibench.records.scan_records`: result.json and
config.yaml, older schemas upgraded) into a table with one row per run: identity (named by the benchmark's Task
declarations, :func:`mibench.labels.roles`), status (a dead ``running`` run is ``killed``), configuration (its
variant hash), versions and compute environment, metrics (``m_<name>``), the seeds its sweep asked for and what
was GENERATED about its data. Whatever cannot be read is named in ``skipped`` with why. The per-paper modules of
:mod:`mibench.reports` read a run's own files (steps.csv, summary.csv, ...) through :func:`run_csv`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..labels import roles
from ..records import (CONFIG, EMPTY_RUN_DIR, INVALID, NO_RECORD, RECORD, dead_verdict, empty_run_dirs, flat_config,
                       load_config, scan_records, variant_hash)
from ..results import read_steps

FINISHED = ("completed", "diverged")
ENV_FIELDS = ("cpu_capability", "blas", "threads", "device", "torch")


# ----------------------------------------------------------------------------------------- loading
def load_runs(root: str | Path) -> pd.DataFrame:
    """One row per run directory below ``root`` (see :func:`scan`)."""
    return scan(root)[0]


def scan(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, skipped). ``runs``: one row per run directory below ``root``: identity, status, group (the
    configuration: its variant hash), config (flattened, for labels), versions and conventions, metrics.
    ``skipped``: every record, config.yaml, steps.csv or run directory that could not be used (``path``,
    ``reason``).

    Status is the record's, except ``running`` whose process is gone (``killed``, or ``interrupted`` when its SLURM
    job waits for a requeue: :func:`mibench.records.dead_verdict`), a directory with a config but
    no record (``no record``) and a run whose record, config.yaml or (finished staircase runs) steps.csv cannot be
    read or contradicts its config (``invalid``: in no table, and in ``skipped``). Re-runs of an identical config
    (``overwrite=true``) count once: the newest finished one.
    """
    rows, skipped, sweeps = [], [], SweepSeeds(Path(root))
    for d, rec, rec_problem in scan_records(root):
        cfg, cfg_problem = load_config(d)
        row = _run_row(d, rec, cfg)
        row["requested"] = sweeps.requested(d, row.get("seed"))
        problems = [(d / name, why) for name, why in ((RECORD, rec_problem), (CONFIG, cfg_problem)) if why]
        if not problems and row["status"] in FINISHED and row.get("benchmark") == "staircase":
            _, why = read_steps(d / "steps.csv", ((cfg or {}).get("dataset") or {}).get("mi_levels"))
            problems = [(d / "steps.csv", why)] if why else []
        if problems:
            row["status"], row["error"] = INVALID, f"{problems[0][0].name}: {problems[0][1]}"
            skipped += [(str(path), why) for path, why in problems]
        rows.append(row)
    skipped += [(str(d), EMPTY_RUN_DIR) for d in empty_run_dirs(root)]
    return _newest(pd.DataFrame(rows)), pd.DataFrame(skipped, columns=["path", "reason"])


class SweepSeeds:
    """The seeds a run's sweep asked for, read once per sweep folder below the scanned root."""

    def __init__(self, root: Path):
        self.root, self.cache = root, {}

    def requested(self, run_dir: Path, seed: Any) -> tuple[int, ...]:
        """The seeds of the sweep (``-m``) that ``run_dir`` is a job of: its ``multirun.yaml`` (the nearest folder
        above the run, up to the scanned root), the command line's ``seed=`` or else the sweeper's ``params.seed``
        (``0,1,2``, ``range(0,5)``), else the sweep's fixed seed. A run started on its own, or whose sweep's seeds
        cannot be read, asked only for its own ``seed``."""
        own = (int(seed),) if isinstance(seed, (int, float)) and not _isnan(seed) else ()
        for parent in run_dir.parents:
            if (parent / "multirun.yaml").is_file():
                if parent not in self.cache:
                    self.cache[parent] = sweep_seeds(parent / "multirun.yaml")
                return self.cache[parent] or own
            if parent == self.root or self.root not in parent.parents:
                break
        return own


def sweep_seeds(path: Path) -> tuple[int, ...] | None:
    """The seeds a sweep's ``multirun.yaml`` asks every configuration for, or None when it cannot be read."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        cfg = yaml.safe_load(path.read_text())
        hydra = cfg["hydra"]
        given = [o.lstrip("+") for o in (hydra.get("overrides") or {}).get("task") or [] if isinstance(o, str)]
        value = next((o.split("=", 1)[1] for o in reversed(given) if o.split("=", 1)[0] == "seed"), None)
        if value is None:
            value = ((hydra.get("sweeper") or {}).get("params") or {}).get("seed", cfg.get("seed"))
        override = OverridesParser.create().parse_override(f"seed={value}")
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        return tuple(sorted({int(v) for v in values}))
    except Exception:  # noqa: BLE001 -- unreadable, or a sweep this cannot enumerate (an interval): unknown
        return None


GROUPS = ("benchmark", "estimator", "critic")  # the config groups that name a run (mibench.labels.roles)


def _run_row(d: Path, rec: dict[str, Any] | None, cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A run's row of :func:`scan` from its (readable) record and config.yaml, either or both None."""
    row: dict[str, Any] = {"run_dir": str(d), "config": (rec or {}).get("config") or {}}
    if cfg is not None:
        used = roles(cfg)  # no estimator / critic where the benchmark uses none (also in runs recorded before)
        row.update(benchmark=cfg["benchmark"]["name"], dataset=cfg["dataset"]["name"],
                   estimator=used["estimator"], critic=used["critic"],
                   lam=cfg["estimator"].get("lam"), c_star=cfg["estimator"].get("c_star"), seed=cfg.get("seed"),
                   batch_size=cfg["dataset"].get("batch_size"), ema_span=cfg["benchmark"].get("ema_span", 200),
                   group=variant_hash(cfg), config=row["config"] or flat_config(cfg))
    if rec is None:
        row["status"] = NO_RECORD
    else:
        row.update({k: rec.get(k) for k in ("benchmark", "dataset", "estimator", "critic", "lam", "c_star", "seed")
                    if k not in row})
        if cfg is None:  # named as the record's benchmark declares (a record written before it named none)
            row.update({k: v for k, v in roles({g: {"name": rec.get(g)} for g in GROUPS}).items() if k in GROUPS})
        dead = dead_verdict(rec)
        row.update(status=dead[0] if dead else rec["status"],
                   config_hash=rec.get("config_hash"), started_at=rec.get("started_at", ""),
                   wall_time_s=rec.get("wall_time_s"), error=rec.get("error"), levels=rec.get("levels"),
                   **_provenance(rec))
        row["group"] = rec.get("variant_hash") or row.get("group")
        for k, v in (rec.get("metrics") or {}).items():
            row[f"m_{k}"] = v
    row["generated"] = generated_data(rec, cfg)
    row["group"] = row.get("group") or row.get("config_hash") or f"dir:{d}"
    if row["generated"]:  # never pooled with runs of the same config on the real data
        row["group"] = f"{row['group']}+generated"
    return row


GENERATED = "GENERATED"


def generated_data(rec: dict[str, Any] | None, cfg: dict[str, Any] | None) -> str | None:
    """What was GENERATED about a run's data (result.json's ``generated_data``), or None on real data. A record
    written before mibench recorded it is judged from what it has: dSprites' ``data`` metric, the dataset
    ``dsprites_generated``, or the GENERATED marker of the data folder its config names (mibench.data's generated
    CIFAR / STL-10 files and image trees)."""
    if rec is not None and "generated_data" in rec:
        return rec["generated_data"] or None
    metrics = (rec or {}).get("metrics") or {}
    if metrics.get("data") == "generated":
        return str(metrics.get("data_label") or "GENERATED data")
    data = (cfg or {}).get("dataset") or {}
    name = data.get("name") or (rec or {}).get("dataset")
    if name == "dsprites_generated":
        return "GENERATED dSprites-style images (not the official file)"
    root = data.get("root")
    return _marked(str(name), str(root)) if root else None


def _marked(name: str, root: str) -> str | None:
    """``GENERATED ...`` when the data folder of dataset ``name`` under ``root`` carries mibench's GENERATED marker."""
    from ..data import cifar, imagefolder, stl10

    try:
        if name in cifar.SPECS and cifar.is_generated(root, name) or name == "stl10" and stl10.is_generated(root):
            return f"GENERATED {name} files, not the real dataset"
        if name == "imagenet10" and imagefolder.is_generated(root):
            return f"a GENERATED image tree ({root}), not ImageNet"
    except OSError:
        return None
    return None


def dataset_label(r: pd.Series | dict[str, Any]) -> str:
    """A run's (or a row's) dataset as every table shows it: ``cifar10 (GENERATED)`` on generated data (a name that
    says so already, ``dsprites_generated``, stays as it is)."""
    ds = "–" if r.get("dataset") is None or _isnan(r.get("dataset")) else str(r.get("dataset"))
    says = isinstance(r.get("generated"), str) and r.get("generated") and GENERATED.lower() not in ds.lower()
    return f"{ds} ({GENERATED})" if says else ds


def _newest(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with re-runs of an identical config (same config_hash) counted once: the newest finished one."""
    if df.empty:
        return df
    if "config_hash" not in df:  # no record at all
        return df
    df = df.assign(finished=df["status"].isin(FINISHED)).sort_values(["finished", "started_at"], na_position="first")
    dup = df["config_hash"].notna() & df.duplicated("config_hash", keep="last")
    return df[~dup].drop(columns="finished").reset_index(drop=True)


def _provenance(rec: dict[str, Any]) -> dict[str, Any]:
    """Schema, versions, conventions and compute environment (``env_*``) of a record; ``unknown`` where an older
    schema did not record them."""
    v, machine = rec.get("versions") or {}, rec.get("machine") or {}
    conv = rec.get("conventions")
    return {"schema_version": rec.get("schema_version", 1),
            **{f"{k}_version": v.get(k, "unknown") for k in ("mibench", "torch", "python")},
            "device": v.get("device", "unknown"),
            "conventions": "unknown" if conv is None else json.dumps(conv, sort_keys=True),
            **{f"env_{k}": str(machine.get(k, "unknown")) for k in ENV_FIELDS}}




def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def steps_of(run_dir: str | Path) -> pd.DataFrame | None:
    """A run's steps.csv (None when it is absent or unreadable: :func:`mibench.results.read_steps`)."""
    return read_steps(Path(run_dir) / "steps.csv")[0]


_steps = steps_of


def run_csv(run_dir: str | Path, name: str) -> pd.DataFrame | None:
    """A CSV a run wrote into its directory (``summary.csv``, ``table2.csv``, ...), None when it is absent or cannot
    be read (a table built from many runs shows the others)."""
    try:
        return pd.read_csv(Path(run_dir) / name)
    except (OSError, ValueError):
        return None


def finished(runs: pd.DataFrame, benchmarks: tuple[str, ...] | str) -> pd.DataFrame:
    """The finished (completed or diverged) runs of ``benchmarks`` (one name or several)."""
    if runs.empty or "benchmark" not in runs:
        return runs.iloc[0:0]
    names = (benchmarks,) if isinstance(benchmarks, str) else benchmarks
    return runs[runs["benchmark"].isin(names) & runs["status"].isin(FINISHED)]



def missing_seeds(g: pd.DataFrame) -> list[int]:
    """The missing seeds of one configuration's runs ``g``: those their own sweeps asked for (``requested``, see
    :class:`SweepSeeds`) that none of them has; never a seed only another configuration or sweep asked for."""
    want = set().union(*map(set, g["requested"])) if "requested" in g else set()
    return sorted(want - set(g["seed"].dropna().astype(int)))



def relative(path: str | Path, root: Path) -> str:
    """``path`` below ``root`` as a relative path (as given when it is not below it)."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def load(root: Path, out: Path | None = None, prog: str = "mibench leaderboard") -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`scan` of ``root`` without what lies under ``out`` (the leaderboard's own folder), paths of the skipped
    relative to ``root``; SystemExit (one line, from ``prog``) when there is no run."""
    runs, skipped = scan(root)
    if out is not None:
        runs = runs[~runs["run_dir"].str.startswith(str(out))] if not runs.empty else runs
        skipped = skipped[~skipped["path"].str.startswith(str(out))]
    if runs.empty:
        first = skipped.iloc[0] if len(skipped) else None
        why = f"; skipped {relative(first['path'], root)}: {first['reason']}" if first is not None else ""
        raise SystemExit(f"{prog}: no runs found under {root} (looked for */config.yaml and */result.json){why}")
    return runs.reset_index(drop=True), skipped.assign(path=[relative(p, root) for p in skipped["path"]])


def status_line(runs: pd.DataFrame, skipped: pd.DataFrame) -> str:
    """'12 runs: 10 completed, 1 diverged, 1 invalid; 2 missing (requested by their sweep, never started); 2 records
    or files skipped (see Skipped)'. The missing are those of the failures table (:func:`missing_seeds`)."""
    counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
    n_missing = count_missing(runs)
    more = f"; {n_missing} {MISSING_TEXT}" if n_missing else ""
    more += f"; {len(skipped)} records or files skipped (see Skipped)" if len(skipped) else ""
    return f"{len(runs)} runs: {counts}{more}"


MISSING_TEXT = "missing (requested by their sweep, never started)"


def count_missing(runs: pd.DataFrame) -> int:
    """How many seeds the configurations miss (:func:`missing_seeds`), all configurations together."""
    return int(sum(len(missing_seeds(g)) for _, g in runs.groupby("group", sort=False))) if len(runs) else 0


SKIPPED_NOTE = ("Records and files that could not be read, or that contradict their run's config: their runs are "
                "`invalid` (in no table); an empty run directory is no run.")

