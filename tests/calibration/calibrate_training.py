"""Calibration of the tests that train and then compare a learned estimate (or accuracy) with a truth or a
threshold: each measurement below reproduces one test's exact setup (its overrides, imported from the test
module) with the seed varied (``seed=N``, or the generator seed where the test seeds one itself), and returns
the tested quantities; calib.py runs them for seeds x CPU kernel paths and prints mean, sd and the margin of
each test's limit in sd. Reproduce the figures in the tests' docstrings with
``nice -n 5 .venv/bin/python tests/calibration/calibrate_training.py --seeds 0-4 --paths native,default``
(about 17 minutes on a busy 2-core machine; ``--only NAME[,NAME]`` for some of them).
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import calib  # noqa: F401  (puts tests/ on sys.path)
import pandas as pd
import torch

from mibench.app import run
from mibench.compose import compose_config

QUIET = ["logger=none", "trainer.enable_progress_bar=false"]


def samples_gaussian(s: int, d: Path) -> dict[str, float]:
    """test_samples.py::test_gaussian_sample_with_known_mi_ends_within_tolerance"""
    import test_samples as T
    from mibench.data.samples import save_samples

    x, y, mi = T.gaussian(2000, 2, 0.8)
    pairs = save_samples(d / "pairs.npz", x, y, mi)
    cfg = T.cfg_for(pairs, d / "run", "estimator=infonce", "benchmark.steps=600", "benchmark.eval_every=100",
                    "benchmark.plot=true", f"seed={s}")
    m = run(cfg, d / "run", echo=False).metrics
    return {"best_minus_true": m["best_test_estimate"] - m["true_mi"], "final_minus_true": m["test_estimate"] - m["true_mi"]}


def training_tight(estimator: str):
    def measure(s: int, d: Path) -> dict[str, float]:
        """test_training.py::test_short_training_is_tight[estimator]"""
        import test_training as T

        steps = run(compose_config([f"estimator={estimator}"] + T.TIGHT + T.QUIET + [f"seed={s}"], out_dir=d),
                    echo=False)["steps"]
        final = steps["estimate"].iloc[-100:].mean()
        return {"final_minus_true": final - 1.0, "final_minus_first20": final - steps["estimate"].iloc[:20].mean()}
    return measure


def training_stateful(s: int, d: Path) -> dict[str, float]:
    """test_training.py::test_eta_mine_and_alpha_train"""
    import test_training as T

    out = {}
    for name in ("eta_mine", "alpha", "mine"):
        extra = ["estimator.ema=true"] if name == "mine" else []
        cfg = compose_config([f"estimator={name}"] + T.TIGHT + T.QUIET + extra + [f"seed={s}"], out_dir=d / name)
        out[f"{name}_final_minus_true"] = run(cfg, echo=False)["steps"]["estimate"].iloc[-100:].mean() - 1.0
    return out


def extending_gauss1d(s: int, d: Path) -> dict[str, float]:
    """test_extending.py::test_a_new_benchmark_is_one_task_class_and_one_yaml (the estimate; the group is drift.py's)"""
    from calibrate_drift import gauss1d_conf

    with gauss1d_conf(d) as conf:
        cfg = compose_config(["benchmark=gauss1d", conf, "critic=concat", "critic.hidden=32", "dataset.batch_size=64",
                              *QUIET, f"seed={s}"], out_dir=d / "run")
        m = run(cfg, echo=False).metrics
    return {"final_minus_true": m["final"] - m["true_mi"]}


def extending_new_estimator(s: int, d: Path, onehot_steps: tuple[int, ...] = (30,)) -> dict[str, float]:
    """test_extending.py::test_new_estimator_runs_through_two_benchmarks[bench0, bench1]"""
    import test_extending as T
    from mibench.estimators import REGISTRY, Spec

    conf = d / "conf"
    (conf / "estimator").mkdir(parents=True)
    (conf / "estimator" / "scaled_dv.yaml").write_text("name: scaled_dv\nscale: 0.5\n")
    REGISTRY["scaled_dv"] = Spec(T.scaled_dv)
    benches = {"staircase": ["dataset.dim=2", "dataset.mi_levels=[1]", "dataset.steps_per_level=30",
                             "dataset.batch_size=16", "benchmark.plot=false"]}
    benches.update({f"onehot{n}".replace("onehot30", "onehot"): ["benchmark=onehot", f"benchmark.steps={n}",
                                                                 "benchmark.plot=false"] for n in onehot_steps})
    out = {}
    try:
        for k, bench in benches.items():
            cfg = compose_config(["estimator=scaled_dv", f"hydra.searchpath=[file://{conf}]", *bench, *QUIET,
                                  f"seed={s}"], out_dir=d / k)
            run(cfg, echo=False)
            est = pd.read_csv(d / k / "steps.csv")["estimate"]
            out[f"{k}_last5_minus_first5"] = est.iloc[-5:].mean() - est.iloc[:5].mean()
            if k.startswith("onehot"):
                out[f"{k}_last10_minus_first10"] = est.iloc[-10:].mean() - est.iloc[:10].mean()
    finally:
        REGISTRY.pop("scaled_dv")
    return out


def eta_gaussian_2d(s: int, d: Path) -> dict[str, float]:
    """test_eta_gaussian.py::test_eta_mine_2d_close_to_truth_and_convex"""
    cfg = compose_config(["benchmark=eta_gaussian", "estimator=eta_mine", "benchmark.steps=600",
                          "benchmark.eval_every=200", "benchmark.plot=true"] + QUIET + [f"seed={s}"], out_dir=d)
    m = run(cfg, echo=False)["metrics"]
    return {"test_minus_true": m["test_estimate"] - m["true_mi"],
            "convex_minus_test": m["convex_test_estimate"] - m["test_estimate"],
            "convex_minus_true": m["convex_test_estimate"] - m["true_mi"]}


def onehot_drift(s: int, d: Path) -> dict[str, float]:
    """test_onehot.py::test_mine_drifts_remine_does_not, ::test_summary_numbers_from_steps_csv (the supports),
    ::test_remine_marginal_ends_at_c_star"""
    import test_onehot as T

    short = [o for o in T.SHORT if not o.startswith("seed=")] + [f"seed={s}"]
    m = {e: run(compose_config(short + [f"estimator={e}"], out_dir=d / e), echo=False)["metrics"] for e in ("mine", "remine")}
    steps = pd.read_csv(d / "mine" / "steps.csv").iloc[500:]
    c2 = run(compose_config(short + ["estimator=remine", "c_star=2"], out_dir=d / "c2"), echo=False)["metrics"]
    ratio = abs(m["mine"]["drift_slope_per_1k"]) / abs(m["remine"]["drift_slope_per_1k"])
    return {"mine_abs_slope": abs(m["mine"]["drift_slope_per_1k"]), "slope_ratio": ratio,
            "log_mine_abs_slope": math.log(abs(m["mine"]["drift_slope_per_1k"])), "log_slope_ratio": math.log(ratio),
            "remine_marginal_end": m["remine"]["marginal_end"],
            "mine_estimate_minus_log16": m["mine"]["estimate_end"] - math.log(16),
            "remine_estimate_minus_log16": m["remine"]["estimate_end"] - math.log(16),
            "mine_min_support_gap": float((steps["t_support"] - steps["t_off_support"]).min()),
            "remine_c2_marginal_minus_2": c2["marginal_end"] - 2.0}


def cifar_runs(s: int, d: Path) -> dict[str, float]:
    """test_cifar.py::test_slb_end_to_end, ::test_clb_end_to_end[random, balanced] (the accuracies and MI)"""
    import test_cifar as T
    from mibench.data.fake_cifar import write_fake_cifar

    root = d / "cifar"
    write_fake_cifar(root, classes=10, train_per_class=16, test_per_class=6, seed=1)
    cfg = compose_config(["estimator=remine", "dataset=cifar10", f"dataset.root={root}", "benchmark.epochs=3",
                          "dataset.batch_size=16", "lambda=0.01", "benchmark.lr=3e-3", "logger=csv"] + T.QUIET[1:]
                         + [f"seed={s}"], out_dir=d / "slb")
    run(cfg, echo=False)
    row = pd.read_csv(d / "slb" / "result.csv").iloc[0]
    out = {"slb_test_acc": row["test_acc"], "slb_mi_train": row["mi_train"]}
    for sampler in ("random", "balanced"):
        cfg = compose_config(["estimator=reinfonce", "benchmark=clb", f"dataset.root={root}", "benchmark.epochs=2",
                              "dataset.batch_size=8", f"benchmark.sampler={sampler}", "critic.embed=16"] + T.QUIET
                             + [f"seed={s}"], out_dir=d / sampler)
        out[f"clb_{sampler}_test_acc"] = run(cfg, echo=False)["metrics"]["test_acc"]
    return out


def progress_probes(s: int, d: Path) -> dict[str, float]:
    """test_progress.py::test_dim_probe_bar_shows_each_probes_training_accuracy (the probe learned its labels);
    the test's data seed 0 and training seed 1 become s and s + 1"""
    from mibench.probes import Probes, train_probes

    torch.manual_seed(s)
    y = torch.arange(40) % 4
    sep = {layer: torch.nn.functional.one_hot(y, 4).float().repeat(1, 3) + 0.01 * torch.randn(40, 12)
           for layer in ("fc", "y")}
    seen, orig = [], Probes.progress

    def spy(self, lo, hi, rows, shown=None):
        seen.append(orig(self, lo, hi, rows, shown))
        return seen[-1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    Probes.progress, err = spy, sys.stderr
    sys.stderr = Terminal()
    try:
        torch.manual_seed(s + 1)
        train_probes(sep, y, sep, y, 4, epochs=30, lr=1e-2, batch_size=8, progress=True)
    finally:
        Probes.progress, sys.stderr = orig, err
    return {"linear_y_first_epoch": seen[0]["linear/y"], "linear_y_last_epoch": seen[-1]["linear/y"]}


def eta_convex(s: int, d: Path) -> dict[str, float]:
    """test_eta_gaussian.py::test_convex_eta_dv_recovers_mi_with_exact_features (generator seed 0 -> s) and
    ::test_convex_fit_improves_on_network_objective (torch.manual_seed(0) -> s)"""
    from test_eta_gaussian import convex_gain, exact_feature_fit
    from mibench.data.gaussian import mi_from_rho

    rho = 0.8
    w, value = exact_feature_fit(rho, seed=s)
    before, after = convex_gain(s)
    return {"exact_value_minus_true": value - mi_from_rho(rho, 1), "exact_w0_rel_error": w[0].item() / (rho / (1 - rho**2)) - 1,
            "network_after_minus_before": after - before}


MEASURES = {"samples_gaussian": samples_gaussian, "training_tight_infonce": training_tight("infonce"),
            "training_tight_remine": training_tight("remine"), "training_stateful": training_stateful,
            "extending_gauss1d": extending_gauss1d, "extending_new_estimator": extending_new_estimator,
            "extending_onehot_longer": lambda s, d: extending_new_estimator(s, d, onehot_steps=(60, 100)),
            "eta_gaussian_2d": eta_gaussian_2d, "onehot_drift": onehot_drift, "cifar_runs": cifar_runs,
            "progress_probes": progress_probes, "eta_convex": eta_convex}

# the limits the tests put on these quantities now (calib.py prints the margin of each in sd)
LIMITS = {
    ("samples_gaussian", "best_minus_true"): ("in", -0.2, 0.1),
    ("training_tight_infonce", "final_minus_true"): ("abs<", 0.3),
    ("training_tight_infonce", "final_minus_first20"): (">", 0.0),
    ("training_tight_remine", "final_minus_true"): ("abs<", 0.3),
    ("training_tight_remine", "final_minus_first20"): (">", 0.0),
    **{("training_stateful", f"{n}_final_minus_true"): ("abs<", 0.5) for n in ("eta_mine", "alpha", "mine")},
    ("extending_gauss1d", "final_minus_true"): ("abs<", 0.15),
    ("extending_new_estimator", "staircase_last5_minus_first5"): (">", 0.0),
    ("extending_new_estimator", "onehot_last5_minus_first5"): (">", 0.0),
    ("extending_onehot_longer", "onehot100_last5_minus_first5"): (">", 0.0),
    ("eta_gaussian_2d", "test_minus_true"): ("abs<", 0.25),
    ("eta_gaussian_2d", "convex_minus_test"): ("abs<", 0.1),
    ("eta_gaussian_2d", "convex_minus_true"): ("<", 0.25),
    ("onehot_drift", "log_mine_abs_slope"): (">", math.log(0.2)),  # slope > 0.2, ratio > 1.3: positive, skewed
    ("onehot_drift", "log_slope_ratio"): (">", math.log(1.3)),  # spreads, so their margins on the log scale
    ("onehot_drift", "remine_marginal_end"): ("abs<", 0.2),
    ("onehot_drift", "mine_estimate_minus_log16"): ("abs<", 0.5),
    ("onehot_drift", "remine_estimate_minus_log16"): ("abs<", 0.5),
    ("onehot_drift", "mine_min_support_gap"): (">", 0.0),
    ("onehot_drift", "remine_c2_marginal_minus_2"): ("abs<", 0.2),
    ("cifar_runs", "slb_test_acc"): (">", 0.4),
    ("cifar_runs", "slb_mi_train"): (">", 0.5),
    ("cifar_runs", "clb_random_test_acc"): (">", 0.25),
    ("cifar_runs", "clb_balanced_test_acc"): (">", 0.25),
    ("progress_probes", "linear_y_first_epoch"): ("<", 1.0),
    ("progress_probes", "linear_y_last_epoch"): (">", 1.0 - 1e-9),
    ("eta_convex", "exact_value_minus_true"): ("abs<", 0.04),
    ("eta_convex", "exact_w0_rel_error"): ("abs<", 0.1),
    ("eta_convex", "network_after_minus_before"): (">", 0.05),
}

if __name__ == "__main__":
    calib.main(MEASURES, LIMITS, __file__)
