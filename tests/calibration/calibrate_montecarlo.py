"""Calibration of the tests that check a Monte Carlo average against a truth or a threshold without training a
network (the analytic optimal critic, known encoders, samplers, the fake data's signal) -- plus the sandwich
and known-encoder staircase runs, whose q(y) trains: each measurement reproduces one test's setup (its helper
imported from the test module) with the seed varied (the generator / sweep / ``seed=N`` seed the test fixes),
and returns the tested quantities (z = (mean - truth) / standard error where the test's limit is in standard
errors). calib.py runs them for seeds x CPU kernel paths and prints mean, sd and each limit's margin in sd.
Reproduce with ``nice -n 5 .venv/bin/python tests/calibration/calibrate_montecarlo.py --seeds 0-4 --paths
native,default`` (about 10 minutes on a busy 2-core machine).
"""
from __future__ import annotations

import math
from pathlib import Path

import calib  # noqa: F401  (puts tests/ on sys.path)
import numpy as np
import pandas as pd
import torch

from mibench.app import run
from mibench.compose import compose_config


def optimal_critic(s: int, d: Path) -> dict[str, float]:
    """test_optimal_critic.py: ::test_nwj_dv_tuba_unbiased_with_optimal_critic[1.0, 2.0],
    ::test_infonce_approaches_min_mi_log_n, ::test_loo_upper_bound_is_above_mi (estimates(seed=s))"""
    from test_optimal_critic import estimates

    out = {}
    for mi in (1.0, 2.0):
        e = estimates(mi, n=128, batches=200, seed=s)
        out.update({f"{k}_mi{mi:g}_mean_minus_true": e[k].mean() - mi for k in ("nwj", "dv", "tuba")})
    out["infonce_mi0.5_mean_minus_true"] = estimates(0.5, n=256, batches=100, seed=s)["infonce"].mean() - 0.5
    out["infonce_mi10_mean_minus_log64"] = estimates(10.0, n=64, batches=50, seed=s)["infonce"].mean() - math.log(64)
    out["infonce_mi4_mean_minus_4"] = estimates(4.0, n=64, batches=100, seed=s)["infonce"].mean() - 4.0
    out["loo_mi2_mean_minus_true"] = estimates(2.0, n=64, batches=100, seed=s)["loo"].mean() - 2.0
    return out


def optimal_sweep(s: int, d: Path) -> dict[str, float]:
    """test_optimal_sweep.py's claims fixture on seed s: ::test_nwj_unbiased_with_optimal_critic,
    ::test_infonce_bias_is_mi_minus_log_n, ::test_loo_upper_above_true_mi_on_average"""
    from test_optimal_sweep import ALL, D, cell
    from mibench.benchmarks.optimal import estimator_fns, sweep

    df = sweep(D, [2.0, 4.0, 10.0], [16, 64], estimator_fns(ALL, [0.01, 0.99]), n_batches=1024, min_batches=2,
               pair_budget=10**9, seed=s)
    out = {}
    for mi, b in ((2.0, 16), (2.0, 64), (4.0, 64)):
        r = cell(df, "nwj", mi, b)
        out[f"nwj_mi{mi:g}_b{b}_bias_z"] = r["bias"] / r["std_err"]
    r = cell(df, "infonce", 10.0, 16)
    out["infonce_mi10_b16_bias_plus_gap"] = r["bias"] + (10.0 - math.log(16))
    out["infonce_mi10_b16_variance"] = r["variance"]
    out["infonce_b16_bias10_minus_bias4"] = r["bias"] - cell(df, "infonce", 4.0, 16)["bias"]
    a = cell(df, "alpha", 10.0, 64, 0.01)
    out["alpha_minus_infonce_abs_bias_mi10_b64"] = abs(a["bias"]) - abs(cell(df, "infonce", 10.0, 64)["bias"])
    out["log_alpha_over_nwj_variance_mi10_b64"] = math.log(a["variance"] / cell(df, "nwj", 10.0, 64)["variance"])
    for mi, b in ((2.0, 16), (2.0, 64), (4.0, 64), (10.0, 64)):
        r = cell(df, "loo_upper", mi, b)
        out[f"loo_mi{mi:g}_b{b}_z"] = (r["mean"] - mi) / r["std_err"]
    return out


