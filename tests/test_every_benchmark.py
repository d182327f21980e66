"""Checked as a user would (issue 29): one runs root holding a small CPU run of every benchmark
(tests/every_benchmark.py), then ``mibench leaderboard`` and ``mibench report`` over it. Every benchmark has its
paper's section (table, CSV, LaTeX, figure), every section of the HTML page parses with numbers, the new sections'
numbers match an independent computation from the runs' own files, rows on GENERATED data say so, and the page
renders in headless Chromium (skipped where there is none)."""
import json
import math
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from every_benchmark import make
from mibench import leaderboard as lb
from mibench.cli import _dispatch
from mibench.engine import TASKS
from mibench.reports import sections
from mibench.reports import tables as report_tables
from test_report import chromium

pytestmark = pytest.mark.slow
REFERENCE = Path(__file__).resolve().parents[1] / "mibench" / "reference"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make(tmp_path_factory.mktemp("every"))


@pytest.fixture(scope="module")
def board(root):
    _dispatch(["leaderboard", str(root)])  # what `mibench leaderboard ROOT` runs
    return root / "leaderboard"


@pytest.fixture(scope="module")
def page(root):
    _dispatch(["report", str(root)])  # what `mibench report ROOT` runs
    return Sections.of(root / "report.html")


class Sections(HTMLParser):
    """Each ``<section id="s-KEY">`` of the report: its tables (id -> header, rows of cell text) and images; and
    every table of the page."""

    def __init__(self):
        super().__init__()
        self.sections, self.tables, self._sec, self._table, self._row, self._cell = {}, {}, None, None, None, None

    @classmethod
    def of(cls, path: Path) -> "Sections":
        p = cls()
        p.feed(path.read_text())
        return p

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._sec = self.sections.setdefault(a["id"][2:], {"tables": [], "imgs": []})
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id"), {"head": [], "rows": []})
            if self._sec is not None:
                self._sec["tables"].append(a.get("id"))
        elif tag == "img" and self._sec is not None:
            self._sec["imgs"].append(a.get("src", ""))
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._table["head"]:
                self._table["rows"].append(self._row)
            else:
                self._table["head"] = self._row
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "section":
            self._sec = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def own_benchmarks() -> set[str]:
    """mibench's own registered benchmarks (not a test plug-in's)."""
    return {name for name, task in TASKS.items() if task.__module__.startswith("mibench.benchmarks.")}


def column(table: dict, name: str) -> list[str]:
    return [r[table["head"].index(name)] for r in table["rows"]]


def number(cell: str) -> float:
    """The first number of a cell ('0.419 ± 0.075' -> 0.419, '+15.2' -> 15.2)."""
    return float(cell.replace("−", "-").split()[0].rstrip(","))


def records(root: Path, benchmark: str) -> list[tuple[Path, dict]]:
    return [(p.parent, json.loads(p.read_text())) for p in sorted(root.rglob("result.json"))
            if json.loads(p.read_text())["benchmark"] == benchmark]


def csvs(root: Path, benchmark: str, name: str) -> pd.DataFrame:
    """Every run's ``name`` of ``benchmark``, read directly (not through mibench.reports), with its seed."""
    return pd.concat([pd.read_csv(d / name).assign(_seed=r["seed"]) for d, r in records(root, benchmark)],
                     ignore_index=True)


# ----------------------------------------------------------------------------------------- every benchmark, everywhere
def test_the_root_holds_a_completed_run_of_every_benchmark_and_each_has_a_section(root):
    done = {r["benchmark"] for p in root.rglob("result.json") for r in [json.loads(p.read_text())]
            if r["status"] == "completed"}
    assert done == own_benchmarks()
    covered = {b for s in sections() for b in s.benchmarks}
    assert own_benchmarks() <= covered  # every benchmark has its paper's section
    assert all(s.figures for s in sections())  # and every section a figure


