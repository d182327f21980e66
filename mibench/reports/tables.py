"""What every paper's table shares: configurations and their labels, the notes under a table, cells, Markdown /
LaTeX rendering, and :class:`Section`, the unit that a paper module declares and that the leaderboard and the
report dispatch to (one table, its CSV, its notes and its figures)."""
from __future__ import annotations

import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from ..records import NOT_VARIANT
from ..results import first_line, save_figure
from ..stats import mean_ci
from .runs import ENV_FIELDS, finished

NONE = "–"  # a cell with nothing to show (no estimator where a benchmark uses none, a missing number)
MIXED = "‡"


def environment_note(runs: pd.DataFrame, benchmarks: tuple[str, ...]) -> str:
    """One line under a table of ``benchmarks`` (a :class:`Section`'s) when the runs it pools come from more than one
    compute environment (ENV_FIELDS of their records' ``machine``): how many, each differing field's values with
    their numbers of runs, and the runs whose record has no ``machine`` (one more environment: unknown); ''
    when they share one."""
    cols = [f"env_{k}" for k in ENV_FIELDS]
    used = finished(runs, benchmarks)
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




def _cell(values: Iterable[float]) -> tuple[float, float, int]:
    return mean_ci(pd.to_numeric(pd.Series(list(values)), errors="coerce"))




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


# what a cell or header may hold beyond ASCII, as LaTeX (pdflatex has no η, −, → in text mode)
TEX = {"_": r"\_", "%": r"\%", "λ": r"$\lambda$", MIXED: r"$^\ddagger$", "±": r"$\pm$", "−": r"$-$", "–": "--",
       "→": r"$\to$", "Δ": r"$\Delta$", "α": r"$\alpha$", "η": r"$\eta$", "†": r"$^\dagger$", "²": r"$^2$"}


def _tex(cell: str) -> str:
    """A Markdown cell or header as LaTeX text (ASCII: TEX's characters as LaTeX; LaTeX the cell already holds,
    ``$\pm$``, ``\textbf{..}``, ``\cellcolor{..}``, is kept)."""
    return "".join(TEX.get(c, c) for c in cell)


def _render(head: list[str], lines: list[list[str]], latex: bool) -> str:
    if latex:
        body = "\n".join(" & ".join(_tex(c) for c in row) + r" \\" for row in lines)
        return ("\\begin{tabular}{" + "l" * len(head) + "}\n\\toprule\n"
                + " & ".join(_tex(h) for h in head) + " \\\\\n\\midrule\n" + body
                + "\n\\bottomrule\n\\end{tabular}\n")
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(row) + " |" for row in lines]) + "\n"




def _df_lines(df: pd.DataFrame, cols: list[str]) -> list[list[str]]:
    def f(v: Any, col: str = "") -> str:
        if col in WHOLE and isinstance(v, float) and v.is_integer():
            return str(int(v))
        if isinstance(v, float):
            return "–" if math.isnan(v) else f"{v:.3f}"
        if isinstance(v, list):
            return ",".join(map(str, v)) if v else ""
        return "–" if v is None else str(v)

    return [[f(r[c], c) for c in cols] for _, r in df.iterrows()]


WHOLE = ("batch_size", "seeds", "level", "completed")  # columns of whole numbers (a float column after a NaN)




def _wrap(text: str, width: int = 32) -> str:
    """A panel title broken into lines that fit above its panel."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)





# ----------------------------------------------------------------------------------------- sections
Draw = Callable[[pd.DataFrame, pd.DataFrame, Path], bool]  # (runs, the section's table, path) -> drawn?


@dataclass(frozen=True)
class Figure:
    """A figure of a section: its file name in the leaderboard folder and how to draw it."""

    name: str
    draw: Draw


@dataclass(frozen=True)
class Section:
    """One paper's table (and figures) over the runs of its benchmarks.

    ``make(runs)`` -> the table (written as ``<key>.csv``; empty: the section is left out); ``shown(table)`` ->
    the rows as displayed (labels applied); ``render(shown, latex)`` -> Markdown or LaTeX; ``row_name(row)`` names
    a displayed row in the note on rows that pool different versions; ``intro``: the Markdown paragraph under the
    heading; ``tex``: the comment line above its LaTeX table."""

    key: str
    title: str
    paper: str
    benchmarks: tuple[str, ...]
    make: Callable[[pd.DataFrame], pd.DataFrame]
    render: Callable[[pd.DataFrame, bool], str]
    intro: str = ""
    row_name: Callable[[pd.Series], str] | None = None
    shown: Callable[[pd.DataFrame], pd.DataFrame] = lambda t: t
    figures: tuple[Figure, ...] = field(default_factory=tuple)
    tex: str = ""

    def notes(self, shown: pd.DataFrame, runs: pd.DataFrame) -> str:
        """The notes under the table: rows pooling different versions or conventions, mixed compute environments."""
        rows = mixed_note(shown, self.row_name) if self.row_name is not None else ""
        return rows + environment_note(runs, self.benchmarks)


def tolerant(problems: list[str], what: str, make: Callable[[], Any], default: Any) -> Any:
    """``make()``, or ``default`` and a line in ``problems`` when it fails (a page of broken runs shows the rest)."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 -- said on the page, never a crash
        problems.append(f"Could not make {what}: {type(e).__name__}: {first_line(e)}")
        return default