def structured(s: int, d: Path) -> dict[str, float]:
    """test_structured.py: ::test_rate_is_unbiased... (seed 2 -> s), ::test_struct_nwj_eq14... (3 -> s),
    ::test_tc_upper_matches_loop... (5 -> s): z = (mean - closed form) / standard error"""
    from test_structured import gaussian_batch, normal_logpdf
    from mibench.data.gaussian import log_density_bmm
    from mibench.estimators import bounds

    out = {}
    dd, mi, sc = 4, 2.0, 1.7
    x, y, rho = gaussian_batch(400, 32, dd, mi, seed=s)
    lp = log_density_bmm(x, y, rho)
    log_p, log_q = normal_logpdf(y, 0.0, 1.0).sum(-1), normal_logpdf(y, 0.0, sc**2).sum(-1)
    kl = dd * (math.log(sc) + 1 / (2 * sc**2) - 0.5)
    for tag, lq, want in (("rate_at_p", log_p, mi), ("rate_at_q", log_q, mi + kl)):
        v = torch.stack([bounds.rate(lp[b], log_q=lq[b]).mi for b in range(len(lp))])
        out[f"{tag}_z"] = (v.mean().item() - want) / (v.std().item() / math.sqrt(len(v)))
    dd, mi = 3, 1.0
    x, y, rho = gaussian_batch(600, 16, dd, mi, seed=s)
    lp = log_density_bmm(x, y, rho)
    log_p = normal_logpdf(y, 0.0, 1.0).sum(-1)
    for c in (1.0, 0.5, 3.0):
        v = torch.stack([bounds.tuba(lp[b], log_baseline=log_p[b] + math.log(c)).mi for b in range(len(lp))])
        out[f"struct_nwj_c{c:g}_z"] = (v.mean().item() - (mi - math.log(c) + 1 - 1 / c)) / (v.std().item() / math.sqrt(len(v)))
    n, rho, c, reps = 48, 0.8, 0.9, 60
    g = torch.Generator().manual_seed(s)
    z = torch.randn(reps, n, 2, generator=g, dtype=torch.float64)
    x = torch.stack([z[..., 0], c * z[..., 0] + math.sqrt(1 - c**2) * z[..., 1]], -1)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(reps, n, 2, generator=g, dtype=torch.float64)
    dim_scores = normal_logpdf(y.unsqueeze(-3), rho * x.unsqueeze(-2), 1 - rho**2).permute(0, 3, 1, 2)
    lower = torch.stack([bounds.tnce(dim_scores[r].sum(0)).mi for r in range(reps)])
    tc = torch.stack([bounds.tc_upper(dim_scores[r], lower[r]) for r in range(reps)])
    out["tc_upper_z"] = (tc.mean().item() + 0.5 * math.log(1 - rho**4 * c**2)) / (tc.std().item() / math.sqrt(reps))
    return out


def structured_runs(s: int, d: Path) -> dict[str, float]:
    """test_structured.py::test_sandwich_holds_on_average_over_mi_and_batch and
    ::test_staircase_with_the_known_encoder_trains_q_and_brackets_mi (seed=s)"""
    cfg = compose_config(["benchmark=sandwich", "benchmark.mi_values=[0,2,6]", "benchmark.batch_sizes=[8,32]",
                          "benchmark.n_batches=64", "benchmark.min_batches=16", "logger=none", f"seed={s}"], out_dir=d / "sw")
    run(cfg, echo=False)
    t = pd.read_csv(d / "sw" / "sandwich_table.csv")
    pos = t[t["true_mi"] > 0]
    gap = pos.pivot(index="true_mi", columns="batch_size", values="gap")
    df = pd.read_csv(d / "sw" / "sandwich.csv")
    rate = df[(df["estimator"] == "rate") & (df["true_mi"] == 6)]
    out = {"sandwich_max_lower_minus_true": float((pos["lower_mean"] - pos["true_mi"]).max()),
           "sandwich_min_upper_minus_true": float((pos["upper_mean"] - pos["true_mi"]).min()),
           "sandwich_max_gap32_minus_gap8": float((gap[32] - gap[8]).max()),
           "sandwich_rate_mi6_max_abs_z": float((abs(rate["mean"] - 6) / rate["std_err"]).max())}
    common = ["critic=conditional", "dataset.dim=4", "dataset.batch_size=32", "dataset.mi_levels=[1,3]",
              "dataset.steps_per_level=60", "benchmark.plot=false", "logger=none", "benchmark.lr=0.01", f"seed={s}"]
    summ = {k: run(compose_config(common + [f"estimator={k}"], out_dir=d / k), echo=False)["summary"] for k in ("rate", "tnce")}
    r = summ["rate"]
    out["staircase_rate_min_z"] = float(((r["mean"] - r["true_mi"]) / np.sqrt(r["variance"] / r["steps"])).min())
    out["staircase_tnce_max_mean_minus_true"] = float((summ["tnce"]["mean"] - summ["tnce"]["true_mi"]).max())
    return out


