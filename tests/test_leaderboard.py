"""Leaderboard on synthetic run folders whose means and intervals the test computes independently."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mibench import leaderboard as lb
from mibench.reports import tables as report_tables
from mibench.stats import mean_ci, t_quantile

# textbook two-sided 95% Student-t quantiles t_{0.975, df}
T975 = {1: 12.706205, 2: 4.302653, 3: 3.182446, 4: 2.776445, 9: 2.262157, 30: 2.042272}


@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_tables(df):
    assert t_quantile(0.975, df) == pytest.approx(T975[df], abs=2e-6)


def write_run(root, name, *, benchmark="slb", dataset="cifar10", estimator="mine", lam=None, seed=0, status="completed",
              metrics=None, steps=None, pid=None, started="2026-01-01T00:00:00", config_hash=None, cfg_extra=None,
              rec_extra=None):
    """A run directory by hand: config.yaml (``cfg_extra``: {group: {key: value}} merged in) and a version-1
    result.json (``rec_extra`` merged in)."""
    d = root / name
    d.mkdir(parents=True)
    est = {"name": estimator}
    if lam is not None:
        est.update(lam=lam, c_star=0.0)
    cfg = {"benchmark": {"name": benchmark}, "dataset": {"name": dataset, "batch_size": 64},
           "estimator": est, "critic": {"name": "separable"}, "seed": seed}
    for group, values in (cfg_extra or {}).items():
        cfg[group] = {**cfg.get(group, {}), **values} if isinstance(values, dict) else values
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    rec = {"status": status, "benchmark": benchmark, "dataset": dataset, "estimator": estimator, "critic": "separable",
           "lam": lam, "seed": seed, "config_hash": config_hash or name, "started_at": started, "metrics": metrics,
           **(rec_extra or {})}
    if pid is not None:
        rec.update(pid=pid, host=__import__("socket").gethostname())
    if status != "no record":
        (d / "result.json").write_text(json.dumps(rec))
    if steps is not None:
        steps.to_csv(d / "steps.csv", index=False)
    return d


def ci(xs):
    x = np.asarray(xs, float)
    return x.mean(), T975[len(x) - 1] * x.std(ddof=1) / math.sqrt(len(x))


def test_table2_means_intervals_bold_marker_and_best_lambda(tmp_path):
    rng = np.random.default_rng(0)
    mine_mi, mine_acc = [2.10, 2.20, 2.15, 2.05, 2.12], [0.80, 0.82, 0.81, 0.79, 0.80]
    re_good_mi, re_good_acc = [2.29, 2.30, 2.28, 2.30, 2.29], [0.80, 0.81, 0.80, 0.81, 0.82]
    for s in range(5):
        write_run(tmp_path, f"mine{s}", estimator="mine", seed=s, metrics={"mi_train": mine_mi[s], "test_acc": mine_acc[s]})
        write_run(tmp_path, f"re01_{s}", estimator="remine", lam=0.1, seed=s,
                  metrics={"mi_train": re_good_mi[s], "test_acc": re_good_acc[s]})
        write_run(tmp_path, f"re001_{s}", estimator="remine", lam=0.01, seed=s,  # worse MI: not chosen
                  metrics={"mi_train": 1.0 + rng.normal(0, 0.01), "test_acc": 0.99})
    made = lb.build(tmp_path)
    t2 = made["table2"]
    (row,) = t2.to_dict("records")
    assert row["lambda"] == 0.1
    for key, xs in (("mi_orig", mine_mi), ("acc_orig", mine_acc), ("mi_reg", re_good_mi), ("acc_reg", re_good_acc)):
        m, h = ci(xs)
        assert row[key] == pytest.approx(m, abs=1e-12) and row[f"{key}_ci95"] == pytest.approx(h, rel=1e-6)
    # MI: regularized higher and the intervals are disjoint -> bold + marker
    assert row["mi_better"] == "reg" and row["mi_separated"]
    # accuracy: regularized higher by 0.004 with overlapping intervals -> bold, no marker
    assert row["acc_better"] == "reg" and not row["acc_separated"]
    assert row["paper_mi_orig"] == "2.300 ± 0.003"  # published numbers beside ours
    md = (made["out"] / "leaderboard.md").read_text()
    m, h = ci(re_good_mi)
    assert f"**{m:.3f} ± {h:.3f}**†" in md
    m, h = ci(mine_mi)
    assert f"| {m:.3f} ± {h:.3f} |" in md  # the worse one is plain
    tex = (made["out"] / "leaderboard.tex").read_text()
    assert r"\textbf{" in tex and r"$^\dagger$" in tex
    assert (made["out"] / "table2.csv").exists() and (made["out"] / "lambda_ablation.png").exists()


def test_best_lambda_is_closest_to_log_c_not_largest(tmp_path):
    """Choi & Lee §5: lambda by the best MI estimation. A DV-type estimate above log C (CLB CIFAR-100 ReSMILE
    4.677 > log 100 = 4.605) is not better than one just under it."""
    for s in range(3):
        write_run(tmp_path, f"sm{s}", benchmark="clb", dataset="cifar100", estimator="smile", seed=s,
                  metrics={"mi_train": 4.0 + 0.01 * s, "test_acc": 0.3, "true_mi": math.log(100)})
        write_run(tmp_path, f"hi{s}", benchmark="clb", dataset="cifar100", estimator="resmile", lam=0.1, seed=s,
                  metrics={"mi_train": 4.9 + 0.01 * s, "test_acc": 0.3, "true_mi": math.log(100)})
        write_run(tmp_path, f"lo{s}", benchmark="clb", dataset="cifar100", estimator="resmile", lam=0.01, seed=s,
                  metrics={"mi_train": 4.5 + 0.01 * s, "test_acc": 0.3, "true_mi": math.log(100)})
    (row,) = lb.build(tmp_path)["table2"].to_dict("records")
    assert row["lambda"] == 0.01 and row["mi_reg"] == pytest.approx(4.51)
    assert lb.true_mi(pd.DataFrame({"dataset": ["cifar10"]})) == pytest.approx(math.log(10))  # no recorded true_mi


def test_compare_rules():
    assert lb.compare(1.0, 0.1, 2.0, 0.1) == ("reg", True)
    assert lb.compare(1.0, 0.6, 2.0, 0.6) == ("reg", False)
    assert lb.compare(2.0, 0.1, 1.0, 0.1) == ("orig", True)
    assert lb.compare(1.0, 0.1, 1.0, 0.1) == ("", False)
    assert lb.compare(1.0, math.nan, 2.0, 0.1) == ("reg", False)


def test_staircase_table_pools_seeds_with_median(tmp_path):
    rng = np.random.default_rng(1)
    all_est = []
    for s in range(3):
        est = np.r_[rng.normal(1.8, 0.1, 50), rng.normal(3.5, 0.2, 50)]
        est[7] = -1e6  # one huge negative spike (NWJ-like)
        all_est.append(est)
        steps = pd.DataFrame({"step": range(100), "level": [0] * 50 + [1] * 50, "true_mi": [2.0] * 50 + [4.0] * 50,
                              "estimate": est, "loss": -est, "joint": est, "marginal": 0.0})
        write_run(tmp_path, f"nwj{s}", benchmark="staircase", dataset="gaussian", estimator="nwj", seed=s, steps=steps,
                  config_hash=f"h{s}")
    st = lb.build(tmp_path)["staircase"]
    assert len(st) == 2 and (st["seeds"] == 3).all()
    lvl0 = np.concatenate([e[:50] for e in all_est])
    r = st[st["level"] == 0].iloc[0]
    assert r["mean"] == pytest.approx(lvl0.mean()) and r["median"] == pytest.approx(np.median(lvl0))
    assert r["bias"] == pytest.approx(lvl0.mean() - 2.0) and r["variance"] == pytest.approx(lvl0.var())
    assert r["mse"] == pytest.approx(((lvl0 - 2.0) ** 2).mean())
    assert abs(r["median"] - 1.8) < 0.05 and r["mean"] < -1e4  # the spike wrecks the mean, not the median


def write_sweep(root, task=("seed=0,1,2",), params=None):
    """A sweep folder's ``multirun.yaml`` as Hydra writes it: the command line's overrides, the sweeper's params."""
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"seed": 0, "hydra": {"overrides": {"task": list(task)}, "sweeper": {"params": params}}}
    (root / "multirun.yaml").write_text(yaml.safe_dump(cfg))
    return root


