"""Honest labels: a run is named by what it used. Analyses without an estimator (sandwich, optimal, gradients,
jigsaw's CE, layer-pair's supervised reference) name none, benchmarks that build no critic from the critic group
name none, in the run directory, the record and every table."""
import inspect
import json

import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict

from mibench import leaderboard as lb
from mibench.reports import tables as report_tables
from mibench.compose import compose_config
from mibench.config import TASKS
from mibench.labels import identity, roles
from mibench.report import write_report

from test_leaderboard import write_run
from test_report import parse

# (overrides, estimator, critic, directory label): what each run must be named by, from reading each benchmark
CASES = {
    "staircase": ([], "infonce", "separable", "infonce"),
    "sandwich": (["benchmark=sandwich"], None, None, "sandwich"),
    "optimal": (["benchmark=optimal"], None, None, "optimal"),
    "gradients": (["benchmark=gradients"], None, None, "gradients"),
    "dim": (["benchmark=dim"], "infonce", None, "infonce"),
    "dsprites": (["benchmark=dsprites"], "struct_js", None, "struct_js"),
    "jigsaw_mi": (["benchmark=jigsaw", "estimator=eta_mine"], "eta_mine", None, "eta_mine"),
    "jigsaw_ce": (["benchmark=jigsaw", "benchmark.objective=ce"], None, None, "ce"),
    "layerpair": (["benchmark=layerpair", "estimator=mine"], "mine", None, "mine"),
    "layerpair_supervised": (["benchmark=layerpair", "benchmark.supervised=true"], None, None, "supervised"),
    "onehot": (["benchmark=onehot"], "infonce", "concat", "infonce"),
    "slb": (["benchmark=slb"], "infonce", "slb", "infonce"),
    "migan": (["benchmark=migan"], "eta_mine", "separable", "eta_mine"),
    "samples": (["benchmark=samples"], "infonce", "concat", "infonce"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_is_named_by_what_it_uses(case):
    overrides, estimator, critic, label = CASES[case]
    cfg = compose_config(overrides, hydra=True)
    with open_dict(cfg):
        cfg.hydra.job.num = 3
    used = roles(cfg)
    assert (used["estimator"], used["critic"], used["label"]) == (estimator, critic, label)
    rec = identity(cfg)
    assert (rec["estimator"], rec["critic"]) == (estimator, critic)
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    assert run_dir.endswith(f"_{label}_s0") and OmegaConf.select(cfg, "hydra.sweep.subdir") == f"3_{label}_s0"
    plain = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=False), default=str))  # a config.yaml
    assert roles(plain) == used


def builds_critic(task) -> bool:
    """Whether the code of ``task`` (its class and base classes' modules) builds a network from the critic group."""
    src = "".join(inspect.getsource(inspect.getmodule(c)) for c in task.__mro__ if c.__module__.startswith("mibench.b"))
    return "build_critic(" in src or "cfg.critic" in src


@pytest.mark.parametrize("name", sorted(TASKS))
def test_uses_critic_matches_the_code(name):
    assert TASKS[name].caps.uses_critic is builds_critic(TASKS[name])


def test_old_runs_are_named_by_what_they_used_in_every_table(tmp_path):
    """Runs written before the labels (their config.yaml and record say estimator infonce, critic separable) are
    named as their benchmark declares: in the leaderboard's runs and failures tables and the report's runs table."""
    for bench in ("sandwich", "optimal", "gradients"):
        write_run(tmp_path, f"{bench}_infonce_s0", benchmark=bench, dataset="gaussian", estimator="infonce")
    write_run(tmp_path, "dim_infonce_s0", benchmark="dim", dataset="cifar10", estimator="infonce", status="crashed",
              rec_extra={"error": "RuntimeError: boom"})
    write_run(tmp_path, "stair_infonce_s0", benchmark="staircase", dataset="gaussian", estimator="infonce",
              status="crashed")
    made = lb.build(tmp_path)
    runs = made["runs"].set_index("benchmark")
    for bench in ("sandwich", "optimal", "gradients"):
        assert pd.isna(runs.loc[bench, "estimator"]) and pd.isna(runs.loc[bench, "critic"])
    assert runs.loc["dim", "estimator"] == "infonce" and pd.isna(runs.loc["dim", "critic"])
    assert (runs.loc["staircase", "estimator"], runs.loc["staircase", "critic"]) == ("infonce", "separable")
    fl = made["failures"].set_index("benchmark")
    assert pd.isna(fl.loc["dim", "critic"]) and fl.loc["staircase", "critic"] == "separable"
    md = (made["out"] / "leaderboard.md").read_text()
    assert "| dim | cifar10 | infonce | – |" in md and "separable" not in md.split("| dim |")[1].splitlines()[0]
    page = parse(write_report(tmp_path))
    head, rows = page.tables["runs"]["head"], page.tables["runs"]["rows"]
    by = {r[head.index("benchmark")]: r for r in rows}
    for bench in ("sandwich", "optimal", "gradients"):
        assert (by[bench][head.index("estimator")], by[bench][head.index("critic")]) == ("–", "–")
    assert (by["dim"][head.index("estimator")], by["dim"][head.index("critic")]) == ("infonce", "–")
    assert "infonce" not in " ".join(c for r in rows if r[head.index("benchmark")] == "sandwich" for c in r[1:])