def test_every_run_draws_its_own_figure(root):
    """Issue 29 req. 5: every benchmark that produces a curve or table has a figure, also per run (SLB, CLB, DIM,
    layer-pair and the Jigsaw: epochs.png, their training curves)."""
    runs = [p.parent for p in root.rglob("result.json")]
    assert runs and all(any(d.glob("*.png")) for d in runs), [str(d) for d in runs if not any(d.glob("*.png"))]
    for bench in ("slb", "clb", "dim", "layerpair", "jigsaw"):
        assert all((d / "epochs.png").is_file() for d, _ in records(root, bench)), bench


def test_leaderboard_has_every_section_in_markdown_latex_csv_and_figures(board):
    md, tex = (board / "leaderboard.md").read_text(), (board / "leaderboard.tex").read_text()
    for s in sections():
        assert f"\n## {s.title}\n" in md, s.key
        assert s.tex in tex and (board / f"{s.key}.csv").is_file(), s.key
        for f in s.figures:
            data = (board / f.name).read_bytes()
            assert data.startswith(b"\x89PNG") and len(data) > 10_000, f.name
            assert f"![{f.name}]({f.name})" in md
    assert md.index("## SLB / CLB") < md.index("## Crashed") and "None: every run completed." in md
    body = [ln for ln in tex.splitlines() if not ln.startswith("%")]
    assert all(ln.isascii() for ln in body), [ln for ln in body if not ln.isascii()][:3]  # pdflatex: no η, −, ±


def test_report_parses_every_section_with_numbers_and_figures(root, page):
    summary = dict(map(tuple, page.tables["summary"]["rows"]))
    n = sum(1 for _ in root.rglob("result.json"))
    assert summary["completed"] == str(n) and summary["crashed"] == summary["missing"] == "0"
    for s in sections():
        sec = page.sections[s.key]
        assert sec["tables"] == [s.key], s.key
        table = page.tables[s.key]
        assert table["head"] and table["rows"], s.key
        assert any(any(c[:1].isdigit() or c[:2] in ("-0", "+0") or c[:1] in "-+" and c[1:2].isdigit() for c in r)
                   for r in table["rows"]), s.key  # numbers, not only labels
        assert len(sec["imgs"]) == len(s.figures) and all(i.startswith("data:image/png;base64,") for i in sec["imgs"])
    assert len(page.tables["runs"]["rows"]) == n and "failed-runs" not in page.tables  # "None: every run completed."


# ----------------------------------------------------------------------------------------- numbers, independently
def test_poole_sections_match_the_runs_files(root, page):
    opt = csvs(root, "optimal", "optimal.csv")
    nwj = opt[(opt["estimator"] == "nwj") & (opt["batch_size"] == 8) & (opt["true_mi"] == 2)]["bias"]
    t = page.tables["optimal"]
    (row,) = [r for r in t["rows"] if r[1] == "nwj" and r[2] == "8"]
    assert row[t["head"].index("bias @ MI=2")] == f"{nwj.mean():.3f} ± {nwj.std(ddof=1):.3f}" and row[3] == "2"

    sw = csvs(root, "sandwich", "sandwich_table.csv")
    cell = sw[(sw["batch_size"] == 16) & (sw["true_mi"] == 4)]
    t = page.tables["sandwich"]
    (row,) = [r for r in t["rows"] if r[1] == "16" and r[2] == "4"]
    lo = cell["lower_mean"]
    assert row[4] == f"{lo.mean():.3f} ± {lo.std(ddof=1):.3f}"
    assert number(row[6]) == pytest.approx(round(lo.mean() - 4, 3), abs=1e-3)
    assert row[8] == f"{int(cell['holds'].sum())}/2"

    best = csvs(root, "gradients", "best_alpha.csv")
    t = page.tables["gradients"]
    for r in t["rows"]:
        b = best[(best["batch_size"] == int(r[1])) & (best["true_mi"] == 4)]["best_alpha"]
        assert r[t["head"].index("best α @ MI=4")] == f"{b.mode().min():g} ({int((b == b.mode().min()).sum())}/2)"

    ests = [rec["metrics"]["estimate"] for _, rec in records(root, "dsprites")]
    (row,) = page.tables["dsprites"]["rows"]
    assert row[3] == f"{np.mean(ests):.3f} ± {np.std(ests, ddof=1):.3f}"
    assert row[7] == "scale, posX, posY"  # the paper's factors (§3.1)