def test_failures_name_the_seeds(tmp_path):
    sweep = write_sweep(tmp_path / "multirun" / "s1", ["estimator=nwj,infonce,tuba", "seed=0,1,2"])
    for s in range(3):
        write_run(sweep, f"a{s}", estimator="nwj", seed=s, metrics={"mi_train": 2.0, "test_acc": 0.8})
    write_run(sweep, "b0", estimator="infonce", seed=0, metrics={"mi_train": 2.0, "test_acc": 0.8})
    write_run(sweep, "b1", estimator="infonce", seed=1, status="crashed")
    write_run(sweep, "b2", estimator="infonce", seed=2, status="running", pid=2**22 + 12345)  # no such process
    write_run(sweep, "c0", estimator="tuba", seed=0, status="diverged", metrics={"mi_train": 0.0, "test_acc": 0.1})
    write_run(sweep, "c1", estimator="tuba", seed=1, status="no record")  # seed 2: requested, never started
    # started on their own: a single run asks for its own seed, so seeds 1 and 2 of the sweep are not missing here
    write_run(tmp_path / "single", "js0", estimator="js", seed=0, metrics={"mi_train": 2.0, "test_acc": 0.8})
    write_run(tmp_path / "single", "smile5", estimator="smile", seed=5, status="crashed")
    made = lb.build(tmp_path)
    by = {r["estimator"]: r for r in made["failures"].to_dict("records")}
    assert set(by) == {"infonce", "tuba", "smile"}
    assert by["infonce"]["crashed"] == [1] and by["infonce"]["killed"] == [2] and by["infonce"]["missing"] == []
    assert by["tuba"]["diverged"] == [0] and by["tuba"]["no_record"] == [1] and by["tuba"]["missing"] == [2]
    assert by["smile"]["crashed"] == [5] and by["smile"]["missing"] == []
    assert "1 missing (requested by their sweep, never started)" in (made["out"] / "leaderboard.md").read_text()


