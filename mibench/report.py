"""One self-contained HTML page for a folder of runs.

    python -m mibench report runs/ [--out FILE]          (default: runs/report.html)

The page has no external resources (inline CSS, a few lines of JavaScript, figures as base64 ``data:``
URIs), so it can be mailed or archived as one file. Sections: a summary (runs and their statuses), every paper's
table that :mod:`mibench.reports` makes for these runs (the leaderboard's own: same builders, same cells; click a
header to sort, numbers as numbers), each with its figures below it, the failures (the leaderboard's table per
configuration and one row per failed run with its error), the skipped records, each run's own PNGs, and every run
with its resolved config and metrics one click away.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from . import leaderboard as lb
from .reports import sections
from .log import exit_2_on_message
from .results import atomic_write_text

MAX_IMAGE_BYTES = 2_000_000  # one figure larger than this is not inlined (a note says so)
MAX_TOTAL_IMAGE_BYTES = 25_000_000  # nor any once this much is inlined
STATUSES = ("completed", *lb.FAILED, "missing")  # the summary's rows, in this order
SHOWN = ("completed", "diverged", "crashed", "killed", "running", "missing")  # in the summary even when none

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2;cursor:pointer;user-select:none;white-space:nowrap}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}
.status-completed{color:#1a7f37}.status-diverged{color:#b35900}.status-crashed,.status-killed{color:#c00}
pre{background:#f6f6f6;padding:.5em;max-height:30em;overflow:auto;font-size:12px;margin:.3em 0}
details summary{cursor:pointer;color:#0550ae}
figure{margin:1em 0;display:inline-block;vertical-align:top}figure img{max-width:100%;border:1px solid #eee}
.own img{max-width:640px}figcaption{font-size:12px;color:#555}
.note{color:#666;font-size:12px}
"""

# click a header to sort its table; numeric-aware (a cell starting with a number sorts as that number,
# '–' and empty cells last); ``#selftest`` in the URL sorts each table by a numeric column both ways and
# writes what it found to <body data-selftest=...> (for the headless-browser test)
JS = r"""
function cellKey(td){var s=(td.getAttribute('data-sort')!==null?td.getAttribute('data-sort'):td.textContent).trim();
 var m=s.replace(/\u2212/g,'-').match(/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?/i);
 return m?{n:parseFloat(m[0]),s:s}:{n:null,s:s};}
function cmp(a,b){if(a.n!==null&&b.n!==null)return a.n-b.n;if(a.n!==null)return -1;if(b.n!==null)return 1;
 var ea=(a.s===''||a.s==='\u2013'),eb=(b.s===''||b.s==='\u2013');if(ea!==eb)return ea?1:-1;
 return a.s.localeCompare(b.s,undefined,{numeric:true});}
function sortBy(th){var table=th.closest('table'),i=Array.prototype.indexOf.call(th.parentNode.children,th);
 var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc',body=table.tBodies[0];
 table.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir');});th.setAttribute('data-dir',dir);
 var rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(r1,r2){var c=cmp(cellKey(r1.cells[i]),cellKey(r2.cells[i]));return dir==='asc'?c:-c;});
 rows.forEach(function(r){body.appendChild(r);});}
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){sortBy(th);});});
if(location.hash==='#selftest'){var checked=0,bad=[];
 document.querySelectorAll('table.sortable').forEach(function(t){var ths=t.tHead.rows[0].cells,body=t.tBodies[0];
  if(body.rows.length<2)return;
  for(var i=0;i<ths.length;i++){var keys=Array.prototype.map.call(body.rows,function(r){return cellKey(r.cells[i]);});
   if(!keys.every(function(k){return k.n!==null;})||new Set(keys.map(function(k){return k.n;})).size<2)continue;
   ths[i].click();var up=Array.prototype.map.call(body.rows,function(r){return cellKey(r.cells[i]).n;});
   ths[i].click();var down=Array.prototype.map.call(body.rows,function(r){return cellKey(r.cells[i]).n;});
   for(var j=1;j<up.length;j++){if(up[j-1]>up[j]||down[j-1]<down[j]){bad.push(t.id+':'+ths[i].textContent);break;}}
   checked++;break;}});
 document.body.setAttribute('data-selftest',(bad.length?'fail '+bad.join(','):'ok')+' '+checked);}
"""


