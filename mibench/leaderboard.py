"""Leaderboard: scan a folder of runs and write every paper's tables (Markdown, LaTeX, CSV) and figures.

    python -m mibench.leaderboard runs/ [--out runs/leaderboard]      (also: mibench leaderboard runs/)

This module only dispatches: the runs are read by the one loader (:mod:`mibench.reports.runs`), each paper's
tables, figures and published numbers are its module's in :mod:`mibench.reports` (Poole et al.: staircase Fig. 2,
optimal critic Fig. 3, gradients Fig. 4, dSprites Fig. 5, sandwich §2.5; Choi & Lee: SLB / CLB Table 2, λ ablation
Fig. 6, one-hot §3-4; η-MINE: Fig. 3a, MI-GAN Fig. 3b, layer-pair Table 2, Jigsaw Table 3; Deep InfoMax Table 1;
Beyond-Normal), and the failures table (crashed, diverged, killed and missing runs, naming the seeds of each
configuration) is :mod:`mibench.reports.failures`. A table is written only when such runs exist: ``<key>.csv``,
its section in ``leaderboard.md`` and ``leaderboard.tex``, and its figures (PNG) beside it.

Runs on GENERATED data (their record's ``generated_data``) are never pooled with real runs and are labelled so in
every row and title. A configuration is everything that can change its numbers (the record's ``variant_hash``):
seeds of one configuration are pooled (mean ± sd, or ± 95% interval where the paper gives one), any other
difference makes a row of its own, labelled with the config keys that differ (``smile (estimator.clip=5)``). A
row pooling runs of different mibench or torch versions or conventions is marked ``‡`` and named in a note.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd

from .records import EMPTY_RUN_DIR, INVALID, NO_RECORD  # noqa: F401 -- re-exported
from .reports import Section, sections
from .reports.choi_lee import (LABEL, ONEHOT_COLS, _loss_label, _pair, compare, estimator_order,  # noqa: F401
                               lambda_ablation, onehot_table, pairs, reference_table2, render_table2, slb_runs,
                               table2, true_mi)
from .reports.czyz import BMI_TEX, bmi_runs, bmi_suite, bmi_table, file_labels, render_bmi  # noqa: F401
from .reports.failures import FAIL_COLS, FAILED, failures  # noqa: F401
from .reports.poole import STAIR_COLS, budget, staircase_grid, staircase_table  # noqa: F401
from .reports.runs import (ENV_FIELDS, FINISHED, GENERATED, MISSING_TEXT, SKIPPED_NOTE, SweepSeeds,  # noqa: F401
                           count_missing, dataset_label, generated_data, load, load_runs, missing_seeds, relative,
                           scan, status_line, sweep_seeds)
from .reports.tables import (MIXED, NONE, _df_lines, _label, _labelled, _render, differences, environment_note,  # noqa: F401
                             mixed, mixed_note, tolerant, variant_labels)
from .results import atomic_write_csv, atomic_write_text

PAIRS = list(pairs())  # (original, regularized) from the estimator registry, Choi & Lee's Table 2 order
_estimator_order = estimator_order


def build(root: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Write leaderboard.md / .tex, one CSV per paper table and every section's figures under ``out`` (default
    ``<root>/leaderboard``); return what was made (``made[<section key>]``: its table)."""
    root = Path(root)
    out = Path(out) if out is not None else root / "leaderboard"
    runs, skipped = load(root, out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    md, tex = [f"# mibench leaderboard\n\n{status_line(runs, skipped)} under `{root}`.\n"], []
    made: dict[str, Any] = {"runs": runs, "skipped": skipped, "figures": []}
    for s in sections():
        table = tolerant(problems, f"the {s.title} table", lambda: s.make(runs), pd.DataFrame())
        if table.empty:
            continue
        text = tolerant(problems, f"the {s.title} table", lambda: section_text(s, table, runs), None)
        if text is None:
            continue
        made[s.key] = table
        atomic_write_csv(out / f"{s.key}.csv", table)
        drawn = [f.name for f in s.figures
                 if tolerant(problems, f.name, lambda f=f: f.draw(runs, table, out / f.name), False)]
        md += [text[0], *(f"\n![{name}]({name})\n" for name in drawn)]
        tex.append(text[1])
        made["figures"] += [out / name for name in drawn]
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
    md[1:1] = [f"\n{p}\n" for p in problems]
    atomic_write_text(out / "leaderboard.md", "".join(md))
    atomic_write_text(out / "leaderboard.tex", "".join(tex) or "% no run of a paper's table\n")
    atomic_write_csv(out / "runs.csv", runs.drop(columns=[c for c in ("levels", "config") if c in runs]))
    made["out"] = out
    return made


def section_text(s: Section, table: pd.DataFrame, runs: pd.DataFrame) -> tuple[str, str]:
    """A section's Markdown (heading, intro, table, notes) and LaTeX (comment, table) from its table."""
    shown = s.shown(table)
    head = f"\n## {s.title}\n\n" + (f"{s.intro}\n\n" if s.intro else "")
    return head + s.render(shown, False) + s.notes(shown, runs), s.tex + s.render(shown, True)


def table_notes(table: str, shown: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The notes under section ``table`` (its key) as shown (``shown``, its rows), made from ``runs``."""
    return next(s for s in sections() if s.key == table).notes(shown, runs)


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