@pytest.mark.parametrize("task, params, seeds", [
    (["seed=0,1"], {"seed": "0,1,2,3,4"}, (0, 1)),  # the command line narrows a preset
    ([], {"seed": "range(0,5)"}, (0, 1, 2, 3, 4)),  # a preset's sweep
    (["+seed=3"], None, (3,)), ([], None, (0,)),  # a fixed seed, the default
    (["seed=interval(0,1)"], None, None)])  # cannot be enumerated: unknown
def test_the_seeds_a_sweep_asked_for(tmp_path, task, params, seeds):
    assert lb.sweep_seeds(write_sweep(tmp_path, task, params) / "multirun.yaml") == seeds


def test_rerun_of_identical_config_counts_once(tmp_path):
    write_run(tmp_path, "old", estimator="mine", metrics={"mi_train": 1.0, "test_acc": 0.5}, config_hash="same",
              started="2026-01-01T00:00:00")
    write_run(tmp_path, "new", estimator="mine", metrics={"mi_train": 2.0, "test_acc": 0.6}, config_hash="same",
              started="2026-01-02T00:00:00")
    runs = lb.load_runs(tmp_path)
    assert len(runs) == 1 and runs.iloc[0]["m_mi_train"] == 2.0


def test_mean_ci_single_and_nonfinite():
    assert mean_ci([1.0, math.nan])[1] != mean_ci([1.0, math.nan])[1]  # one finite value: no interval (NaN)
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(T975[2] * 1.0 / math.sqrt(3))


def staircase_steps(rng, levels=(2.0, 4.0), n=20):
    est = np.concatenate([rng.normal(mi - 0.5, 0.1, n) for mi in levels])
    return pd.DataFrame({"step": range(len(est)), "level": np.repeat(range(len(levels)), n),
                         "true_mi": np.repeat(levels, n), "estimate": est, "loss": -est, "joint": est, "marginal": 0.0})