def gap(ours: float, published: float) -> float:
    """Ours minus the published value (NaN when either is missing): the gap every paper table shows."""
    return float(ours) - float(published) if _number(ours) and _number(published) else math.nan


def _number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def mean_sd(values: Iterable[Any]) -> tuple[float, float, int]:
    """(mean, sd with ddof 1 (NaN for one value), n) over the finite numbers of ``values``."""
    x = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").astype(float)
    x = x[x.map(math.isfinite)]
    return (float(x.mean()) if len(x) else math.nan, float(x.std(ddof=1)) if len(x) > 1 else math.nan, int(len(x)))


def fmt_sd(m: float, sd: float, digits: int = 3) -> str:
    """'m ± sd' ('m' for one seed, '–' without a number)."""
    if not _number(m):
        return NONE
    return f"{m:.{digits}f} ± {sd:.{digits}f}" if _number(sd) else f"{m:.{digits}f}"


def fmt_num(v: Any, digits: int = 3, signed: bool = False) -> str:
    """A number as a cell ('–' when there is none)."""
    if not _number(v):
        return NONE
    return f"{float(v):+.{digits}f}" if signed else f"{float(v):.{digits}f}"


def fit(text: str, inches: float, fontsize: float = 10) -> str:
    """``text`` wrapped to the width of ``inches`` at ``fontsize`` points (a title never runs off its figure)."""
    return _wrap(text, max(20, int(inches * 125 / fontsize)))


def save(fig: Any, path: str | Path) -> None:
    """Write a report figure atomically and close it (:func:`mibench.results.save_figure`, looked up here at call time
    so that a test can catch every report figure in one place)."""
    save_figure(fig, path)


def matplotlib_pyplot() -> Any:
    """pyplot on the Agg backend (figures are files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pooled(runs: pd.DataFrame, benchmark: str, file: str, keys: list[str], values: list[str],
           named_by: tuple[str, ...] = ("dataset", "estimator")) -> pd.DataFrame:
    """A per-run CSV (``file``, one row per ``keys`` cell) pooled over the seeds of each configuration: one row per
    configuration x cell with ``<value>`` (the mean over seeds), ``<value>_sd`` (ddof 1; NaN for one seed) and
    ``seeds`` (runs whose file holds the cell), beside the configuration's ``dataset`` (GENERATED where it was),
    ``variant`` (what sets it apart from the others of its ``named_by`` columns), ``mixed`` and ``group``."""
    from .runs import dataset_label, run_csv

    done = finished(runs, benchmark)
    done = done.assign(variant=variant_labels(done, list(named_by)))
    out = []
    for group, g in done.groupby("group", sort=False):
        parts = [t.assign(_seed=s) for d, s in zip(g["run_dir"], g["seed"]) if (t := run_csv(d, file)) is not None]
        if not parts:
            continue
        first, t = g.iloc[0], pd.concat(parts, ignore_index=True)
        t = t.reindex(columns=list(dict.fromkeys([*t.columns, *keys])))  # a key an older run's file lacks: NaN
        for cell, c in t.groupby(keys, sort=True, dropna=False):
            row = dict(zip(keys, cell if isinstance(cell, tuple) else (cell,)))
            for v in values:
                row[v], row[f"{v}_sd"], _ = mean_sd(c[v]) if v in c else (math.nan, math.nan, 0)
            out.append({"dataset": dataset_label(first), "variant": first["variant"], **row,
                        "seeds": int(c["_seed"].nunique()), "mixed": mixed(g), "group": group})
    return pd.DataFrame(out)
