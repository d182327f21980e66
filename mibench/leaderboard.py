"""Leaderboard: scan a folder of runs and write the papers' tables (Markdown, LaTeX, CSV) and figures.

    python -m mibench.leaderboard runs/ [--out runs/leaderboard]      (also: mibench leaderboard runs/)

Tables, each written only when such runs exist:
- **table2**: SLB/CLB in the layout of Choi & Lee Table 2 — task x dataset x estimator, original
  and regularized side by side, mean ± 95% Student-t interval over seeds, the better of each pair in
  bold, ``†`` where the two intervals do not overlap (the paper's blue), the regularized estimator's
  lambda chosen by "the best MI estimation" as in the paper (Choi & Lee §5: the mean closest to the true
  MI, log C; not the largest, since DV-type estimates can exceed log C), published numbers beside ours;
- **staircase**: per estimator x critic x dataset and MI level, over all steps of all seeds: mean and
  median estimate, bias, variance, MSE (the median matters: NWJ/JS throw rare huge negative spikes);
- **onehot**: drift slope and explosion step per estimator;
- **bmi** (the ``samples`` benchmark: Beyond-Normal tasks and users' sample files) in the layout of Czyż et al.
  (NeurIPS 2023): task x estimator, mean ± sd over seeds of the best held-out estimate beside the true MI;
  in LaTeX each cell coloured by its relative error;
- **failures**: crashed, diverged, killed and missing runs, naming the seeds of each config.
Figures: the staircase grid (Poole Fig. 2 / Choi & Lee Fig. 7; a row per dataset x critic x step budget), the
lambda ablation (Fig. 6) and the Beyond-Normal heat map (``bmi_suite.png``). Runs on GENERATED data (their record's
``generated_data``) are never pooled with real runs and are labelled so in every row and title; a seed is missing
only when the configuration's own sweep asked for it (:class:`SweepSeeds`).

A configuration is everything that can change its numbers (the record's ``variant_hash``): seeds of
one configuration are pooled, any other difference makes a row (a panel) of its own, and rows that
would look alike are labelled with the config keys that differ between them, e.g.
``smile (estimator.clip=5)``. A row pooling runs of different mibench or torch versions or
conventions is marked ``‡`` and named in a note under its table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from .records import (CONFIG, EMPTY_RUN_DIR, INVALID, NO_RECORD, NOT_VARIANT, RECORD, dead_verdict, empty_run_dirs,
                      flat_config, load_config, scan_records, variant_hash)
from .labels import roles
from .results import (atomic_write_csv, atomic_write_text, draw_staircase, first_line, level_summary, read_steps,
                      save_figure)
from .stats import mean_ci

PAIRS = [("mine", "remine"), ("smile", "resmile"), ("infonce", "reinfonce"), ("nwj", "renwj"), ("tuba", "retuba"),
         ("js", "rejs")]
LABEL = {"mine": "MINE", "smile": "SMILE", "infonce": "InfoNCE", "nwj": "NWJ", "tuba": "TUBA", "js": "JS"}
FINISHED = ("completed", "diverged")
NONE = "–"  # a cell with nothing to show (no estimator where a benchmark uses none, a missing number)
INFONCE_LIKE = ("infonce", "reinfonce")
MIXED = "‡"
# the fields of a record's ``machine`` that change which kernels compute a run's numbers
ENV_FIELDS = ("cpu_capability", "blas", "threads", "device", "torch")
# the benchmarks whose finished runs each table pools
TABLE_BENCHMARKS = {"table2": ("slb", "clb"), "staircase": ("staircase",), "onehot": ("onehot",), "bmi": ("samples",)}


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
    from .data import cifar, imagefolder, stl10

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


def environment_note(runs: pd.DataFrame, table: str) -> str:
    """One line under ``table`` (a key of TABLE_BENCHMARKS) when the runs it pools come from more than one
    compute environment (ENV_FIELDS of their records' ``machine``): how many, each differing field's values with
    their numbers of runs, and the runs whose record has no ``machine`` (one more environment: unknown); ''
    when they share one."""
    cols = [f"env_{k}" for k in ENV_FIELDS]
    used = runs[runs["benchmark"].isin(TABLE_BENCHMARKS[table]) & runs["status"].isin(FINISHED)]
    env = used.reindex(columns=cols).fillna("unknown").astype(str)
    n = len(env.drop_duplicates())
    if n < 2:
        return ""
    unknown = (env == "unknown").all(axis=1)
    parts = []
    for key, col in zip(ENV_FIELDS, cols):
        counts = sorted(env.loc[~unknown, col].value_counts().items(), key=lambda vc: (-vc[1], vc[0]))
        if len(counts) > 1:
            parts.append(f"{key}: " + ", ".join(f"{v} ×{c}" for v, c in counts))
    if unknown.any():
        parts.append(f"not recorded ×{int(unknown.sum())}")
    return (f"\nnote: this table mixes runs from {n} compute environments ({'; '.join(parts)}) — per-step values "
            f"differ across kernels within the drift documented in docs/results.md\n")


def mixed(g: pd.DataFrame) -> str:
    """'' when the runs ``g`` share their mibench and torch versions and conventions, else what differs."""
    parts = []
    for col, name in (("mibench_version", "mibench"), ("torch_version", "torch"), ("conventions", "conventions")):
        if col not in g:
            continue
        values = sorted(set(g[col].fillna("unknown").astype(str)), key=lambda v: (v == "unknown", v))
        if len(values) > 1:
            parts.append(f"{name} {' / '.join(values)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------- variants
def _value(v: Any) -> str:
    """A config value as one would type it on the command line."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


_UNSET = object()


def differences(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per configuration, the flattened keys whose values are not the same in all ``configs`` (a key some
    lack counts too). A key under a group whose ``name`` differs (``critic.hidden`` when ``critic.name``
    does) is left out when it does not also vary between configurations of the same choice."""
    keys = sorted({k for c in configs.values() for k in c})
    varying = [k for k in keys if len({_key(c.get(k, _UNSET)) for c in configs.values()}) > 1]

    def explained(k: str) -> bool:
        name = k.split(".", 1)[0] + ".name"
        if name == k or name not in varying:
            return False
        pairs = {(_key(c.get(name, _UNSET)), _key(c.get(k, _UNSET))) for c in configs.values()}
        return len(pairs) == len({p[0] for p in pairs})

    shown = [k for k in varying if not explained(k)]
    return {g: {k: c.get(k, _UNSET) for k in shown} for g, c in configs.items()}


def _key(v: Any) -> str:
    return "<unset>" if v is _UNSET else json.dumps(v, sort_keys=True, default=str)


def _label(diff: dict[str, Any]) -> str:
    return ", ".join(f"no {k}" if v is _UNSET else f"{k}={_value(v)}" for k, v in diff.items())


def variant_labels(runs: pd.DataFrame, key: list[str], keep: Callable[[str], bool] = lambda k: True) -> pd.Series:
    """Per run: the config keys (those ``keep`` admits) that differ between the configurations sharing its
    ``key`` columns, as 'k=v, ...'; '' where those configurations agree on every such key."""
    labels = pd.Series("", index=runs.index, dtype=object)
    key = [k for k in key if k in runs]  # e.g. no batch_size without any config.yaml
    for _, g in runs.groupby(key, dropna=False, sort=False) if key else [(None, runs)]:
        configs = {grp: {k: v for k, v in x["config"].iloc[0].items() if keep(k) and k not in NOT_VARIANT}
                   for grp, x in g.groupby("group", sort=False)}
        if len({_key(c) for c in configs.values()}) < 2:
            continue
        known = {grp: c for grp, c in configs.items() if c}
        for grp, diff in differences(known).items():
            labels[g.index[g["group"] == grp]] = _label(diff)
        for grp in set(configs) - set(known):  # no config to compare: name it by its hash
            labels[g.index[g["group"] == grp]] = f"config {grp[:8]}"
    return labels


def _steps(run_dir: str) -> pd.DataFrame | None:
    return read_steps(Path(run_dir) / "steps.csv")[0]


# ----------------------------------------------------------------------------------------- tables
def staircase_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config (all seeds pooled) and MI level: mean, median, bias, variance, MSE of the estimate."""
    st = runs[(runs["benchmark"] == "staircase") & runs["status"].isin(FINISHED)]
    st = st.assign(variant=variant_labels(st, ["dataset", "critic", "estimator", "lam"]))
    out = []
    for group, g in st.groupby("group", sort=False):
        frames = [s for s in (_steps(d) for d in g["run_dir"]) if s is not None]
        if not frames:
            continue
        steps = pd.concat(frames, ignore_index=True)
        first = g.iloc[0]
        est = steps["estimate"].where(np.isfinite(steps["estimate"]))
        medians = est.groupby(steps["level"]).median()
        for lv in level_summary(steps).to_dict("records"):
            out.append({"dataset": first["dataset"], "critic": first["critic"], "estimator": first["estimator"],
                        "variant": first["variant"], "lam": first.get("lam"), "seeds": int(len(frames)),
                        "level": lv["level"], "true_mi": lv["true_mi"], "mean": lv["mean"],
                        "median": float(medians[lv["level"]]), "bias": lv["bias"], "variance": lv["variance"],
                        "mse": lv["mse"], "nonfinite": lv["nonfinite"], "mixed": mixed(g), "group": group})
    return pd.DataFrame(out)


def onehot_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config: drift slope (mean ± CI over seeds) and explosion steps of the one-hot study."""
    oh = runs[(runs["benchmark"] == "onehot") & runs["status"].isin(FINISHED)]
    oh = oh.assign(variant=variant_labels(oh, ["estimator", "batch_size", "c_star", "lam"]))
    slope_col = next((c for c in ("m_drift_slope_per_1k", "m_drift_slope") if c in oh), None)
    out = []
    for group, g in oh.groupby("group", sort=False):
        first = g.iloc[0]
        row = {"estimator": first["estimator"], "variant": first["variant"], "batch_size": first.get("batch_size"),
               "c_star": first.get("c_star"), "lam": first.get("lam"), "seeds": len(g), "mixed": mixed(g)}
        if slope_col:
            m, h, _ = mean_ci(pd.to_numeric(g[slope_col], errors="coerce"))
            row.update(drift_slope=m, drift_slope_ci95=h)
        for col, name in (("m_marginal_end", "marginal_end"), ("m_joint_end", "joint_end"), ("m_estimate_end", "estimate_end")):
            if col in g:
                row[name] = mean_ci(pd.to_numeric(g[col], errors="coerce"))[0]
        if "m_explosion_step" in g:
            steps = [s for s in g["m_explosion_step"] if s not in (None, "none") and not _isnan(s)]
            row["explosion_step"] = ", ".join(str(int(float(s))) for s in sorted(steps, key=float)) if steps else "none"
            row["exploded"] = f"{len(steps)}/{len(g)}"
        row["group"] = group
        out.append(row)
    return pd.DataFrame(out)


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _cell(values: Iterable[float]) -> tuple[float, float, int]:
    return mean_ci(pd.to_numeric(pd.Series(list(values)), errors="coerce"))


def reference_table2() -> pd.DataFrame:
    """Choi & Lee Table 2 as published (packaged with mibench)."""
    with resources.files("mibench.reference").joinpath("remine_table2.csv").open() as f:
        return pd.read_csv(f)


def slb_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished SLB/CLB runs with ``setting`` (what differs outside ``estimator.*`` between the configurations
    of one task x dataset) and ``est_variant`` (what differs inside it, lambda aside, per estimator); ``generated``
    is '' on the real data."""
    sl = runs[runs["benchmark"].isin(["slb", "clb"]) & runs["status"].isin(FINISHED)]
    sl = sl.assign(generated=sl["generated"].fillna(""))  # ('': the real data, sorted first)
    sl = sl.assign(setting=variant_labels(sl, ["benchmark", "dataset"], lambda k: not k.startswith("estimator.")))
    return sl.assign(est_variant=variant_labels(sl, ["benchmark", "dataset", "setting", "estimator"],
                                                lambda k: k.startswith("estimator.") and k != "estimator.lam"))


def _variants(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(est_variant, its runs) for each variant in ``runs``; one empty entry when there are none."""
    return [(v, x) for v, x in runs.groupby("est_variant", sort=True)] or [("", runs)]


def table2(runs: pd.DataFrame) -> pd.DataFrame:
    """Choi & Lee Table 2: per task x dataset (x setting) x pair, original vs regularized (its best lambda)."""
    sl = slb_runs(runs)
    if sl.empty or "m_mi_train" not in sl:
        return pd.DataFrame()
    ref = reference_table2()
    out = []
    for (bench, ds, gen, setting), g in sl.groupby(["benchmark", "dataset", "generated", "setting"], sort=True):
        for orig, reg in PAIRS:
            if not g["estimator"].isin([orig, reg]).any():
                continue
            for vo, o in _variants(g[g["estimator"] == orig]):
                for vr, r in _variants(g[g["estimator"] == reg]):
                    row = {"task": bench, "dataset": ds, "generated": gen or None,
                           "loss": orig, "setting": setting, "variant_orig": vo,
                           "variant_reg": vr}
                    out.append({**row, **_pair(o, r, ref[(ref["benchmark"] == bench) & (ref["dataset"] == ds)
                                                           & (ref["estimator"] == orig)])})
    return pd.DataFrame(out)


def true_mi(runs: pd.DataFrame) -> float:
    """The true MI of SLB/CLB runs: their recorded ``true_mi`` (log C), else log C from the dataset's classes."""
    if "m_true_mi" in runs:
        vals = pd.to_numeric(runs["m_true_mi"], errors="coerce").dropna()
        if len(vals):
            return float(vals.iloc[0])
    from .data.cifar import SPECS

    return math.log(SPECS[str(runs["dataset"].iloc[0])].num_classes)


def _pair(o: pd.DataFrame, r_all: pd.DataFrame, ref: pd.DataFrame) -> dict[str, Any]:
    """One Table 2 row's numbers: original runs ``o`` vs the regularized runs ``r_all`` at their best lambda."""
    best_lam, r = None, r_all
    if not r_all.empty:  # the paper picks lambda by the best MI estimation: the mean closest to the true MI
        truth = true_mi(r_all)
        by_lam = {lam: _cell(x["m_mi_train"])[0] for lam, x in r_all.groupby(r_all["lam"].astype(float))}
        best_lam = min(by_lam, key=lambda k: math.inf if math.isnan(by_lam[k]) else abs(by_lam[k] - truth))
        r = r_all[r_all["lam"].astype(float) == best_lam]
    row: dict[str, Any] = {"lambda": best_lam, "mixed": mixed(pd.concat([o, r]))}
    for side, x in (("orig", o), ("reg", r)):
        for metric, col in (("mi", "m_mi_train"), ("acc", "m_test_acc")):
            m, h, n = _cell(x[col]) if col in x and not x.empty else (math.nan, math.nan, 0)
            row.update({f"{metric}_{side}": m, f"{metric}_{side}_ci95": h, f"n_{side}": n})
    for metric in ("mi", "acc"):
        row[f"{metric}_better"], row[f"{metric}_separated"] = compare(
            row[f"{metric}_orig"], row[f"{metric}_orig_ci95"], row[f"{metric}_reg"], row[f"{metric}_reg_ci95"])
    for variant, side in (("original", "orig"), ("regularized", "reg")):
        p = ref[ref["variant"] == variant]
        if len(p):
            row[f"paper_mi_{side}"] = f"{p['mi_mean'].iloc[0]:.3f} ± {p['mi_ci95'].iloc[0]:.3f}"
            row[f"paper_acc_{side}"] = f"{p['test_acc_mean'].iloc[0]:.3f} ± {p['test_acc_ci95'].iloc[0]:.3f}"
    return row


def compare(m1: float, h1: float, m2: float, h2: float) -> tuple[str, bool]:
    """Which mean is higher ('orig', 'reg' or '' on a tie / missing) and whether the intervals are disjoint."""
    if math.isnan(m1) or math.isnan(m2) or m1 == m2:
        return "", False
    better = "reg" if m2 > m1 else "orig"
    if math.isnan(h1) or math.isnan(h2):
        return better, False
    return better, (m1 + h1 < m2 - h2) or (m2 + h2 < m1 - h1)


# the statuses of a run that did not complete, in the failures table's order (its columns: ``no record`` -> no_record)
FAILED = ("diverged", "crashed", "killed", "interrupted", "running", NO_RECORD, INVALID)


def _column(status: str) -> str:
    return status.replace(" ", "_")


def missing_seeds(g: pd.DataFrame) -> list[int]:
    """The missing seeds of one configuration's runs ``g``: those their own sweeps asked for (``requested``, see
    :class:`SweepSeeds`) that none of them has; never a seed only another configuration or sweep asked for."""
    want = set().union(*map(set, g["requested"])) if "requested" in g else set()
    return sorted(want - set(g["seed"].dropna().astype(int)))


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Per config: the seeds of each FAILED status (diverged, crashed, killed, ..., invalid) and the missing ones
    (:func:`missing_seeds`)."""
    if runs.empty:
        return pd.DataFrame()
    out = []
    runs = runs.assign(variant=variant_labels(runs, ["benchmark", "dataset", "estimator", "critic", "lam"]))
    for group, g in runs.groupby("group", sort=False):
        first = g.iloc[0]
        seeds = lambda st: sorted(int(s) for s in g.loc[g["status"] == st, "seed"].dropna())  # noqa: E731
        row = {"benchmark": first.get("benchmark"), "dataset": dataset_label(first),
               "estimator": first.get("estimator"), "variant": first["variant"], "critic": first.get("critic"),
               "lam": first.get("lam"), "completed": len(seeds("completed")),
               **{_column(st): seeds(st) for st in FAILED},
               "missing": missing_seeds(g)}
        if (g["status"] != "completed").any() or row["missing"]:
            told = g["status"].isin(("crashed", INVALID)) & g.get("error", pd.Series(None, index=g.index)).notna()
            errs = g.loc[told, "error"].unique().tolist()
            row["errors"] = "; ".join(errs)
            out.append(row)
    return pd.DataFrame(out)


def bmi_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the ``samples`` benchmark with ``task`` (the Beyond-Normal task id, or the sample file's name with as
    much of its folder as tells two files apart), ``setting`` (the ``dataset.*`` keys that differ between the
    configurations of one task) and ``variant`` (the other keys that differ between those of one estimator)."""
    sm = runs[runs["benchmark"] == "samples"]
    if sm.empty:
        return sm
    sm = sm.assign(task=_tasks(sm))
    sm = sm.assign(setting=variant_labels(sm, ["task"], lambda k: k.startswith("dataset.")))
    return sm.assign(variant=variant_labels(sm, ["estimator"], lambda k: not k.startswith("dataset.")))


def _tasks(runs: pd.DataFrame) -> pd.Series:
    """Per run: ``dataset.task``, else the label of ``dataset.path`` (see :func:`file_labels`), else the dataset
    and the configuration's hash."""
    configs = [c if isinstance(c, dict) else {} for c in runs["config"]]
    files = file_labels(c["dataset.path"] for c in configs if c.get("dataset.path"))
    return pd.Series([c.get("dataset.task") or files.get(c.get("dataset.path")) or f"{ds} (config {str(grp)[:8]})"
                      for c, ds, grp in zip(configs, runs["dataset"], runs["group"])], index=runs.index, dtype=object)


def file_labels(paths: Iterable[str]) -> dict[str, str]:
    """Per path: its file name, or the shortest tail of it that no other of ``paths`` ends with
    (``/a/pairs.npz``, ``/b/pairs.npz`` -> ``a/pairs.npz``, ``b/pairs.npz``)."""
    parts = {p: Path(p).parts for p in set(paths)}
    out = {}
    for p, ps in parts.items():
        k = next((k for k in range(1, len(ps)) if all(q[-k:] != ps[-k:] for o, q in parts.items() if o != p)), len(ps))
        out[p] = str(Path(*ps[-k:]))
    return out


def bmi_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The Beyond-Normal table (Czyż et al. 2023): one row per task x configuration, seeds pooled.

    ``mean`` / ``sd``: over seeds of the best held-out estimate over evaluation points (the protocol's reported
    value); ``final_mean``: of the last evaluation's; ``rel_error`` = (mean - true) / true and ``abs_error`` =
    |mean - true| (NaN without a true MI); ``seeds``: finished runs (completed or diverged) with a finite
    estimate, of ``runs``; ``diverged`` / ``crashed``: how many runs ended so."""
    sm = bmi_runs(runs)
    out = [{**_bmi_row(g), "group": group} for group, g in sm.groupby("group", sort=False)]
    if not out:
        return pd.DataFrame()
    bt = pd.DataFrame(out)
    key = bt.apply(lambda r: (_task_order(r["task"], r["dataset"]), r["setting"], _estimator_order(r["estimator"]),
                              r["variant"]), axis=1)
    return bt.loc[sorted(bt.index, key=key.get)].reset_index(drop=True)


def _bmi_row(g: pd.DataFrame) -> dict[str, Any]:
    """One configuration's numbers (see :func:`bmi_table`)."""
    first, done = g.iloc[0], g[g["status"].isin(FINISHED)]
    best, truth = _finite(done, "m_best_test_estimate"), _finite(g, "m_true_mi").mean()
    m = best.mean()
    return {"task": first["task"], "setting": first["setting"], "dataset": first["dataset"], "true_mi": truth,
            "estimator": first["estimator"], "variant": first["variant"], "critic": first["critic"],
            "seeds": len(best), "runs": len(g), "mean": m, "sd": best.std(ddof=1),
            "final_mean": _finite(done, "m_test_estimate").mean(),
            "rel_error": (m - truth) / truth if truth else math.nan, "abs_error": abs(m - truth),
            "wall_time_s": _finite(done, "wall_time_s").mean(),
            "stopped_early": int(done["m_stopped_early"].eq(True).sum()) if "m_stopped_early" in done else 0,
            "diverged": int((g["status"] == "diverged").sum()), "crashed": int((g["status"] == "crashed").sum()),
            "mixed": mixed(done)}


def _finite(g: pd.DataFrame, col: str) -> pd.Series:
    """The finite numbers of column ``col`` (none when it is absent)."""
    x = pd.to_numeric(g[col], errors="coerce") if col in g else pd.Series(dtype=float)
    return x[np.isfinite(x)]


def _task_order(task: str, dataset: str) -> tuple[bool, list[Any]]:
    """Beyond-Normal tasks before sample files, each in natural order (``dense-5-5`` before ``dense-25-25``)."""
    return dataset != "bmi", [int(p) if p.isdigit() else p.casefold() for p in re.split(r"(\d+)", task)]


# ----------------------------------------------------------------------------------------- rendering
def _fmt(m: float, h: float) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.3f} ± {h:.3f}" if not math.isnan(h) else f"{m:.3f}"


def _mark(text: str, bold: bool, sep: bool, latex: bool) -> str:
    if latex:
        text = text.replace("±", r"$\pm$")
        if bold:
            text = rf"\textbf{{{text}}}"
        return text + (r"$^\dagger$" if sep else "")
    return (f"**{text}**" if bold else text) + ("†" if sep else "")


def render_table2(t2: pd.DataFrame, latex: bool = False) -> str:
    head = ["Task", "Dataset", "Loss", "λ", "MI orig", "MI reg", "Acc orig", "Acc reg",
            "paper MI orig", "paper MI reg", "paper Acc orig", "paper Acc reg", "seeds"]
    lines = []
    for _, r in t2.iterrows():
        cells = [r["task"].upper(), dataset_label({**r, "dataset": r["dataset"].upper().replace("CIFAR", "CIFAR-")}),
                 _loss_label(r),
                 "–" if r["lambda"] is None or _isnan(r["lambda"]) else f"{r['lambda']:g}"]
        for metric in ("mi", "acc"):
            for side in ("orig", "reg"):
                cells.append(_mark(_fmt(r[f"{metric}_{side}"], r[f"{metric}_{side}_ci95"]),
                                   r[f"{metric}_better"] == side, r[f"{metric}_separated"] and r[f"{metric}_better"] == side,
                                   latex))
        for key in ("paper_mi_orig", "paper_mi_reg", "paper_acc_orig", "paper_acc_reg"):
            v = r.get(key)
            cells.append((v.replace("±", r"$\pm$") if latex else v) if isinstance(v, str) else "–")
        cells.append(f"{r['n_orig']}/{r['n_reg']}")
        lines.append(cells)
    return _render(head, lines, latex)


def _loss_label(r: pd.Series) -> str:
    """'MINE', or with what sets this row apart: 'MINE (benchmark.epochs=3; ReMINE: estimator.c_star=1)'."""
    name = LABEL.get(r["loss"], r["loss"])
    parts = [_text(r, "setting"), f"{name}: {_text(r, 'variant_orig')}" if _text(r, "variant_orig") else "",
             f"Re{name}: {_text(r, 'variant_reg')}" if _text(r, "variant_reg") else ""]
    text = "; ".join(p for p in parts if p)
    return name + (f" ({text})" if text else "") + (MIXED if _text(r, "mixed") else "")


def _text(r: pd.Series, key: str) -> str:
    """A label column's value, '' where it is absent or missing."""
    v = r.get(key)
    return v if isinstance(v, str) else ""


def _labelled(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its estimator cells naming their variant and marked where the row mixes versions."""
    def label(r: pd.Series) -> str:
        variant = f" ({_text(r, 'variant')})" if _text(r, "variant") else ""
        return (_text(r, "estimator") or NONE) + variant + (MIXED if _text(r, "mixed") else "")

    return df.assign(estimator=df.apply(label, axis=1)) if len(df) else df


def mixed_note(df: pd.DataFrame, name: Callable[[pd.Series], str]) -> str:
    """The note under a table naming its rows that pool different versions or conventions ('' if none)."""
    if "mixed" not in df:
        return ""
    rows = dict.fromkeys(f"{name(r)}: {r['mixed']}" for _, r in df.iterrows() if _text(r, "mixed"))
    if not rows:
        return ""
    return (f"\n{MIXED} pools runs of different mibench / torch versions or conventions (compare with care):\n\n"
            + "".join(f"- {r}\n" for r in rows))


# how each table's mixed note names a row
ROW_NAMES: dict[str, Callable[[pd.Series], str]] = {
    "table2": lambda r: f"{r['task'].upper()} {dataset_label(r)} {_loss_label(r).rstrip(MIXED)}",
    "staircase": lambda r: f"{r['estimator'].rstrip(MIXED)} ({r['dataset']}, {r['critic']})",
    "onehot": lambda r: r["estimator"].rstrip(MIXED),
    "bmi": lambda r: f"{_bmi_task(r)} / {_bmi_estimator(r)}",
}


def table_notes(table: str, shown: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The notes under ``table`` (a key of TABLE_BENCHMARKS) as shown (``shown``, its rows), made from ``runs``:
    the rows that pool different versions or conventions, and the compute environments its runs mix."""
    return mixed_note(shown, ROW_NAMES[table]) + environment_note(runs, table)


def _tex(cell: str) -> str:
    """A Markdown cell or header as LaTeX text."""
    return cell.replace("_", r"\_").replace("λ", r"$\lambda$").replace(MIXED, r"$^\ddagger$")


def _render(head: list[str], lines: list[list[str]], latex: bool) -> str:
    if latex:
        body = "\n".join(" & ".join(_tex(c) for c in row) + r" \\" for row in lines)
        return ("\\begin{tabular}{" + "l" * len(head) + "}\n\\toprule\n"
                + " & ".join(_tex(h) for h in head) + " \\\\\n\\midrule\n" + body
                + "\n\\bottomrule\n\\end{tabular}\n")
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(row) + " |" for row in lines]) + "\n"


BMI_TEX = ("% Beyond-Normal and sample-file runs: mean ± sd over seeds of the best held-out estimate. Cells\n"
           "% coloured by the relative error (mean - true MI) / true MI: blue below, red above, deepest (60 %)\n"
           "% from 100 % on, none without a true MI. \\cellcolor is colortbl's: \\usepackage[table]{xcolor}.\n")


def _bmi_task(r: pd.Series) -> str:
    return r["task"] + (f" ({r['setting']})" if _text(r, "setting") else "")


def _bmi_estimator(r: pd.Series) -> str:
    return r["estimator"] + (f" ({r['variant']})" if _text(r, "variant") else "")


def _bmi_grid(bt: pd.DataFrame) -> tuple[list[tuple[str, float]], list[str], dict[tuple[str, str], pd.Series]]:
    """:func:`bmi_table` as task x estimator: rows (label, true MI) in the table's order, estimator columns in
    Choi & Lee's order, and the table row of each (row, column) that has runs."""
    rows: dict[str, float] = {}
    for _, r in bt.iterrows():
        if math.isnan(rows.get(_bmi_task(r), math.nan)):
            rows[_bmi_task(r)] = r["true_mi"]
    cols = sorted({(_estimator_order(r["estimator"]), _text(r, "variant"), _bmi_estimator(r))
                   for _, r in bt.iterrows()})
    return list(rows.items()), [c[-1] for c in cols], {(_bmi_task(r), _bmi_estimator(r)): r for _, r in bt.iterrows()}


def _bmi_cell(r: pd.Series, latex: bool = False) -> str:
    """``mean ± sd``, ``‡`` where it pools versions, ``[n/N]`` where only n of its N runs gave an estimate."""
    text = _fmt(r["mean"], r["sd"]) + (MIXED if _text(r, "mixed") else "")
    text += f" [{r['seeds']}/{r['runs']}]" if r["seeds"] < r["runs"] else ""
    return _tex_color(r["rel_error"]) + text.replace("±", r"$\pm$") if latex else text


def _tex_color(rel: float) -> str:
    """The ``\\cellcolor`` of a relative error: blue under, red over the true MI, deeper with |error| up to 100 %."""
    pct = 0 if math.isnan(rel) else round(60 * min(abs(rel), 1.0))
    return rf"\cellcolor{{{'red' if rel > 0 else 'blue'}!{pct}}}" if pct else ""


def render_bmi(bt: pd.DataFrame, latex: bool = False) -> str:
    """The Beyond-Normal task x estimator table: mean ± sd per cell; in LaTeX coloured by relative error."""
    rows, cols, cells = _bmi_grid(bt)
    lines = [[task, "–" if math.isnan(truth) else f"{truth:.3f}"]
             + [_bmi_cell(cells[task, c], latex) if (task, c) in cells else "" for c in cols] for task, truth in rows]
    return _render(["Task", "true MI"] + cols, lines, latex)


def _df_lines(df: pd.DataFrame, cols: list[str]) -> list[list[str]]:
    def f(v: Any) -> str:
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.3f}"
        if isinstance(v, list):
            return ",".join(map(str, v)) if v else ""
        return "–" if v is None else str(v)

    return [[f(r[c]) for c in cols] for _, r in df.iterrows()]