def test_eta_mine_sections_match_the_runs_files_and_the_published_numbers(root, page):
    fin = csvs(root, "eta_gaussian", "summary.csv")
    t = page.tables["eta_fig3a"]
    for est in ("eta_mine", "eta_mine_convex", "mine"):
        x = fin[fin["estimator"] == est]
        (row,) = [r for r in t["rows"] if r[2] == est]
        assert row[5] == f"{x['test_estimate'].mean():.3f} ± {x['test_estimate'].std(ddof=1):.3f}"
        assert number(row[6]) == pytest.approx(x["test_estimate"].mean() - x["true_mi"].iloc[0], abs=1e-3)

    t = page.tables["migan"]
    by = {r[0].split(" (")[0]: r for r in t["rows"]}
    assert set(by) == {"eta-MINE", "DV-MINE", "unconditional GAN"}
    assert number(by["eta-MINE"][5]) == 50000 and number(by["DV-MINE"][5]) == 140000  # the text of §5
    assert by["unconditional GAN"][5] == "never (fails)"  # Fig. 3's caption
    for method, est in (("eta-MINE", "eta_mine"), ("DV-MINE", "mine")):
        recs = [r for _, r in records(root, "migan") if r["estimator"] == est and r["metrics"]["conditional"]]
        reached = sum(r["metrics"]["steps_to_all_modes"] is not None for r in recs)
        assert by[method][3] == f"{reached}/{len(recs)}"
        assert number(by[method][7]) == pytest.approx(np.mean([r["metrics"]["final_modes"] for r in recs]), abs=0.05)

    cells = csvs(root, "layerpair", "table2.csv")
    pub = pd.read_csv(REFERENCE / "eta_mine_table2.csv")
    t = page.tables["layerpair"]
    assert len(t["rows"]) == len(cells)
    for r in t["rows"]:
        test = r[1].split()[0]
        ours = cells[cells["test_dataset"] == test]["top1_acc"].iloc[0]
        paper = pub[(pub.train_dataset == "cifar10") & (pub.test_dataset == test) & (pub.method == "eta_mine")]
        assert (number(r[4]), number(r[5])) == (round(ours, 1), paper["top1_acc"].iloc[0])
        assert number(r[6]) == pytest.approx(ours - paper["top1_acc"].iloc[0], abs=0.051)
        assert "GENERATED" in r[0] and "GENERATED" in r[1]

    summ = csvs(root, "jigsaw", "summary.csv")
    pub = pd.read_csv(REFERENCE / "eta_table3.csv")
    t = page.tables["jigsaw"]
    assert column(t, "metric") == ["top1", "top1"]  # 3 classes: top-5 and top-10 are trivial, never shown
    for r in t["rows"]:
        ours = summ[(summ["method"] == r[1]) & (summ["metric"] == "top1")]["mean"].iloc[0]
        paper = pub[(pub["method"] == r[1]) & (pub["metric"] == "top1")].iloc[0]
        assert r[4] == f"{ours:.1f}" and r[5] == f"{paper['mean']:.1f} ± {paper['std']:.1f}"
        assert "GENERATED" in r[0] and "3 classes" in r[0]


