"""Honest labels: a run is named by what it used. Analyses without an estimator (sandwich, optimal, gradients,
jigsaw's CE, layer-pair's supervised reference) name none, benchmarks that build no critic from the critic group
name none, in the run directory, the record and every table."""
import inspect
import json

import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict

from mibench import leaderboard as lb
from mibench.compose import compose_config
from mibench.config import TASKS
from mibench.records import identity, roles
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
    assert TASKS[name].uses_critic is builds_critic(TASKS[name])


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
