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


def test_failures_name_the_seeds(tmp_path):
    for s in range(3):
        write_run(tmp_path, f"a{s}", estimator="nwj", seed=s, metrics={"mi_train": 2.0, "test_acc": 0.8})
    write_run(tmp_path, "b0", estimator="infonce", seed=0, metrics={"mi_train": 2.0, "test_acc": 0.8})
    write_run(tmp_path, "b1", estimator="infonce", seed=1, status="crashed")
    write_run(tmp_path, "b2", estimator="infonce", seed=2, status="running", pid=2**22 + 12345)  # no such process
    write_run(tmp_path, "c0", estimator="tuba", seed=0, status="diverged", metrics={"mi_train": 0.0, "test_acc": 0.1})
    write_run(tmp_path, "c1", estimator="tuba", seed=1, status="no record")
    fl = lb.build(tmp_path)["failures"]
    by = {r["estimator"]: r for r in fl.to_dict("records")}
    assert set(by) == {"infonce", "tuba"}
    assert by["infonce"]["crashed"] == [1] and by["infonce"]["killed"] == [2] and by["infonce"]["missing"] == []
    assert by["tuba"]["diverged"] == [0] and by["tuba"]["no_record"] == [1] and by["tuba"]["missing"] == [2]


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
    monkeypatch.setattr(lb, "save_figure", lambda fig, path: figures.append(fig))
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
    monkeypatch.setattr(lb, "save_figure", lambda fig, path: figures.append(fig))
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