STAIR_COLS = ["dataset", "critic", "estimator", "lam", "seeds", "true_mi", "mean", "median", "bias", "variance", "mse",
              "nonfinite"]
ONEHOT_COLS = ["estimator", "batch_size", "lam", "c_star", "seeds", "drift_slope", "drift_slope_ci95", "estimate_end", "marginal_end",
               "explosion_step", "exploded"]
FAIL_COLS = ["benchmark", "dataset", "estimator", "critic", "lam", "completed", *map(_column, FAILED), "missing",
             "errors"]


# ----------------------------------------------------------------------------------------- figures
def staircase_grid(runs: pd.DataFrame, path: Path) -> bool:
    """All staircase estimators on one grid (first seed of each configuration): a row per dataset x critic x step
    budget, labelled with all three, each panel's x-axis its own run's steps (runs of 1,000 and 10,000 steps are
    never squeezed onto one axis); a column per estimator (the same estimator in the same column in every row;
    rows wrap after 6 columns)."""
    st = runs[(runs["benchmark"] == "staircase") & runs["status"].isin(FINISHED)].sort_values("seed")
    st = st.drop_duplicates("group")
    first_steps = {d: _steps(d) for d in st["run_dir"]}
    st = st[[first_steps[d] is not None for d in st["run_dir"]]]
    if st.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = st.assign(budget=[len(first_steps[d]) for d in st["run_dir"]])
    st = st.assign(variant=variant_labels(st, ["dataset", "critic", "budget", "estimator"]))
    groups = sorted(st[["dataset", "critic", "budget"]].drop_duplicates().itertuples(index=False, name=None))
    ests = list(dict.fromkeys(sorted(st[["estimator", "variant"]].itertuples(index=False, name=None),
                                     key=lambda ev: (_estimator_order(ev[0]), ev[1]))))
    ncols = min(len(ests), 6)  # wrap: original / regularized pairs side by side, 6 panels a row
    per_group = math.ceil(len(ests) / ncols)
    fig, axes = plt.subplots(per_group * len(groups), ncols, figsize=(2.7 * ncols + 1.0, 2.4 * per_group * len(groups)
                                                                       + 0.7), dpi=100, squeeze=False)
    labels: dict[int, str] = {}
    for g, (ds, crit, steps_budget) in enumerate(groups):
        for ax, (est, var) in zip(axes[g * per_group:(g + 1) * per_group].flat, ests):
            hit = st[(st["dataset"] == ds) & (st["critic"] == crit) & (st["budget"] == steps_budget)
                     & (st["estimator"] == est) & (st["variant"] == var)]
            if hit.empty:
                ax.set_axis_off()
                continue
            first = hit.iloc[0]
            bs = int(first["batch_size"]) if est in INFONCE_LIKE and first.get("batch_size") else None
            steps = first_steps[first["run_dir"]]
            draw_staircase(ax, steps, int(first.get("ema_span") or 200), bs, legend=False)
            ax.set_xlim(0, max(1, len(steps) - 1))
            ax.set_xlabel("step", fontsize=8, labelpad=1)
            ax.tick_params(labelsize=7)
            ax.set_title(_wrap(f"{est} ({var})" if var else est), fontsize=9)
            labels[g] = f"{ds}, {crit} critic\n{budget(steps)}\nMI (nats)"
        for ax in list(axes[g * per_group:(g + 1) * per_group].flat)[len(ests):]:
            ax.set_axis_off()
    for i, row in enumerate(axes):  # each row's label (dataset, critic, step budget) on its first drawn panel
        drawn = [ax for ax in row if ax.axison]
        if drawn:
            drawn[0].set_ylabel(labels[i // per_group], fontsize=8)
    fig.suptitle("Estimate (light: raw, dark: EMA) vs true MI (black); InfoNCE's log batch dashed; rows: dataset, "
                 "critic, steps", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def budget(steps: pd.DataFrame) -> str:
    """A staircase run's step budget (its steps.csv), as its grid row says it: '5,000 steps (5 levels x 1,000)'."""
    levels = steps["level"].nunique()
    per = len(steps) // max(1, levels)
    return f"{len(steps):,} steps ({levels} level{'s' if levels > 1 else ''} x {per:,})"


def _wrap(text: str, width: int = 32) -> str:
    """A panel title broken into lines that fit above its panel."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _estimator_order(name: str) -> tuple[int, bool, str]:
    """Choi & Lee's order, each original followed by its regularized version."""
    regularized = name.startswith("re") and name[2:] in LABEL
    base = name[2:] if regularized else name
    order = [p[0] for p in PAIRS]
    return (order.index(base) if base in order else len(order), regularized, name)


def lambda_ablation(runs: pd.DataFrame, path: Path) -> bool:
    """Choi & Lee Fig. 6: MI estimate and test accuracy vs lambda per regularized estimator (± 95% CI)."""
    sl = slb_runs(runs)
    sl = sl[sl["lam"].notna()]
    if sl.empty or "m_mi_train" not in sl:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted(sl[["benchmark", "dataset", "generated", "setting"]].drop_duplicates().itertuples(index=False,
                                                                                                  name=None))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 6.5), dpi=100, squeeze=False)
    for j, (bench, ds, gen, setting) in enumerate(panels):
        g = sl[(sl["benchmark"] == bench) & (sl["dataset"] == ds) & (sl["generated"] == gen) & (sl["setting"] == setting)]
        for (est, var), e in g.groupby(["estimator", "est_variant"], sort=True):
            stats = sorted((float(lam), _cell(x["m_mi_train"]), _cell(x["m_test_acc"])) for lam, x in e.groupby("lam"))
            lams = [s[0] for s in stats]
            for i, k in enumerate((1, 2)):
                m = np.array([s[k][0] for s in stats])
                h = np.nan_to_num(np.array([s[k][1] for s in stats]))
                axes[i][j].errorbar(lams, m, yerr=h, marker="o", capsize=3, label=f"{est} ({var})" if var else est)
        for i, what in enumerate(("MI estimate (nats)", "test accuracy")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_xlabel("λ")
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
        title = f"{bench.upper()} {dataset_label({'dataset': ds, 'generated': gen})}"
        axes[0][j].set_title(title + (f"\n{_wrap(setting, 50)}" if setting else ""), fontsize=10)
        axes[0][j].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    return True


def bmi_suite(bt: pd.DataFrame, path: Path) -> bool:
    """The Beyond-Normal paper's table as a heat map (from :func:`bmi_table`): tasks (with their true MI) as rows,
    estimators as columns, each cell coloured by its relative error (diverging, centred at 0, clipped to ±1;
    grey without a true MI or an estimate, white without runs) and labelled mean ± sd over seeds."""
    if bt.empty:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols, cells = _bmi_grid(bt)
    cmap, norm = plt.get_cmap("RdBu_r"), matplotlib.colors.Normalize(-1, 1)
    rgba = np.ones((len(rows), len(cols), 4))
    fig, ax = plt.subplots(figsize=(3.4 + 1.25 * len(cols), max(3.0, 1.8 + 0.36 * len(rows))), dpi=100,
                           layout="constrained")
    for i, (task, _) in enumerate(rows):
        for j, col in enumerate(cols):
            r = cells.get((task, col))
            if r is None:
                continue
            rel = float(r["rel_error"])
            rgba[i, j] = (0.85, 0.85, 0.85, 1.0) if math.isnan(rel) else cmap(norm(np.clip(rel, -1, 1)))
            ax.text(j, i, _bmi_text(r), ha="center", va="center", fontsize=8,
                    color="white" if abs(rel) > 0.6 else "black")
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(cols)), [_wrap(c, 20) for c in cols], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(rows)), [f"{t}  ({'no true MI' if math.isnan(m) else f'{m:.2f}'})" for t, m in rows],
                  fontsize=8)
    ax.set_xticks(np.arange(len(cols) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="both", length=0)
    ax.set_ylabel("task  (true MI, nats)")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm, cmap), ax=ax, extend="both", fraction=0.04,
                       pad=0.02, aspect=max(20, 2 * len(rows)))
    bar.set_label("relative error, clipped to ±1", fontsize=8)
    bar.ax.tick_params(labelsize=8)
    fig.suptitle("Best held-out estimate: mean ± sd over seeds\ncolour: (mean − true MI) / true MI", fontsize=9)
    save_figure(fig, path)
    return True