def gradients(s: int, d: Path) -> dict[str, float]:
    """test_gradients.py: ::test_nwj_gradient_unbiased_infonce_biased (mean_gradient(seed=s)) and the claims
    fixture on seed s (::test_gradient_mse_falls_with_batch_size, ::test_best_alpha_moves_towards_nwj...)"""
    from test_gradients import D, mean_gradient, mse
    from mibench.benchmarks.gradients import best_alpha, sweep
    from mibench.benchmarks.optimal import estimator_fns

    out = {}
    for mi, b in ((2.0, 16), (4.0, 32)):
        m, se, g_true = mean_gradient("nwj", mi, b, 1500, seed=s)
        z = (m - g_true) / se
        out[f"nwj_mi{mi:g}_b{b}_max_abs_z"] = z.abs().max().item()
        out[f"nwj_mi{mi:g}_b{b}_mean_z2"] = (z**2).mean().item()
    m, se, g_true = mean_gradient("infonce", 10.0, 16, 400, seed=s)
    z = (m - g_true) / se
    out["infonce_max_abs_z"] = z.abs().max().item()
    out["log_infonce_max_abs_z"] = math.log(out["infonce_max_abs_z"])
    out["infonce_max_abs_mean_over_abs_true"] = (m.abs() / g_true.abs()).max().item()  # < 1: every component too small
    out["infonce_bias_norm_over_true_norm"] = ((m - g_true).norm() / g_true.norm()).item()
    out["infonce_min_abs_true_minus_abs_mean"] = (g_true.abs() - m.abs()).min().item()
    claims = sweep(D, [2.0, 8.0], [16, 64], estimator_fns(["nwj", "infonce", "alpha"], [0.01, 0.1, 0.5, 0.99]),
                   n_batches=256, min_batches=32, pair_budget=1 << 17, seed=s)
    for name, mi in (("nwj", 2.0), ("infonce", 2.0), ("infonce", 8.0)):
        out[f"log_mse16_over_mse64_{name}_mi{mi:g}"] = math.log(mse(claims, name, mi, 16) / mse(claims, name, mi, 64))
    ratios = []
    for a in (0.01, 0.1, 0.5, 0.99):
        for mi in (2.0, 8.0):
            sub = claims[(claims["estimator"] == "alpha") & (claims["alpha"] == a) & (claims["true_mi"] == mi)]
            mm = sub.set_index("batch_size")["mse"]
            ratios.append(math.log(mm[16] / mm[64]))
    out["min_log_mse16_over_mse64_alpha"] = min(ratios)
    best = best_alpha(claims).set_index(["true_mi", "batch_size"])["best_alpha"]
    out["best_alpha_claims_hold"] = float(best[(2.0, 16)] >= 0.5 and best[(8.0, 64)] <= 0.1
                                          and best[(8.0, 16)] <= best[(2.0, 16)] and best[(2.0, 64)] <= best[(2.0, 16)]
                                          and best[(8.0, 64)] <= best[(8.0, 16)] and best[(8.0, 64)] <= best[(2.0, 64)])
    return out