def test_configs_differing_in_clip_or_layers_are_separate_labelled_rows_and_panels(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    variants = {"c5": {"estimator": {"clip": 5.0}}, "c10": {"estimator": {"clip": 10.0}},
                "c10_l1": {"estimator": {"clip": 10.0}, "critic": {"layers": 1}}}
    for v, extra in variants.items():
        for s in range(2):
            noise = {"out_dir": f"/somewhere/{v}{s}", "logger": {"name": "csv"}}  # never a difference
            write_run(tmp_path, f"smile_{v}_{s}", benchmark="staircase", dataset="gaussian", estimator="smile", seed=s,
                      steps=staircase_steps(rng), cfg_extra={"critic": {"layers": 2}, **extra, **noise})
    write_run(tmp_path, "nwj", benchmark="staircase", dataset="gaussian", estimator="nwj", steps=staircase_steps(rng))
    figures = []
    monkeypatch.setattr(report_tables, "save_figure", lambda fig, path: figures.append(fig))
    made = lb.build(tmp_path)
    st = made["staircase"]
    smile = st[st["estimator"] == "smile"]
    assert smile["group"].nunique() == 3 and (smile["seeds"] == 2).all()  # seeds pooled, variants apart
    assert set(smile["variant"]) == {"critic.layers=2, estimator.clip=5", "critic.layers=2, estimator.clip=10",
                                     "critic.layers=1, estimator.clip=10"}
    assert set(st.loc[st["estimator"] == "nwj", "variant"]) == {""}  # alone: no label
    md = (made["out"] / "leaderboard.md").read_text()
    assert "| smile (critic.layers=2, estimator.clip=5) |" in md and "| nwj |" in md
    assert "out_dir" not in md and "logger" not in md
    titles = {" ".join(ax.get_title().split()) for ax in figures[0].axes if ax.get_title()}  # wrapped lines
    assert {"smile (critic.layers=2, estimator.clip=5)", "smile (critic.layers=1, estimator.clip=10)", "nwj"} <= titles


def test_only_keys_that_change_numbers_label_rows():
    configs = {"a": {"hardware.name": "cpu", "hardware.precision": "32-true", "hardware.threads": None},
               "b": {"hardware.name": "cpu", "hardware.precision": "32-true", "hardware.threads": 4},
               "c": {"hardware.name": "gpu", "hardware.precision": "bf16-mixed", "hardware.threads": None,
                     "hardware.extra": 1}}
    # hardware.precision / extra follow from hardware.name: only the name and the threads override are shown
    assert {g: lb._label(d) for g, d in lb.differences(configs).items()} == {
        "a": "hardware.name=cpu, hardware.threads=null", "b": "hardware.name=cpu, hardware.threads=4",
        "c": "hardware.name=gpu, hardware.threads=null"}


def test_table2_and_lambda_ablation_separate_settings(tmp_path, monkeypatch):
    for s in range(2):
        for epochs in (3, 30):
            extra = {"benchmark": {"epochs": epochs}}
            metrics = {"mi_train": 1.0 + epochs / 10 + s / 100, "test_acc": 0.5}
            write_run(tmp_path, f"mine_e{epochs}_{s}", estimator="mine", seed=s, metrics=metrics, cfg_extra=extra)
            write_run(tmp_path, f"remine_e{epochs}_{s}", estimator="remine", lam=0.1, seed=s, metrics=metrics,
                      cfg_extra=extra)
    figures = []
    monkeypatch.setattr(report_tables, "save_figure", lambda fig, path: figures.append(fig))
    made = lb.build(tmp_path)
    t2 = made["table2"]
    assert sorted(t2["setting"]) == ["benchmark.epochs=3", "benchmark.epochs=30"] and (t2["n_orig"] == 2).all()
    assert t2.set_index("setting").loc["benchmark.epochs=30", "mi_orig"] == pytest.approx(4.005)
    assert "| MINE (benchmark.epochs=30) |" in (made["out"] / "leaderboard.md").read_text()
    titles = [ax.get_title() for ax in figures[-1].axes if ax.get_title()]
    assert titles == ["SLB cifar10\nbenchmark.epochs=3", "SLB cifar10\nbenchmark.epochs=30"]


def test_rows_mixing_versions_are_flagged(tmp_path):
    rng = np.random.default_rng(3)

    def provenance(torch_version):
        return {"schema_version": 2, "versions": {"mibench": "0.1.0", "torch": torch_version, "python": "3.11.9",
                                                  "device": "cpu"}, "conventions": {}}

    for s, tv in enumerate(("2.13.0", "2.14.0")):
        write_run(tmp_path, f"mixed{s}", benchmark="staircase", dataset="gaussian", estimator="infonce", seed=s,
                  steps=staircase_steps(rng), rec_extra=provenance(tv))
    for s in range(2):
        write_run(tmp_path, f"same{s}", benchmark="staircase", dataset="gaussian", estimator="nwj", seed=s,
                  steps=staircase_steps(rng), rec_extra=provenance("2.13.0"))
    made = lb.build(tmp_path)
    st = made["staircase"].drop_duplicates("group").set_index("estimator")
    assert st.loc["infonce", "mixed"] == "torch 2.13.0 / 2.14.0" and st.loc["nwj", "mixed"] == ""
    md = (made["out"] / "leaderboard.md").read_text()
    assert "| infonce‡ |" in md and "| nwj |" in md
    assert "- infonce (gaussian, separable): torch 2.13.0 / 2.14.0" in md


def machine(**changes):
    """A result.json's ``machine`` (rec_extra), with ``changes``."""
    return {"machine": {"device": "cpu", "cpu_capability": "AVX512", "blas": "mkl 2024.2", "lapack": "mkl", "threads": 4,
                        "torch": "2.13.0", "platform": "x86_64", "cpu": "Some CPU", "env": {}, **changes}}


ENV_NOTE = "note: this table mixes runs from"


def test_a_table_mixing_compute_environments_says_so(tmp_path):
    rng = np.random.default_rng(4)
    envs = [machine(), machine(), machine(cpu="Another CPU"), machine(cpu_capability="DEFAULT", threads=1), {}]
    for s, env in enumerate(envs):  # the last: a record without machine (an older run)
        write_run(tmp_path, f"stair{s}", benchmark="staircase", dataset="gaussian", estimator="infonce", seed=s,
                  steps=staircase_steps(rng), rec_extra=env)
    write_run(tmp_path, "stair_crashed", benchmark="staircase", dataset="gaussian", estimator="infonce", seed=9,
              status="crashed", rec_extra=machine(device="NVIDIA H100"))  # not in the table: not counted
    for s in range(2):  # SLB runs from one environment: their table has no note
        write_run(tmp_path, f"slb{s}", seed=s, metrics={"mi_train": 1.0 + s, "test_acc": 0.5},
                  rec_extra=machine(device="NVIDIA H100"))
    md = (lb.build(tmp_path)["out"] / "leaderboard.md").read_text()
    assert md.count(ENV_NOTE) == 1
    (line,) = [ln for ln in md.splitlines() if ln.startswith(ENV_NOTE)]
    assert line == ("note: this table mixes runs from 3 compute environments (cpu_capability: AVX512 ×3, DEFAULT ×1; "
                    "threads: 4 ×3, 1 ×1; not recorded ×1) — per-step values differ across kernels within the drift "
                    "documented in docs/results.md")
    assert md.index("## Staircase") < md.index(ENV_NOTE) < md.index("## Crashed")


def test_a_table_from_one_compute_environment_has_no_note(tmp_path):
    rng = np.random.default_rng(5)
    for s in range(3):  # the CPU model is recorded but is no kernel difference
        write_run(tmp_path, f"stair{s}", benchmark="staircase", dataset="gaussian", estimator="nwj", seed=s,
                  steps=staircase_steps(rng), rec_extra=machine(cpu=f"CPU {s}"))
    assert ENV_NOTE not in (lb.build(tmp_path)["out"] / "leaderboard.md").read_text()


OLD_RUN = Path(__file__).parent / "fixtures" / "old_run"  # written by main before schema 2 (result.json v1)


def test_old_run_directory_still_makes_the_leaderboard(tmp_path):
    shutil.copytree(OLD_RUN, tmp_path / "old_run")
    made = lb.build(tmp_path)
    (run,) = made["runs"].to_dict("records")
    assert run["schema_version"] == 1 and run["mibench_version"] == "unknown" and run["status"] == "completed"
    st = made["staircase"]
    summary = pd.read_csv(OLD_RUN / "summary.csv")
    assert list(st["true_mi"]) == list(summary["true_mi"]) and list(st["variant"]) == ["", ""]
    assert st["mean"].to_numpy() == pytest.approx(summary["mean"].to_numpy(), rel=1e-6)
    # a newer (schema 2) seed of the same configuration pools with it, flagged: the old one's versions are unknown
    new = tmp_path / "new_seed"
    shutil.copytree(OLD_RUN, new)
    cfg = yaml.safe_load((new / "config.yaml").read_text())
    (new / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": 1}))
    rec = json.loads((new / "result.json").read_text())
    rec.update(seed=1, config_hash="0" * 16, schema_version=2, conventions={},
               versions={"mibench": "0.1.0", "torch": "2.13.0", "python": "3.11.9", "device": "cpu"})
    (new / "result.json").write_text(json.dumps(rec))
    st = lb.build(tmp_path)["staircase"]
    assert (st["seeds"] == 2).all() and st["group"].nunique() == 1
    assert st["mixed"].iloc[0] == "mibench 0.1.0 / unknown; torch 2.13.0 / unknown; conventions {} / unknown"


def test_latex_escapes_headers_like_cells():
    tex = lb._render(["true_mi", "λ"], [["a_b‡", "0.1"]], latex=True)
    assert r"true\_mi & $\lambda$ \\" in tex and r"a\_b$^\ddagger$ & 0.1 \\" in tex


BMI_TRUE = {"1v1-normal-0.75": 0.8, "multinormal-dense-5-5-0.5": 1.6}
BMI_BEST = {("1v1-normal-0.75", "infonce"): [0.60, 0.64, 0.56], ("1v1-normal-0.75", "nwj"): [0.95, 1.10, 0.86],
            ("multinormal-dense-5-5-0.5", "infonce"): [1.20, 1.31, 1.25],
            ("multinormal-dense-5-5-0.5", "nwj"): [1.50, 1.62],
            ("pairs.npz", "infonce"): [2.0, 2.3, 2.1], ("pairs.npz", "nwj"): [1.9, 2.6, 2.2]}


def write_bmi_runs(root):
    """Two Beyond-Normal tasks and a sample file without a true MI, x infonce / nwj x 3 seeds; the dense
    task's nwj seed 2 crashed. The final estimate is the best minus 0.05 * (seed + 1)."""
    for (task, est), best in BMI_BEST.items():
        data = {"name": "samples", "path": f"/data/{task}"} if task == "pairs.npz" else {"name": "bmi", "task": task}
        for s in range(3):
            name = f"{task}_{est}_{s}"
            extra = {"cfg_extra": {"dataset": data}, "rec_extra": {"wall_time_s": 10.0 * (s + 1), "steps_done": 500}}
            if s == len(best):
                write_run(root, name, benchmark="samples", dataset=data["name"], estimator=est, seed=s,
                          status="crashed", **extra)
                continue
            metrics = {"true_mi": BMI_TRUE.get(task), "best_test_estimate": best[s],
                       "test_estimate": best[s] - 0.05 * (s + 1), "best_step": 400, "stopped_early": s == 0}
            write_run(root, name, benchmark="samples", dataset=data["name"], estimator=est, seed=s, metrics=metrics,
                      **extra)


def test_bmi_table_means_sd_relative_errors_markdown_and_figure(tmp_path):
    import statistics

    write_bmi_runs(tmp_path)
    write_run(tmp_path, "other", benchmark="onehot", estimator="infonce", metrics={"best_test_estimate": 9.0})
    made = lb.build(tmp_path)
    out = made["out"]
    bt = pd.read_csv(out / "bmi.csv", keep_default_na=False, na_values=[""])
    assert list(dict.fromkeys(bt["task"])) == ["1v1-normal-0.75", "multinormal-dense-5-5-0.5", "pairs.npz"]
    assert list(bt["estimator"]) == ["infonce", "nwj"] * 3 and len(made["bmi"]) == 6  # no onehot row
    cells = {}
    for r in bt.to_dict("records"):
        best = BMI_BEST[r["task"], r["estimator"]]
        mean, sd = statistics.fmean(best), statistics.stdev(best)
        truth = BMI_TRUE.get(r["task"], math.nan)
        assert r["seeds"] == len(best) and r["runs"] == 3 and r["crashed"] == 3 - len(best) and r["diverged"] == 0
        assert r["mean"] == pytest.approx(mean, rel=1e-8) and r["sd"] == pytest.approx(sd, rel=1e-8)
        assert r["final_mean"] == pytest.approx(mean - 0.05 * (len(best) + 1) / 2, rel=1e-8)
        assert r["wall_time_s"] == pytest.approx(statistics.fmean(10.0 * (s + 1) for s in range(len(best))))
        assert r["stopped_early"] == 1 and r["variant"] != r["variant"]  # NaN: one configuration each
        if math.isnan(truth):
            assert math.isnan(r["true_mi"]) and math.isnan(r["rel_error"]) and math.isnan(r["abs_error"])
        else:
            assert r["true_mi"] == truth and r["rel_error"] == pytest.approx((mean - truth) / truth, rel=1e-8)
            assert r["abs_error"] == pytest.approx(abs(mean - truth), rel=1e-8)
        cells[r["task"], r["estimator"]] = f"{mean:.3f} ± {sd:.3f}" + (" [2/3]" if len(best) == 2 else "")
    md = (out / "leaderboard.md").read_text()
    assert "## Beyond-Normal and sample-file runs" in md and "best held-out estimate" in md
    assert "| Task | true MI | infonce | nwj |" in md
    for task in ("1v1-normal-0.75", "multinormal-dense-5-5-0.5", "pairs.npz"):
        truth = f"{BMI_TRUE[task]:.3f}" if task in BMI_TRUE else "–"
        assert f"| {task} | {truth} | {cells[task, 'infonce']} | {cells[task, 'nwj']} |" in md
    assert cells["multinormal-dense-5-5-0.5", "nwj"] == "1.560 ± 0.085 [2/3]"
    tex = (out / "leaderboard.tex").read_text()
    assert r"\usepackage[table]{xcolor}" in tex  # 1v1 infonce: (0.6 - 0.8) / 0.8 = -25 % of 60, nwj: +21.25 %
    assert r"1v1-normal-0.75 & 0.800 & \cellcolor{blue!15}0.600 $\pm$ 0.040 & \cellcolor{red!13}0.970" in tex
    assert r"pairs.npz & -- & 2.133 $\pm$ 0.153 & 2.233" in tex  # no true MI: no colour
    png = out / "bmi_suite.png"
    assert png in made["figures"] and png.read_bytes()[:4] == b"\x89PNG" and "![bmi_suite.png]" in md


def test_bmi_configurations_stay_apart_and_files_are_told_apart(tmp_path, monkeypatch):
    for critic in ("separable", "concat"):
        for s in range(2):
            write_run(tmp_path, f"{critic}{s}", benchmark="samples", dataset="bmi", estimator="infonce", seed=s,
                      metrics={"true_mi": 1.0, "best_test_estimate": 1.0 if critic == "concat" else 0.5},
                      cfg_extra={"dataset": {"task": "1v1-normal-0.75"}, "critic": {"name": critic}})
    for d in ("a", "b"):
        write_run(tmp_path, f"file_{d}", benchmark="samples", dataset="samples", estimator="infonce",
                  metrics={"true_mi": None, "best_test_estimate": 2.0},
                  cfg_extra={"dataset": {"path": f"/x/{d}/pairs.npz"}, "critic": {"name": "concat"}})
    monkeypatch.setattr(lb, "bmi_suite", lambda bt, path: False)
    made = lb.build(tmp_path)
    bt = made["bmi"].set_index(["task", "variant"])
    assert bt.loc[("1v1-normal-0.75", "critic.name=concat"), "mean"] == 1.0
    assert bt.loc[("1v1-normal-0.75", "critic.name=separable"), "mean"] == 0.5
    assert set(made["bmi"]["task"]) == {"1v1-normal-0.75", "a/pairs.npz", "b/pairs.npz"}
    md = (made["out"] / "leaderboard.md").read_text()
    assert "| Task | true MI | infonce (critic.name=concat) | infonce (critic.name=separable) |" in md
    assert "| 1v1-normal-0.75 | 1.000 | 1.000 ± 0.000 | 0.500 ± 0.000 |" in md
    assert "| a/pairs.npz | – | 2.000 |  |" in md  # one seed: no sd; no separable run of the file
    assert lb.file_labels(["/d/x.npz", "/e/y.npz", "x.npz"]) == {"/d/x.npz": "d/x.npz", "/e/y.npz": "y.npz",
                                                                  "x.npz": "x.npz"}


# ----------------------------------------------------------------------------------------- malformed files
def good_staircase_runs(root, seeds=(0, 1, 2)):
    """Completed nwj staircase runs of one configuration (levels 2 and 4 nats), one per seed."""
    rng = np.random.default_rng(6)
    levels = {"dataset": {"mi_levels": [2, 4]}}
    return [write_run(root, f"nwj_s{s}", benchmark="staircase", dataset="gaussian", estimator="nwj", seed=s,
                      steps=staircase_steps(rng), cfg_extra=levels, config_hash=f"h{s}") for s in seeds]


def _rewrite(d, name, change):
    """Rewrite run ``d``'s file ``name`` (text) with ``change``."""
    (d / name).write_text(change((d / name).read_text()))


def _steps_with(d, **cells):
    """Run ``d``'s steps.csv with ``column=(row, value)`` written over."""
    steps = pd.read_csv(d / "steps.csv").astype(object)
    for col, (row, value) in cells.items():
        steps.loc[row, col] = value
    steps.to_csv(d / "steps.csv", index=False)


def _record(d, **changes):
    rec = json.loads((d / "result.json").read_text())
    (d / "result.json").write_text(json.dumps({**rec, **changes}))


# name -> (what it does to a fourth seed's run directory, the skipped path below the runs folder, the reason)
MALFORMED = {
    "ragged_steps": (lambda d: _rewrite(d, "steps.csv", lambda t: t.replace("\n3,", "\n3,9,", 1)),
                     "bad/steps.csv", "ragged (Expected 7 fields in line 5, saw 8)"),
    "empty_steps": (lambda d: (d / "steps.csv").write_text(""), "bad/steps.csv", "empty"),
    "binary_steps": (lambda d: (d / "steps.csv").write_bytes(np.random.default_rng(0).bytes(2048)), "bad/steps.csv",
                     "not text (binary data)"),
    "phantom_level": (lambda d: _rewrite(d, "steps.csv", lambda t: t + "40,7,16,3.0,-3.0,3.0,0.0\n"), "bad/steps.csv",
                      "level 7 in line 42 is not one of this run's 2 levels (0-1, dataset.mi_levels)"),
    "oops_estimate": (lambda d: _steps_with(d, estimate=(2, "oops")), "bad/steps.csv", "estimate holds 'oops' in line 4"),
    "banana_status": (lambda d: _record(d, status="banana"), "bad/result.json",
                      "unknown status 'banana' (valid: running, completed, diverged, crashed, interrupted, killed)"),
    "record_is_a_list": (lambda d: (d / "result.json").write_text("[1, 2]"), "bad/result.json",
                         "holds a list, not an object"),
    "metrics_is_a_list": (lambda d: _record(d, metrics=[1, 2]), "bad/result.json",
                          "metrics holds a list ([1, 2]), not an object"),
    "record_not_json": (lambda d: (d / "result.json").write_text("{\"status\": "), "bad/result.json",
                        "not valid JSON (Expecting value: line 1 column 12 (char 11))"),
    "config_not_a_mapping": (lambda d: (d / "config.yaml").write_text("- a\n- b\n"), "bad/config.yaml",
                             "holds a list, not a mapping"),
}


def malformed_tree(root, case):
    """Three good seeds and a fourth run broken as MALFORMED[case] says (``empty_run_dir``: an empty folder);
    returns (skipped path, reason)."""
    good_staircase_runs(root)
    if case == "empty_run_dir":
        (root / "bad" / ".hydra").mkdir(parents=True)
        return "bad", lb.EMPTY_RUN_DIR
    (d,) = good_staircase_runs(root, seeds=(3,))
    d.rename(root / "bad")
    breaks, path, reason = MALFORMED[case]
    breaks(root / "bad")
    return path, reason


@pytest.mark.parametrize("case", [*MALFORMED, "empty_run_dir"])
def test_leaderboard_names_each_malformed_file_and_counts_seeds_like_the_status_table(tmp_path, case):
    path, reason = malformed_tree(tmp_path, case)
    made = lb.build(tmp_path)
    md = (made["out"] / "leaderboard.md").read_text()
    assert f"| {path} | {reason} |" in md and md.index("## Skipped") > md.index("## Crashed")
    assert made["skipped"].to_dict("records") == [{"path": path, "reason": reason}]
    st = made["staircase"]  # the good seeds' table, intact
    assert len(st) == 2 and (st["seeds"] == 3).all() and list(st["true_mi"]) == [2.0, 4.0]
    invalid = case != "empty_run_dir"
    status = f"{4 if invalid else 3} runs: 3 completed{', 1 invalid' if invalid else ''}; 1 records or files skipped"
    assert status in md.splitlines()[2]
    if invalid:
        (fl,) = [r for r in made["failures"].to_dict("records") if r["invalid"]]  # (a broken config: its own row)
        assert fl["invalid"] == [3] and reason in fl["errors"] and fl["missing"] == []
        # the good seeds' row (the broken run's own when its config is unreadable: the good config is complete)
        assert made["failures"]["completed"].sum() == (0 if case == "config_not_a_mapping" else 3)
        assert "every run completed" not in md
    else:
        assert "None: every run completed." in md


def test_staircase_grid_gives_each_step_budget_its_own_labelled_row_and_axis(tmp_path, monkeypatch):
    """Runs of 1,000 and 10,000 steps: a row each, labelled with dataset, critic and step budget, every panel's
    x-axis its own run's steps; the same estimator in the same column."""
    rng = np.random.default_rng(9)
    for est, n in (("infonce", 500), ("nwj", 500), ("infonce", 5000), ("js", 5000)):
        levels = {"dataset": {"mi_levels": [2, 4], "steps_per_level": n}}
        write_run(tmp_path, f"{est}_{n}", benchmark="staircase", dataset="gaussian", estimator=est,
                  steps=staircase_steps(rng, n=n), cfg_extra=levels)
    figures = []
    monkeypatch.setattr(report_tables, "save_figure", lambda fig, path: figures.append(fig))
    lb.build(tmp_path)
    (fig,) = [f for f in figures if "true MI" in f._suptitle.get_text()]
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 6 and len(drawn) == 4  # 2 rows x (infonce, nwj, js); nwj has no 10k run, js no 1k
    rows = {}
    for ax in drawn:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
    (top, bottom) = (rows[k] for k in sorted(rows, reverse=True))
    for row, steps in ((top, 1000), (bottom, 10000)):
        assert all(ax.get_xlim() == (0, steps - 1) for ax in row)  # its own axis, not the other row's
        label = sorted(row, key=lambda ax: ax.get_position().x0)[0].get_ylabel()
        assert label == f"gaussian, separable critic\n{steps:,} steps (2 levels x {steps // 2:,})\nMI (nats)"
    assert [ax.get_title() for ax in sorted(top, key=lambda a: a.get_position().x0)] == ["infonce", "nwj"]
    columns = {ax.get_title(): round(ax.get_position().x0, 3) for ax in bottom}
    assert columns["infonce"] == min(ax.get_position().x0 for ax in top).__round__(3)  # same column as above