GEN = "GENERATED cifar10 files, not the real dataset"


def test_generated_runs_are_apart_and_labelled_in_every_table_and_figure(tmp_path, monkeypatch):
    """SLB runs of one configuration on real CIFAR-10 and on generated files: two Table 2 rows, never pooled, the
    generated one labelled wherever it is shown (beside the paper's numbers too); a record written before mibench
    recorded ``generated_data`` is judged by the data folder's GENERATED marker."""
    real = {"mine": [2.10, 2.20], "remine": [2.25, 2.27]}
    fake = {"mine": [0.50, 0.70], "remine": [0.90, 1.10]}
    for s in range(2):
        for est, lam in (("mine", None), ("remine", 0.1)):
            write_run(tmp_path, f"real_{est}_{s}", estimator=est, lam=lam, seed=s,
                      metrics={"mi_train": real[est][s], "test_acc": 0.8}, rec_extra={"generated_data": None})
            write_run(tmp_path, f"fake_{est}_{s}", estimator=est, lam=lam, seed=s,
                      metrics={"mi_train": fake[est][s], "test_acc": 0.3}, rec_extra={"generated_data": GEN})
    write_run(tmp_path, "fake_mine_2", estimator="mine", seed=2, status="crashed", rec_extra={"generated_data": GEN})
    marked = tmp_path / "data" / "cifar-10-batches-py"
    marked.mkdir(parents=True)
    (marked / "GENERATED").write_text("generated by mibench.data.fake_cifar\n")
    write_run(tmp_path, "old_fake_dim", benchmark="dim", estimator="infonce", status="crashed",
              cfg_extra={"dataset": {"root": str(tmp_path / "data")}})  # an older record: no generated_data
    figures = []
    monkeypatch.setattr(report_tables, "save_figure", lambda fig, path: figures.append(fig))
    made = lb.build(tmp_path)
    t2 = made["table2"].set_index(made["table2"]["generated"].fillna("real"))
    assert len(t2) == 2 and t2.loc[GEN, "n_orig"] == 2 and t2.loc["real", "n_orig"] == 2  # not pooled
    assert t2.loc[GEN, "mi_orig"] == pytest.approx(0.6) and t2.loc["real", "mi_orig"] == pytest.approx(2.15)
    md = (made["out"] / "leaderboard.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| SLB |")]
    assert [ln.split(" | ")[1] for ln in rows] == ["CIFAR-10", "CIFAR-10 (GENERATED)"]
    assert "2.300 ± 0.003" in rows[1]  # the paper's number beside ours: labelled
    assert all("GENERATED" in ln for ln in md.splitlines() if "0.600 ±" in ln)
    titles = [ax.get_title() for fig in figures for ax in fig.axes if ax.get_title().startswith("SLB")]
    assert titles == ["SLB cifar10", "SLB cifar10 (GENERATED)"] * 2  # table2.png, lambda_ablation.png
    fl = made["failures"]
    (crashed,) = [r for r in fl.to_dict("records") if r["crashed"] and r["benchmark"] == "slb"]
    assert crashed["dataset"] == "cifar10 (GENERATED)" and crashed["crashed"] == [2]
    assert set(fl.loc[fl["benchmark"] == "dim", "dataset"]) == {"cifar10 (GENERATED)"}  # by its data's marker
    page = parse(write_report(tmp_path))
    head, rows = page.tables["runs"]["head"], page.tables["runs"]["rows"]
    shown = {r[0]: r[head.index("dataset")] for r in rows}
    assert shown["real_mine_0"] == "cifar10" and shown["fake_mine_0"] == shown["old_fake_dim"] == "cifar10 (GENERATED)"
