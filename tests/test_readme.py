"""The README's lists and example output cannot drift from the code: every config group's choices, the
estimators named in its Estimators section, and its bad-input examples are checked against the registries,
conf/ and the command line itself."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONF = ROOT / "conf"


def group_row(group: str) -> list[str]:
    """The choices the README's config-group table lists for ``group`` (its second column's `names`)."""
    m = re.search(rf"^\| `{group}` \| ([^|]*) \|", README, re.M)
    assert m, f"the README's group table has no row for {group}"
    return re.findall(r"`([^`]+)`", m.group(1))


@pytest.mark.parametrize("group", ["benchmark", "dataset", "critic", "model", "dim", "hardware", "logger", "trainer",
                                   "experiment"])
def test_the_group_table_lists_every_choice(group):
    assert sorted(group_row(group)) == sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_the_estimator_section_names_every_registered_estimator():
    from mibench.estimators import REGISTRY

    section = README.split("### Estimators", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", section))
    assert set(REGISTRY) <= named, sorted(set(REGISTRY) - named)
    assert sorted(REGISTRY) == sorted(p.stem for p in (CONF / "estimator").glob("*.yaml"))
    row = re.search(r"^\| `estimator` \| (\d+) bounds[^(]*\((\d+) of them the structured bounds", README, re.M)
    assert row, "the group table's estimator row says how many bounds there are"
    assert int(row.group(1)) == len(REGISTRY)
    assert int(row.group(2)) == sum(s.conditional for s in REGISTRY.values())


def test_the_bad_input_examples_are_what_the_command_line_prints():
    """Each ``$ python -m mibench ...`` example of the README's bad-input block prints the line shown below it."""
    block = README.split("**Bad input**", 1)[1].split("```", 2)[1]
    pairs = re.findall(r"^\$ python -m mibench (.+)\n(mibench: error: .+)$", block, re.M)
    assert len(pairs) >= 3
    for args, want in pairs:
        p = subprocess.run([sys.executable, "-m", "mibench", *args.split()], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 2 and p.stderr.strip() == want, (args, p.stderr)


def test_docs_engine_names_every_member_of_the_task_contract():
    """docs/engine.md's "What a benchmark declares" names every public member of :class:`mibench.engine.Task`, of
    its base :class:`mibench.engine.Benchmark` and of :class:`mibench.engine.Analysis`, every field of
    :class:`mibench.engine.Capabilities` and every member of :class:`mibench.engine.RunContext`."""
    import dataclasses

    from mibench.engine import Analysis, Benchmark, Capabilities, RunContext, Task

    doc = (ROOT / "docs" / "engine.md").read_text().split("## What a benchmark declares", 1)[1].split("\n## ", 1)[0]
    names = [m for cls in (Benchmark, Task, Analysis, RunContext) for m in vars(cls)]
    names += [f.name for f in dataclasses.fields(Capabilities)] + ["ctx", "estimator"]
    missing = [m for m in names if not m.startswith("_") and f"`{m}" not in doc]
    assert not missing, missing


def test_docs_architecture_names_modules_and_functions_that_exist():
    """docs/architecture.md's picture names a module for every step: each path and each ``module.function``
    it names exists (a rename that forgets the picture fails here)."""
    import importlib

    doc = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"\b((?:mibench|hydra_plugins|conf)/[\w/<>.-]+?)(?=[`\s,;:)]|$)", doc))
    missing = [p for p in paths if "<" not in p and not (ROOT / p.rstrip("/")).exists()]
    engine = set(re.findall(r"\bengine/(\w+)\.py", doc))
    missing += [f"mibench/engine/{m}.py" for m in engine if not (ROOT / "mibench" / "engine" / f"{m}.py").exists()]
    calls = set(re.findall(r"\b(app|cli|config|compose|records|handover|group|plan|run|loop)\.([a-z_]\w*)\b", doc))
    where = {"group": "engine.group", "plan": "engine.plan", "run": "engine.run", "loop": "engine.loop"}
    for mod, name in calls:
        if name in ("py", "yaml"):
            continue
        m = importlib.import_module(f"mibench.{where.get(mod, mod)}")
        if not hasattr(m, name):
            missing.append(f"{mod}.{name}")
    assert len(paths) > 5 and len(calls) > 10 and not missing, missing


def test_the_registries_and_the_readme_agree_on_benchmarks_and_datasets():
    """Every registered benchmark and dataset has its YAML (and the README lists it: the group table above), and the
    README's benchmark table has a row and a page for each registered benchmark; each dataset provides a kind
    some benchmark needs."""
    from mibench.registry import DATASETS, TASKS

    own = sorted(n for n, t in TASKS.items() if t.__module__.startswith("mibench."))
    assert own == sorted(p.stem for p in (CONF / "benchmark").glob("*.yaml"))
    assert sorted(n for n, d in DATASETS.items() if d.__module__.startswith("mibench.")) == \
        sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))
    table = README.split("### Benchmarks", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (`\w+`(?:, `\w+`)*) \|.*\[\w+\]\((docs/benchmarks/\w+\.md)\) \|$", table, re.M)
    named = sorted(n for names, _ in rows for n in re.findall(r"`(\w+)`", names))
    assert named == own and all((ROOT / page).is_file() for _, page in rows), (named, own)
    needed = {t.needs_data for t in TASKS.values()}
    assert all(set(d.provides) & needed for d in DATASETS.values()), {n: d.provides for n, d in DATASETS.items()}