def _bmi_text(r: pd.Series) -> str:
    """A heat-map cell: mean over ± sd (one seed: the mean), marked like :func:`_bmi_cell`."""
    text = "–" if math.isnan(r["mean"]) else f"{r['mean']:.2f}" + (MIXED if _text(r, "mixed") else "")
    lower = "" if math.isnan(r["sd"]) else f"± {r['sd']:.2f}"
    if r["seeds"] < r["runs"]:
        lower = f"{lower} [{r['seeds']}/{r['runs']}]".strip()
    return f"{text}\n{lower}" if lower else text


# ----------------------------------------------------------------------------------------- command
def tolerant(problems: list[str], what: str, make: Callable[[], Any], default: Any) -> Any:
    """``make()``, or ``default`` and a line in ``problems`` when it fails (a page of broken runs shows the rest)."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 -- said on the page, never a crash
        problems.append(f"Could not make {what}: {type(e).__name__}: {first_line(e)}")
        return default


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


def build(root: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write leaderboard.md / .tex, one CSV per table and the figures under ``out``; return what was made."""
    root = Path(root)
    out = Path(out) if out is not None else root / "leaderboard"
    runs, skipped = load(root, out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    md, tex = [f"# mibench leaderboard\n\n{status_line(runs, skipped)} under `{root}`.\n"], []
    made: dict[str, Any] = {"runs": runs, "skipped": skipped}

    t2 = tolerant(problems, "Table 2", lambda: table2(runs), pd.DataFrame())
    if not t2.empty:
        atomic_write_csv(out / "table2.csv", t2)
        md += ["\n## SLB / CLB (Choi & Lee Table 2)\n\nMean ± 95% CI over seeds (Student t); **bold**: the better of "
               "the pair; †: the intervals do not overlap; λ: the regularized loss's λ with the best MI estimate "
               "(mean closest to the true MI log C). "
               "MI = last-epoch training estimate, negatives clipped to 0.\n\n", render_table2(t2),
               table_notes("table2", t2, runs)]
        tex += ["% Choi & Lee Table 2\n", render_table2(t2, latex=True)]
        made["table2"] = t2
    st = tolerant(problems, "the staircase table", lambda: staircase_table(runs), pd.DataFrame())
    if not st.empty:
        atomic_write_csv(out / "staircase.csv", st)
        shown = _labelled(st)
        md += ["\n## Staircase\n\nAll steps of all seeds of a level pooled. The median resists the rare huge "
               "negative spikes of single-sample bounds (NWJ, JS).\n\n",
               _render(STAIR_COLS, _df_lines(shown, STAIR_COLS), False),
               table_notes("staircase", shown, runs)]
        tex += ["% staircase\n", _render(STAIR_COLS, _df_lines(shown, STAIR_COLS), True)]
        made["staircase"] = st
    oh = tolerant(problems, "the one-hot table", lambda: onehot_table(runs), pd.DataFrame())
    if not oh.empty:
        atomic_write_csv(out / "onehot.csv", oh)
        cols = [c for c in ONEHOT_COLS if c in oh]
        shown = _labelled(oh)
        md += ["\n## One-hot drift and explosion (Choi & Lee §3-4)\n\n", _render(cols, _df_lines(shown, cols), False),
               table_notes("onehot", shown, runs)]
        tex += ["% one-hot\n", _render(cols, _df_lines(shown, cols), True)]
        made["onehot"] = oh
    bt = tolerant(problems, "the Beyond-Normal table", lambda: bmi_table(runs), pd.DataFrame())
    if not bt.empty:
        atomic_write_csv(out / "bmi.csv", bt)
        md += ["\n## Beyond-Normal and sample-file runs\n\nMean ± sd over seeds of the best held-out estimate over "
               "evaluation points (the Beyond-Normal protocol, Czyż et al. 2023) beside the true MI (– where a sample "
               "file has none). The final evaluation's estimate, relative errors, wall times and failure counts are "
               "in `bmi.csv`. [n/N]: n of the configuration's N runs gave an estimate (the others are in the "
               "failures table); diverged runs count with the best estimate they recorded.\n\n", render_bmi(bt),
               table_notes("bmi", bt, runs)]
        tex += [BMI_TEX, render_bmi(bt, latex=True)]
        made["bmi"] = bt
    fl = tolerant(problems, "the failures table", lambda: failures(runs), pd.DataFrame())
    md.append("\n## Crashed, diverged, killed, invalid and missing runs\n\n")
    if fl.empty:
        md.append("None: every run completed.\n")
    else:
        fl = fl.reindex(columns=FAIL_COLS + ["variant"])
        atomic_write_csv(out / "failures.csv", fl.astype({c: str for c in FAIL_COLS if c not in ("lam", "completed")}))
        md.append(_render(FAIL_COLS, _df_lines(_labelled(fl), FAIL_COLS), False))
    made["failures"] = fl
    if len(skipped):
        atomic_write_csv(out / "skipped.csv", skipped)
        md.append(f"\n## Skipped\n\n{SKIPPED_NOTE}\n\n"
                  + _render(["path", "reason"], [[c.replace("|", "\\|") for c in r] for r in skipped.values.tolist()],
                            False))
    figs = [name for name, draw in (("staircase_grid.png", lambda p: staircase_grid(runs, p)),
                                    ("lambda_ablation.png", lambda p: lambda_ablation(runs, p)),
                                    ("bmi_suite.png", lambda p: bmi_suite(bt, p)))
            if tolerant(problems, name, lambda: draw(out / name), False)]
    if figs:
        md.append("\n## Figures\n\n" + "\n".join(f"![{f}]({f})" for f in figs) + "\n")
    made["figures"] = [out / f for f in figs]
    md[1:1] = [f"\n{p}\n" for p in problems]
    atomic_write_text(out / "leaderboard.md", "".join(md))
    atomic_write_text(out / "leaderboard.tex", "".join(tex) or "% no SLB/CLB, staircase, one-hot or samples runs\n")
    atomic_write_csv(out / "runs.csv", runs.drop(columns=[c for c in ("levels", "config") if c in runs]))
    made["out"] = out
    return made


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="mibench leaderboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", default=os.environ.get("MIBENCH_RUNS", "runs"), help="folder of runs (default: runs/)")
    p.add_argument("--out", default=None, help="where to write (default: <runs>/leaderboard)")
    a = p.parse_args(argv)
    made = build(a.runs, a.out)
    print((made["out"] / "leaderboard.md").read_text())
    print(f"written: {made['out']}/leaderboard.md, leaderboard.tex, *.csv" +
          "".join(f", {f.name}" for f in made["figures"]))


if __name__ == "__main__":
    main()