def samplers(s: int, d: Path) -> dict[str, float]:
    """Generator seeds -> s: test_onehot.py::test_sampler_joint_on_diagonal_marginals_independent (0),
    test_eta_gaussian.py::test_random_gaussian_mi_closed_forms (the sample's 0), test_migan.py::
    test_sampler_is_seeded_and_lands_on_the_modes (3), test_dsprites.py::test_tc_bound_small... (2) and
    ::test_correlation_ratio_against_group_means (6), test_cifar.py::test_fake_data_loads_balanced... (fake data 1)"""
    import test_dsprites as TD
    from mibench.benchmarks.dsprites import correlation_ratios
    from mibench.data import mixture25
    from mibench.data.cifar import load_cifar
    from mibench.data.fake_cifar import write_fake_cifar
    from mibench.data.onehot import sample_pairs, true_mi
    from mibench.data.random_gaussian import random_gaussian

    out = {}
    n, b = 5, 200
    joint, mx, my = sample_pairs(n, b, torch.Generator().manual_seed(s), shape=(200,))
    m = joint.numel()
    p = 1 / n**2
    zs = []
    for a, c in ((mx, my), (joint, mx), (joint, my)):
        counts = torch.bincount((a * n + c).flatten(), minlength=n * n).double() / m
        zs.append(((counts - p).abs().max() / math.sqrt(p * (1 - p) / m)).item())
    out["onehot_cells_max_abs_z"] = max(zs)

    def plug_in_mi(a, c):
        pxy = torch.bincount((a * n + c).flatten(), minlength=n * n).double().reshape(n, n) / m
        px, py = pxy.sum(1, keepdim=True), pxy.sum(0, keepdim=True)
        nz = pxy > 0
        return float((pxy[nz] * (pxy[nz] / (px * py).expand_as(pxy)[nz]).log()).sum())
    out["onehot_plugin_joint_minus_log_n"] = plug_in_mi(joint, joint) - true_mi(n)
    out["onehot_plugin_marginal"] = plug_in_mi(mx, my)

    r = random_gaussian(10, seed=0)
    x, y = r.sample(200_000, torch.Generator().manual_seed(s))
    mvn, dx = torch.distributions.MultivariateNormal, r.dim_x
    mc = (mvn(r.mean, r.cov).log_prob(torch.cat([x, y], 1).double()) - mvn(r.mean[:dx], r.cov[:dx, :dx]).log_prob(x.double())
          - mvn(r.mean[dx:], r.cov[dx:, dx:]).log_prob(y.double()))
    se = mc.std().item() / math.sqrt(len(mc))
    out["random_gaussian_mc_abs_err_over_limit"] = abs(mc.mean().item() - r.mi) / (4 * se + 1e-3)
    out["random_gaussian_mc_z"] = (mc.mean().item() - r.mi) / se
    z = torch.cat([x, y], 1).double()
    out["random_gaussian_max_mean_err"] = (z.mean(0) - r.mean).abs().max().item()
    out["random_gaussian_max_cov_err"] = (torch.cov(z.t()) - r.cov).abs().max().item()

    cov = mixture25.coverage(mixture25.sample(5000, torch.Generator().manual_seed(s)), mixture25.centres(), 0.05,
                             threshold=100)
    out["migan_modes"] = float(cov.modes)
    out["migan_quality"] = cov.quality
    out["migan_quality_minus_truth"] = cov.quality - (1 - math.exp(-4.5))

    tc = TD.tc_bounds(s)
    out["dsprites_tc_independent"] = tc["independent"]
    out["dsprites_tc_dependent_minus_true"] = tc["dependent"] - (math.log(101) - 0.5 * math.log(201))
    out["dsprites_tc_dependent_minus_independent"] = tc["dependent"] - tc["independent"]

    g = torch.Generator().manual_seed(s)
    f = TD.D.sample_factors(400, g)
    v = torch.stack([f[:, 3].float() / 31 + 0.05 * torch.randn(400, generator=g), torch.randn(400, generator=g)], 1)
    eta = correlation_ratios(v, f)
    out["dsprites_eta_signal"] = float(eta[0, 3])
    out["dsprites_eta_noise_max"] = float(eta[1].max())
    out["dsprites_eta_signal_other_factor"] = float(eta[0, 0])

    write_fake_cifar(d / "cifar", classes=10, train_per_class=16, test_per_class=6, seed=s)
    tx, ty, vx, vy = load_cifar(d / "cifar", "cifar10")
    means = torch.stack([tx[ty == c].float().mean((0, 2, 3)) for c in range(10)])
    out["fake_cifar_nearest_mean_acc"] = (torch.cdist(vx.float().mean((2, 3)), means).argmin(1) == vy).float().mean().item()
    return out


MEASURES = {"optimal_critic": optimal_critic, "optimal_sweep": optimal_sweep, "structured": structured,
            "structured_runs": structured_runs, "gradients": gradients, "samplers": samplers}

