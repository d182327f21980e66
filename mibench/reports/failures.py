"""The failures table: per configuration, the seeds that crashed, diverged, were killed, are invalid or missing
(requested by their sweep, never started); the same runs the report lists one by one."""
from __future__ import annotations

import pandas as pd

from ..records import INVALID, NO_RECORD
from .runs import dataset_label, missing_seeds
from .tables import variant_labels

# the statuses of a run that did not complete, in the failures table's order (its columns: ``no record`` -> no_record)
FAILED = ("diverged", "crashed", "killed", "interrupted", "running", NO_RECORD, INVALID)

def _column(status: str) -> str:
    return status.replace(" ", "_")

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

FAIL_COLS = ["benchmark", "dataset", "estimator", "critic", "lam", "completed", *map(_column, FAILED), "missing",
             "errors"]