def test_dim_and_choi_lee_sections_match_the_runs_files_and_the_published_numbers(root, page):
    probes = csvs(root, "dim", "probes.csv")
    pub = pd.read_csv(REFERENCE / "dim_table1.csv")
    t = page.tables["dim"]
    for r in t["rows"]:
        ours = probes[(probes["probe"] == "mlp") & (probes["layer"] == r[4])]["top1"].iloc[0]
        paper = pub[(pub.dataset == "cifar10") & (pub.model == "dim_local_infonce") & (pub.probe_layer == r[4])]
        assert (r[6], number(r[7])) == (f"{ours:.1f}", round(paper["top1_acc"].iloc[0], 1))
        assert number(r[8]) == pytest.approx(ours - paper["top1_acc"].iloc[0], abs=0.051)
        assert "GENERATED" in r[0] and "GENERATED" in r[1]

    mine = [r["metrics"]["mi_train"] for _, r in records(root, "slb") if r["estimator"] == "mine"]
    t = page.tables["table2"]
    (row,) = [r for r in t["rows"] if r[0] == "SLB"]
    assert row[1] == "CIFAR-10 (GENERATED)" and row[8] == "2.300 ± 0.003"  # Choi & Lee Table 2, SLB CIFAR-10 MINE
    assert number(row[12]) == pytest.approx(np.mean(mine) - 2.300, abs=1e-3)


def test_generated_rows_and_figures_say_so(root, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(report_tables, "save_figure", lambda fig, path: figures.append((Path(path).name, fig)))
    made = lb.build(root, tmp_path / "board")
    assert made["table2"]["generated"].str.startswith("GENERATED").all()  # (table2.csv: dataset and what was generated)
    for key in ("layerpair", "jigsaw", "dim"):
        assert made[key]["dataset"].astype(str).str.contains("GENERATED").all(), key
    text = {name: " ".join([fig._suptitle.get_text() if fig._suptitle else ""]
                           + [t for ax in fig.axes for t in [ax.get_title()] + [x.get_text() for x in ax.get_xticklabels()]])
            for name, fig in figures}
    for name in ("table2.png", "lambda_ablation.png", "layerpair_table2.png", "jigsaw_table3.png", "dim_table1.png"):
        assert "GENERATED" in text[name], name


# ----------------------------------------------------------------------------------------- as rendered
def test_report_of_every_benchmark_renders_in_headless_chromium(root, page, tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium (/usr/bin/chromium)")
    out = root / "report.html"
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", out.as_uri() + "#selftest"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and 'data-selftest="ok' in dom.stdout, dom.stderr[-2000:]
    rendered = Sections()
    rendered.feed(dom.stdout)
    assert set(rendered.sections) == {s.key for s in sections()}
    shot = tmp_path / "report.png"
    r = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1400,4000", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.read_bytes().startswith(b"\x89PNG"), r.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (4000, 1400) and pixels.std() > 10  # a drawn page, not a blank one


def test_figure_studies_and_the_layerpair_merge_read_the_same_runs(root, tmp_path, capsys):
    """``python -m mibench.figures onehot|eta_fig3a`` and ``python -m mibench.benchmarks.layerpair`` go through the
    one loader: the same runs as the leaderboard's sections."""
    from mibench.benchmarks import layerpair
    from mibench.figures.__main__ import main as figures

    figures(["onehot", str(root), "--out", str(tmp_path)])
    oh = pd.read_csv(tmp_path / "onehot_runs.csv")
    assert sorted(oh["seed"]) == [0, 1] and all((tmp_path / f"onehot_fig{i}.png").is_file() for i in range(1, 6))
    figures(["eta_fig3a", str(root), "--out", str(tmp_path)])
    fig3a = pd.read_csv(tmp_path / "eta_fig3a.csv")
    fin = csvs(root, "eta_gaussian", "summary.csv")
    for _, r in fig3a.iterrows():
        x = fin[fin["estimator"] == r["estimator"]]["test_estimate"]
        assert r["mean"] == pytest.approx(x.mean()) and r["std"] == pytest.approx(x.std(ddof=1)) and r["seeds"] == 2
    layerpair.main([str(root)])
    cells = csvs(root, "layerpair", "table2.csv")
    assert all(f"{v:.1f} (" in capsys.readouterr().out for v in cells["top1_acc"][:1])