# ----------------------------------------------------------------------------------------- html pieces
def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _cell_html(text: str) -> str:
    """A leaderboard cell (Markdown-ish: ``**bold**``) as escaped HTML."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", _e(text))


def html_table(head: list[str], rows: list[list[str]], tid: str, raw: set[int] = frozenset(),
               sort_keys: dict[int, list[str]] | None = None) -> str:
    """A sortable table; cells are escaped except the columns in ``raw`` (already HTML), and ``sort_keys``
    gives a column's sort values where its text is not what it should sort by."""
    out = [f'<table class="sortable" id="{_e(tid)}"><thead><tr>'
           + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cells = []
        for j, c in enumerate(row):
            key = (sort_keys or {}).get(j)
            attr = f' data-sort="{_e(key[i])}"' if key is not None else ""
            cells.append(f"<td{attr}>{c if j in raw else _cell_html(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def md_table(md: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a Markdown table the leaderboard rendered (``| a | b |`` lines)."""
    lines = [ln for ln in md.strip().splitlines() if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in ln.strip()[1:-1].split(" | ")]  # noqa: E731
    head = split(lines[0])
    rows = []
    for ln in lines[2:]:
        cells = split(ln)
        if len(cells) > len(head):  # a cell holding ' | ': keep the columns aligned
            cells = cells[:len(head) - 1] + [" | ".join(cells[len(head) - 1:])]
        rows.append(cells + [""] * (len(head) - len(cells)))
    return head, rows


def _note(md: str) -> str:
    """A leaderboard note (Markdown paragraph and ``- item`` lines) as HTML."""
    if not md.strip():
        return ""
    paras, items = [], []
    for ln in md.strip().splitlines():
        if ln.startswith("- "):
            items.append(f"<li>{_cell_html(ln[2:])}</li>")
        elif ln.strip():
            paras.append(f'<p class="note">{_cell_html(ln)}</p>')
    return "".join(paras) + (f"<ul class=\"note\">{''.join(items)}</ul>" if items else "")


# ----------------------------------------------------------------------------------------- sections
def paper_sections(runs: pd.DataFrame, budget: list[int], problems: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(key, title, table HTML, note HTML, figures HTML) for each paper section these runs make (the leaderboard's
    own: same builders, same cells); a section that fails is a line in ``problems``, the others still show."""
    out = []
    with tempfile.TemporaryDirectory(prefix="mibench-report-") as tmp:
        for s in sections():
            table = lb.tolerant(problems, f"the {s.title} table", lambda: s.make(runs), pd.DataFrame())
            if table.empty:
                continue
            shown = s.shown(table)
            page = lb.tolerant(problems, f"the {s.title} table", lambda: (
                html_table(*md_table(s.render(shown, False)), s.key), _note(s.intro) + _note(s.notes(shown, runs))),
                None)
            if page is None:
                continue
            figs = [_figure(Path(tmp) / f.name, f.name, budget) for f in s.figures
                    if lb.tolerant(problems, f.name, lambda f=f: f.draw(runs, table, Path(tmp) / f.name), False)]
            out.append((s.key, s.title, *page, "".join(figs)))
    return out


def _png(path: Path, budget: list[int]) -> tuple[str | None, str]:
    """(data URI or None, why not) for a PNG, within the per-image cap and what is left of ``budget``."""
    try:
        size = path.stat().st_size
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    if size > MAX_IMAGE_BYTES:
        return None, f"{size / 1e6:.1f} MB, over the {MAX_IMAGE_BYTES / 1e6:.0f} MB cap per image"
    if size > budget[0]:
        return None, f"the page already holds {MAX_TOTAL_IMAGE_BYTES / 1e6:.0f} MB of images"
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    if not data.startswith(b"\x89PNG"):
        return None, "not a PNG"
    budget[0] -= size
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), ""


def _figure(path: Path, caption: str, budget: list[int]) -> str:
    uri, why = _png(path, budget)
    if uri is None:
        return f'<p class="note">Figure {_e(caption)} not inlined: {_e(why)}.</p>'
    return f'<figure><img src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def run_pngs(run_dir: Path) -> list[Path]:
    """A run's own figures (its folder and subfolders, not Hydra's)."""
    return sorted(p for p in run_dir.rglob("*.png") if ".hydra" not in p.relative_to(run_dir).parts)


def _first_line(text: Any) -> str:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    return lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")


def _missing(d: Path) -> list[str]:
    return [f for f in ("config.yaml", "result.json") if not (d / f).is_file()]


def failed_runs(runs: pd.DataFrame, root: Path, fl: pd.DataFrame) -> str:
    """One row per run that did not complete (folder, status, error line, missing files), then one per seed the
    failures table ``fl`` says is missing (its configuration, status ``missing``, no run directory): the same runs
    as the table per configuration, one by one."""
    bad = runs[runs["status"] != "completed"]
    rows = []
    for _, r in bad.iterrows():
        err = r.get("error") if "error" in r else None
        rows.append([lb.relative(r["run_dir"], root), str(r["status"]), _first_line(err) if isinstance(err, str) else "",
                     ", ".join(f"no {m}" for m in _missing(Path(r["run_dir"])))])
    for _, r in (fl if "missing" in fl else pd.DataFrame(columns=["missing"])).iterrows():
        for seed in r["missing"]:
            rows.append([f"{configuration(r)}, seed {seed}", "missing", "", "no run directory (requested by its sweep)"])
    if not rows:
        return "<p>None: every run completed.</p>"
    return html_table(["run", "status", "error", "missing"], rows, "failed-runs")


def configuration(r: pd.Series) -> str:
    """A failures-table row's configuration in words: 'staircase gaussian infonce (estimator.clip=5), critic
    separable'."""
    parts = [str(r["benchmark"]), str(r["dataset"]), str(r["estimator"])]
    if isinstance(r.get("critic"), str):
        parts.append(f"critic {r['critic']}")
    return " ".join(parts[:3]) + "".join(f", {p}" for p in parts[3:])


def runs_table(runs: pd.DataFrame, root: Path) -> str:
    """Every run: identity, status, wall time, and its config.yaml and metrics one click away."""
    head = ["run", "benchmark", "dataset", "estimator", "critic", "lam", "seed", "status", "wall_time_s", "config"]
    rows, keys = [], []
    for _, r in runs.iterrows():
        d = Path(r["run_dir"])
        cells = [lb.relative(d, root)] + [lb.dataset_label(r) if k == "dataset" else _plain(r.get(k))
                                          for k in head[1:7]]
        st = str(r["status"])
        cells.append(f'<span class="status-{_e(st.replace(" ", "-"))}">{_e(st)}</span>')
        wall = r.get("wall_time_s")
        cells.append(_plain(round(float(wall), 1) if isinstance(wall, (int, float)) and wall == wall else wall))
        cells.append(_details(d, r))
        rows.append(cells)
        keys.append(lb.relative(d, root))
    return html_table(head, rows, "runs", raw={7, 9}, sort_keys={7: list(runs["status"].astype(str)), 9: keys})


def _plain(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _details(d: Path, r: pd.Series) -> str:
    """The run's config.yaml and metrics (and error), folded."""
    parts = []
    try:
        parts.append(f"<h4>config.yaml</h4><pre>{_e((d / 'config.yaml').read_text())}</pre>")
    except OSError:
        parts.append('<p class="note">no config.yaml in this run folder</p>')
    metrics = {k[2:]: v for k, v in r.items() if isinstance(k, str) and k.startswith("m_") and _known(v)}
    if (d / "result.json").is_file():
        parts.append(f"<h4>metrics</h4><pre>{_e(json.dumps(metrics, indent=1, default=str, sort_keys=True))}</pre>"
                     if metrics else '<p class="note">no metrics recorded</p>')
    else:
        parts.append('<p class="note">no result.json (crashed before writing its record, or still starting)</p>')
    err = r.get("error")
    if isinstance(err, str) and err:
        parts.append(f"<h4>error</h4><pre>{_e(err)}</pre>")
    return f"<details><summary>config</summary>{''.join(parts)}</details>"


def _known(v: Any) -> bool:
    return not (v is None or (isinstance(v, float) and v != v))


# ----------------------------------------------------------------------------------------- page
def skipped_section(skipped: pd.DataFrame) -> str:
    """Every record, config.yaml, steps.csv or run directory the tables could not use, with why."""
    if skipped.empty:
        return '<h2 id="skipped">Skipped</h2><p>None: every record and file was read.</p>'
    return (f'<h2 id="skipped">Skipped</h2><p class="note">{_e(lb.SKIPPED_NOTE)}</p>'
            + html_table(["path", "reason"], skipped.values.tolist(), "skipped"))


def render(root: str | Path) -> str:
    """The report page for the runs under ``root`` (SystemExit when there are none)."""
    root = Path(root)
    runs, skipped = lb.load(root, prog="mibench report")
    counts = runs["status"].value_counts()
    counts["missing"] = lb.count_missing(runs)  # seeds requested by their sweep, never started (no run directory)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    budget, problems = [MAX_TOTAL_IMAGE_BYTES], []
    body = [f"<h1>mibench report</h1><p>{_e(lb.status_line(runs, skipped))} under <code>{_e(root.resolve())}</code>, "
            f"written {_e(now)}. Click a column header to sort.</p>",
            html_table(["status", "runs"], [[s, str(int(counts.get(s, 0)))] for s in STATUSES
                                            if s in counts or s in SHOWN], "summary")]
    tables = paper_sections(runs, budget, problems)
    body.append("<h2>Papers' tables and figures</h2>" if tables else
                "<h2>Papers' tables and figures</h2><p>No paper's table for these runs.</p>")
    if tables:  # one link per section, the page being long
        body.append('<p class="note">' + " · ".join(f'<a href="#s-{_e(key)}">{_e(title)}</a>'
                                                   for key, title, *_ in tables) + "</p>")
    for key, title, table, note, figs in tables:
        body.append(f'<section id="s-{_e(key)}"><h3 id="h-{_e(key)}">{_e(title)}</h3>{table}{note}{figs}</section>')
    body.append("<h2>Failures</h2><h3>Per configuration (the leaderboard's failures table)</h3>")
    fl = lb.tolerant(problems, "the failures table", lambda: lb.failures(runs), pd.DataFrame())
    if fl.empty:
        body.append("<p>None: every run completed.</p>")
    else:
        fl = lb._labelled(fl.reindex(columns=lb.FAIL_COLS + ["variant"]))
        body.append(html_table(lb.FAIL_COLS, lb._df_lines(fl, lb.FAIL_COLS), "failures"))
    body.append("<h3>Failed runs</h3>" + failed_runs(runs, root, fl))
    body.append(skipped_section(skipped))
    own = []
    for d in runs["run_dir"]:
        for p in run_pngs(Path(d)):
            own.append(_figure(p, lb.relative(p, root), budget))
    body.append("<h2>Runs' own figures</h2>" + ("<div class=\"own\">" + "".join(own) + "</div>" if own else
                                                 "<p>No run wrote a figure.</p>"))
    body.append("<h2>Runs</h2><p class=\"note\">Re-runs of an identical config count once (the newest finished). "
                "Click <em>config</em> for a run's resolved config.yaml and metrics.</p>" + runs_table(runs, root))
    if problems:
        body.insert(2, "".join(f'<p class="note problem">{_e(p)}</p>' for p in problems))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>mibench report: {_e(root.name or root)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}<script>{JS}</script></body></html>\n")


def write_report(root: str | Path, out: str | Path | None = None) -> Path:
    """Write the report for the runs under ``root`` to ``out`` (default ``<root>/report.html``) atomically."""
    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"mibench report: no such folder: {root}")
    out = Path(out) if out is not None else root / "report.html"
    page = render(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)  # (a page to share: the mode of any new file, as every output)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="mibench report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="?", default=os.environ.get("MIBENCH_RUNS", "runs"), help="folder of runs (default: runs/)")
    p.add_argument("--out", default=None, help="the page to write (default: <runs>/report.html)")
    a = p.parse_args(argv)
    with exit_2_on_message():
        out = write_report(a.runs, a.out)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
