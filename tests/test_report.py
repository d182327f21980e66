"""The HTML report: one self-contained page with the leaderboard's tables, figures, failures and configs."""
import base64
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mibench import leaderboard as lb
from mibench.report import write_report
from test_leaderboard import ENV_NOTE, MALFORMED, machine, malformed_tree, staircase_steps, write_run

# the smallest valid PNG (1x1, grey)
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


class Page(HTMLParser):
    """Tables (id -> header, rows of cell text), details blocks, img srcs, and every src/href."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links, self.details = {}, [], [], 0
        self._table = self._row = self._cell = None
        self._depth = 0  # <details> nesting inside a cell: its text is not the cell's

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.links.append(a[k])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id"), {"head": [], "rows": []})
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "details":
            self.details += 1
            self._depth += 1

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
        elif tag == "details":
            self._depth -= 1

    def handle_data(self, data):
        if self._cell is not None and self._depth == 0:
            self._cell.append(data)


def parse(path):
    p = Page()
    p.feed(Path(path).read_text())
    return p


def make_runs(root):
    rng = np.random.default_rng(0)
    for s in (0, 1):
        d = write_run(root, f"stair_infonce_s{s}", benchmark="staircase", dataset="gaussian", estimator="infonce",
                      seed=s, steps=staircase_steps(rng), metrics={"mse": 0.1 + s}, rec_extra={"wall_time_s": 3.5})
        (d / "staircase.png").write_bytes(PNG)
    write_run(root, "stair_nwj_s0", benchmark="staircase", dataset="gaussian", estimator="nwj", seed=0,
              steps=staircase_steps(rng), metrics={"mse": 0.5})
    write_run(root, "stair_nwj_s1", benchmark="staircase", dataset="gaussian", estimator="nwj", seed=1,
              status="crashed", rec_extra={"error": "RuntimeError: CUDA <out> of & memory"})
    write_run(root, "stair_js_s0", benchmark="staircase", dataset="gaussian", estimator="js", seed=0,
              status="no record")  # config.yaml but no result.json: a run that died at start
    return root


def test_report_tables_failures_configs_and_self_contained(tmp_path):
    root = make_runs(tmp_path / "runs")
    out = write_report(root)
    assert out == root / "report.html"
    page = parse(out)

    assert page.tables["summary"]["head"] == ["status", "runs"]
    summary = dict(map(tuple, page.tables["summary"]["rows"]))
    assert summary["completed"] == "3" and summary["crashed"] == "1" and summary["no record"] == "1"

    st = page.tables["staircase"]  # the leaderboard's staircase table: one row per estimator x level
    assert st["head"][:3] == ["dataset", "critic", "estimator"]
    assert sorted((r[2], r[5]) for r in st["rows"]) == [("infonce", "2.000"), ("infonce", "4.000"),
                                                         ("nwj", "2.000"), ("nwj", "4.000")]
    assert [r[4] for r in st["rows"] if r[2] == "infonce"] == ["2", "2"]  # seeds pooled

    fl = page.tables["failures"]  # the leaderboard's per-configuration failures
    (nwj,) = [r for r in fl["rows"] if r[2] == "nwj"]
    assert nwj[fl["head"].index("crashed")] == "1" and "CUDA <out> of & memory" in nwj[-1]  # escaped, read back
    failed = {r[0]: r for r in page.tables["failed-runs"]["rows"]}
    assert set(failed) == {"stair_nwj_s1", "stair_js_s0"}
    assert failed["stair_nwj_s1"][1:3] == ["crashed", "RuntimeError: CUDA <out> of & memory"]
    assert failed["stair_js_s0"][1] == "no record" and failed["stair_js_s0"][3] == "no result.json"

    runs = page.tables["runs"]
    assert len(runs["rows"]) == 5 and page.details == 5  # each run's config one click away
    html = out.read_text()
    assert "estimator:\n  name: nwj" in html and "&lt;out&gt; of &amp; memory" in html
    assert "no result.json (crashed before writing its record" in html

    # figures inline: the leaderboard's grid and the runs' own PNGs; nothing outside the page
    assert len(page.imgs) == 3 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert all(s.startswith("data:") or s.startswith("#") for s in page.links)
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_report_notes_a_table_mixing_compute_environments(tmp_path):
    rng = np.random.default_rng(1)
    for s, env in enumerate((machine(), machine(), machine(cpu_capability="DEFAULT"))):
        write_run(tmp_path / "mixed", f"stair{s}", benchmark="staircase", dataset="gaussian", estimator="infonce",
                  seed=s, steps=staircase_steps(rng), rec_extra=env)
    html = write_report(tmp_path / "mixed").read_text()
    note = ('<p class="note">note: this table mixes runs from 2 compute environments (cpu_capability: AVX512 ×2, '
            'DEFAULT ×1) — per-step values differ across kernels within the drift documented in docs/results.md</p>')
    assert html.count(ENV_NOTE) == 1 and html.index('id="staircase"') < html.index(note) < html.index("<h2>Failures")
    one = make_runs(tmp_path / "one")  # records without machine: one (unknown) environment
    assert ENV_NOTE not in write_report(one).read_text()


def test_report_cli_errors_and_out(tmp_path, capsys):
    from mibench.cli import _dispatch  # what `python -m mibench report ...` runs

    def run(*a):
        try:
            _dispatch(["report", *map(str, a)])
        except SystemExit as e:
            return e.code, capsys.readouterr().err
        return 0, capsys.readouterr().err

    code, err = run(tmp_path / "nope")
    assert code == 2 and err.count("\n") == 1 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, err = run(tmp_path / "empty")
    assert code == 2 and err.count("\n") == 1 and "no runs found" in err
    write_run(tmp_path / "one", "r0", benchmark="staircase", dataset="gaussian", estimator="nwj", status="crashed",
              rec_extra={"error": "ValueError: boom"})
    code, err = run(tmp_path / "one", "--out", tmp_path / "x" / "page.html")
    assert code == 0, err
    page = parse(tmp_path / "x" / "page.html")
    assert page.tables["failed-runs"]["rows"][0][:3] == ["r0", "crashed", "ValueError: boom"]
    assert not (tmp_path / "one" / "report.html").exists()


def test_report_notes_what_it_could_not_make_or_inline(tmp_path, monkeypatch):
    import mibench.report as rp
    from mibench.reports import choi_lee

    d = write_run(tmp_path, "r0", benchmark="onehot", dataset="onehot", estimator="mine", status="crashed",
                  rec_extra={"error": "ValueError: boom"})
    (d / "big.png").write_bytes(PNG)
    monkeypatch.setattr(rp, "MAX_IMAGE_BYTES", 10)

    def broken(runs):
        raise KeyError("odd record")

    monkeypatch.setattr(choi_lee, "onehot_table", broken)
    html = write_report(tmp_path).read_text()
    assert "Could not make the One-hot drift and explosion (Choi &amp; Lee §3-4) table: KeyError" in html
    assert "Figure r0/big.png not inlined:" in html and "<img" not in html
    page = parse(tmp_path / "report.html")
    assert page.tables["failed-runs"]["rows"][0][:3] == ["r0", "crashed", "ValueError: boom"]


@pytest.mark.parametrize("case", [*MALFORMED, "empty_run_dir"])
def test_report_names_each_malformed_file_and_counts_seeds_like_the_status_table(tmp_path, case):
    path, reason = malformed_tree(tmp_path, case)
    page = parse(write_report(tmp_path))
    assert page.tables["skipped"] == {"head": ["path", "reason"], "rows": [[path, reason]]}
    st = page.tables["staircase"]  # the good seeds' table, intact
    assert [r[st["head"].index("seeds")] for r in st["rows"]] == ["3", "3"]
    summary = dict(map(tuple, page.tables["summary"]["rows"]))
    invalid = case != "empty_run_dir"
    assert summary["completed"] == "3" and summary.get("invalid", "0") == ("1" if invalid else "0")
    html = (tmp_path / "report.html").read_text()
    assert ("every run completed" in html) is not invalid
    if invalid:
        (bad,) = page.tables["failed-runs"]["rows"]
        assert bad[:3] == ["bad", "invalid", f"{Path(path).name}: {reason}"]


def chromium():
    for c in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if c and os.access(c, os.X_OK):
            return c
    return None


def test_report_in_headless_chromium(tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("no chromium")
    out = write_report(make_runs(tmp_path / "runs"))
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}"]
    # the DOM after the page's script ran its self-test: every table with a numeric column sorted both ways
    dom = subprocess.run(flags + ["--dump-dom", out.as_uri() + "#selftest"], capture_output=True, text=True,
                         timeout=90)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = Page()
    page.feed(dom.stdout)
    assert {"summary", "staircase", "failures", "failed-runs", "runs"} <= set(page.tables)
    assert 'data-selftest="ok' in dom.stdout, dom.stdout[-500:]
    checked = int(dom.stdout.split('data-selftest="ok ')[1].split('"')[0])
    assert checked >= 3  # summary, staircase, runs at least
    # the self-test clicked the staircase table's first numeric column ("seeds") twice: now descending
    assert '<th data-dir="desc">seeds</th>' in dom.stdout
    seeds = [r[page.tables["staircase"]["head"].index("seeds")] for r in page.tables["staircase"]["rows"]]
    assert seeds == ["2", "2", "1", "1"]
    shot = tmp_path / "shot.png"
    r = subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1280,2000", out.as_uri()],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000  # a rendered page, not a blank one


def mixed_outcomes(root):
    """A sweep asking for seeds 0-2 of infonce and nwj (infonce: 2 completed, 1 diverged; nwj: 1 completed, 1
    crashed, seed 2 never started) and two runs started on their own (js killed, smile completed with seed 5)."""
    from test_leaderboard import write_sweep

    rng = np.random.default_rng(7)
    sweep = write_sweep(root / "multirun" / "2026-01-01_00-00-00_abcd", ["estimator=infonce,nwj", "seed=0,1,2"])
    stair = {"benchmark": "staircase", "dataset": "gaussian"}
    for s, status in enumerate(("completed", "completed", "diverged")):
        write_run(sweep, f"{s}_infonce_s{s}", **stair, estimator="infonce", seed=s, status=status,
                  steps=staircase_steps(rng))
    write_run(sweep, "3_nwj_s0", **stair, estimator="nwj", seed=0, steps=staircase_steps(rng))
    write_run(sweep, "4_nwj_s1", **stair, estimator="nwj", seed=1, status="crashed",
              rec_extra={"error": "RuntimeError: boom"})
    write_run(root / "staircase", "js_s0", **stair, estimator="js", seed=0, status="running", pid=2**22 + 12345)
    write_run(root / "staircase", "smile_s5", **stair, estimator="smile", seed=5, steps=staircase_steps(rng))
    return root


def test_every_section_of_the_report_counts_the_same_runs(tmp_path):
    root = mixed_outcomes(tmp_path / "runs")
    expected = {"completed": 4, "diverged": 1, "crashed": 1, "killed": 1, "running": 0, "missing": 1}
    made = lb.build(root)
    md = (made["out"] / "leaderboard.md").read_text()
    header = md.splitlines()[2]
    counts, _, rest = header.partition("; ")
    assert counts.startswith("7 runs: ") and sorted(counts[8:].split(", ")) == sorted(
        f"{n} {s}" for s, n in expected.items() if n and s != "missing")
    assert rest.startswith("1 missing (requested by their sweep, never started)")
    page = parse(write_report(root))
    summary = {s: int(n) for s, n in page.tables["summary"]["rows"]}
    assert summary == expected and "7 runs: " in (root / "report.html").read_text()

    fl = page.tables["failures"]  # per configuration: each failed seed under its status, missing against its sweep
    col = {h: i for i, h in enumerate(fl["head"])}
    by = {r[col["estimator"]]: r for r in fl["rows"]}
    assert set(by) == {"infonce", "nwj", "js"}  # smile (alone, seed 5) is complete: its own seed was all it asked
    cells = {e: {k: by[e][col[k]] for k in ("completed", "diverged", "crashed", "killed", "missing")} for e in by}
    assert cells == {"infonce": {"completed": "2", "diverged": "2", "crashed": "", "killed": "", "missing": ""},
                     "nwj": {"completed": "1", "diverged": "", "crashed": "1", "killed": "", "missing": "2"},
                     "js": {"completed": "0", "diverged": "", "crashed": "", "killed": "0", "missing": ""}}
    assert "boom" in by["nwj"][col["errors"]]

    failed = page.tables["failed-runs"]["rows"]  # one by one: the same runs as the summary's failures
    assert sorted(r[1] for r in failed) == sorted(s for s, n in expected.items() if s not in ("completed", "running")
                                                  for _ in range(n))
    by_run = {r[0]: r[1:] for r in failed}
    sweep = "multirun/2026-01-01_00-00-00_abcd"
    assert by_run[f"{sweep}/2_infonce_s2"][0] == "diverged" and by_run["staircase/js_s0"][0] == "killed"
    assert by_run[f"{sweep}/4_nwj_s1"][:2] == ["crashed", "RuntimeError: boom"]
    assert by_run["staircase gaussian nwj, critic separable, seed 2"] == ["missing", "",
                                                                         "no run directory (requested by its sweep)"]
    html = (root / "report.html").read_text()
    assert "every run completed" not in html and "every run completed" not in md

    st = page.tables["staircase"]  # finished runs: completed and diverged, seeds pooled per configuration
    seeds = {r[st["head"].index("estimator")]: r[st["head"].index("seeds")] for r in st["rows"]}
    assert seeds == {"infonce": "3", "nwj": "1", "smile": "1"}
    runs = page.tables["runs"]
    status = {r[0]: r[runs["head"].index("status")] for r in runs["rows"]}
    assert len(status) == 7 and sorted(status.values()) == sorted(
        s for s, n in expected.items() if s != "missing" for _ in range(n))
    assert "skipped" not in page.tables and "None: every record and file was read." in html
    assert any(img.startswith("data:image/png") for img in page.imgs)  # the staircase grid


def test_configurations_with_different_seeds_are_not_missing_each_others(tmp_path):
    """The issue's case: runs started on their own, two configurations with seed 0 and one with seeds 0 and 1,
    all completed: nothing is missing, and the report says so in every section."""
    rng = np.random.default_rng(8)
    for est, seeds in (("infonce", (0,)), ("nwj", (0,)), ("js", (0, 1))):
        for s in seeds:
            write_run(tmp_path, f"{est}_s{s}", benchmark="staircase", dataset="gaussian", estimator=est, seed=s,
                      steps=staircase_steps(rng))
    page = parse(write_report(tmp_path))
    html = (tmp_path / "report.html").read_text()
    assert "failures" not in page.tables and "failed-runs" not in page.tables
    assert html.count("None: every run completed.") == 2
    assert dict(map(tuple, page.tables["summary"]["rows"]))["missing"] == "0"
    md = (lb.build(tmp_path)["out"] / "leaderboard.md").read_text()
    assert "None: every run completed." in md and "missing" not in md.splitlines()[2]