LIMITS = {
    **{("optimal_critic", f"{k}_mi{mi}_mean_minus_true"): ("abs<", 0.06) for k in ("nwj", "dv", "tuba") for mi in (1, 2)},
    ("optimal_critic", "infonce_mi0.5_mean_minus_true"): ("abs<", 0.03),
    ("optimal_critic", "infonce_mi10_mean_minus_log64"): (">", -0.3),
    ("optimal_critic", "infonce_mi4_mean_minus_4"): ("<", 0.0),
    ("optimal_critic", "loo_mi2_mean_minus_true"): (">", 0.0),
    **{("optimal_sweep", f"nwj_mi{mi}_b{b}_bias_z"): ("abs<", 4.5) for mi, b in ((2, 16), (2, 64), (4, 64))},
    ("optimal_sweep", "infonce_mi10_b16_bias_plus_gap"): ("abs<", 0.1),
    ("optimal_sweep", "infonce_mi10_b16_variance"): ("<", 0.01),
    ("optimal_sweep", "infonce_b16_bias10_minus_bias4"): ("<", -5.0),
    ("optimal_sweep", "alpha_minus_infonce_abs_bias_mi10_b64"): ("<", 0.0),
    ("optimal_sweep", "log_alpha_over_nwj_variance_mi10_b64"): ("<", 0.0),
    **{("optimal_sweep", f"loo_mi{mi}_b{b}_z"): (">", 3.0) for mi, b in ((2, 16), (2, 64), (4, 64), (10, 64))},
    ("structured", "rate_at_p_z"): ("abs<", 4.0), ("structured", "rate_at_q_z"): ("abs<", 4.0),
    **{("structured", f"struct_nwj_c{c}_z"): ("abs<", 4.0) for c in ("1", "0.5", "3")},
    ("structured", "tc_upper_z"): (">", -3.0),
    ("structured_runs", "sandwich_max_lower_minus_true"): ("<", 0.0),
    ("structured_runs", "sandwich_min_upper_minus_true"): (">", 0.0),
    ("structured_runs", "sandwich_max_gap32_minus_gap8"): ("<", 0.0),
    ("structured_runs", "sandwich_rate_mi6_max_abs_z"): ("<", 4.0),
    ("structured_runs", "staircase_rate_min_z"): (">", -4.0),
    ("structured_runs", "staircase_tnce_max_mean_minus_true"): ("<", 0.0),
    **{("gradients", f"nwj_mi{mi}_b{b}_max_abs_z"): ("<", 5.5) for mi, b in ((2, 16), (4, 32))},
    **{("gradients", f"nwj_mi{mi}_b{b}_mean_z2"): ("<", 2.5) for mi, b in ((2, 16), (4, 32))},
    ("gradients", "log_infonce_max_abs_z"): (">", math.log(50.0)),  # z > 50 (a positive, skewed spread: log scale)
    ("gradients", "infonce_max_abs_mean_over_abs_true"): ("<", 1.0),  # |mean_i| < |true_i| for every component
    ("gradients", "infonce_bias_norm_over_true_norm"): (">", 0.5),
    **{("gradients", f"log_mse16_over_mse64_{n}_mi{mi}"): (">", 0.0) for n, mi in (("nwj", 2), ("infonce", 2), ("infonce", 8))},
    ("gradients", "min_log_mse16_over_mse64_alpha"): (">", 0.0),
    ("gradients", "best_alpha_claims_hold"): (">", 0.5),
    ("samplers", "onehot_cells_max_abs_z"): ("<", 5.0),
    ("samplers", "onehot_plugin_joint_minus_log_n"): ("abs<", 2e-3),
    ("samplers", "onehot_plugin_marginal"): ("<", 2e-3),
    ("samplers", "random_gaussian_mc_abs_err_over_limit"): ("<", 1.0),
    ("samplers", "random_gaussian_max_mean_err"): ("<", 0.02),
    ("samplers", "random_gaussian_max_cov_err"): ("<", 0.02),
    ("samplers", "migan_modes"): (">", 24.5),
    ("samplers", "migan_quality"): (">", 0.98),
    ("samplers", "migan_quality_minus_truth"): ("abs<", 0.01),
    ("samplers", "dsprites_tc_independent"): ("abs<", 0.4),
    ("samplers", "dsprites_tc_dependent_minus_true"): ("abs<", 0.4),
    ("samplers", "dsprites_tc_dependent_minus_independent"): (">", 1.2),
    ("samplers", "dsprites_eta_signal"): (">", 0.9),
    ("samplers", "dsprites_eta_noise_max"): ("<", 0.2),
    ("samplers", "dsprites_eta_signal_other_factor"): ("<", 0.1),
    ("samplers", "fake_cifar_nearest_mean_acc"): (">", 0.8),
}

if __name__ == "__main__":
    calib.main(MEASURES, LIMITS, __file__)
