"""Every bound against an independent float64 NumPy/loop computation on hand-built score matrices."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mibench.estimators import REGISTRY, bounds, build_estimator

# A hand-built 4 x 4 score matrix (diagonal = joint pairs) and a random 7 x 7 one.
HAND = np.array([[2.0, -1.0, 0.5, 0.0],
                 [0.3, 1.5, -2.0, 1.0],
                 [-0.5, 0.2, 3.0, -1.5],
                 [1.0, -0.7, 0.1, 0.8]])
RAND = np.random.default_rng(1).normal(0, 2, size=(7, 7))


def lme(v):
    v = np.asarray(v, dtype=float).ravel()
    return float(np.log(np.mean(np.exp(v))))


def off(s):
    n = s.shape[0]
    return np.array([s[i, j] for i in range(n) for j in range(n) if i != j])


def ref_dv(s):
    return np.mean(np.diag(s)) - lme(off(s))


def ref_nwj(s, clip=None):
    o = off(s) if clip is None else np.clip(off(s), -clip, clip)
    return np.mean(np.diag(s)) - np.mean(np.exp(o - 1))


def ref_tuba(s, log_a=None):
    n = s.shape[0]
    log_a = np.zeros(n) if log_a is None else log_a
    joint = np.mean([s[i, i] - log_a[i] for i in range(n)])
    marg = np.mean([math.exp(s[i, j] - log_a[j]) for i in range(n) for j in range(n) if i != j])
    return 1 + joint - marg


def ref_infonce(s):
    n = s.shape[0]
    return np.mean([s[i, i] - math.log(np.mean(np.exp(s[i]))) for i in range(n)])


def ref_js_fgan(s):
    sp = lambda v: np.log1p(np.exp(v))
    return np.mean([-sp(-v) for v in np.diag(s)]) - np.mean([sp(v) for v in off(s)])


def ref_smile(s, tau):
    return np.mean(np.diag(s)) - lme(np.clip(off(s), -tau, tau))


def ref_interpolated(s, log_q, alpha):
    """Poole eq. 11 with leave-one-out, written with explicit loops. s[i, j] = T(x_i, y_j)."""
    n = s.shape[0]
    def base(i_y, j_out):  # log(alpha * mean_{k != j_out} e^{T(x_k, y_i)} + (1 - alpha) q(y_i))
        m = np.mean([math.exp(s[k, i_y]) for k in range(n) if k != j_out])
        return math.log(alpha * m + (1 - alpha) * math.exp(log_q[i_y]))
    joint = np.mean([s[i, i] - base(i, j) for i in range(n) for j in range(n) if i != j])
    marg = np.mean([math.exp(s[j, i] - base(i, i)) for i in range(n) for j in range(n) if i != j])
    return 1 + joint - marg


def t(s):
    return torch.tensor(s, dtype=torch.float64)


@pytest.mark.parametrize("s", [HAND, RAND], ids=["hand", "random"])
def test_bounds_match_reference(s):
    S = t(s)
    assert bounds.dv(S).mi.item() == pytest.approx(ref_dv(s), abs=1e-10)
    assert bounds.nwj(S).mi.item() == pytest.approx(ref_nwj(s), abs=1e-10)
    assert bounds.nwj(S, clip=1.0).mi.item() == pytest.approx(ref_nwj(s, 1.0), abs=1e-10)
    assert bounds.tuba(S).mi.item() == pytest.approx(ref_tuba(s), abs=1e-10)
    log_a = np.linspace(-0.5, 0.7, s.shape[0])
    assert bounds.tuba(S, log_baseline=t(log_a)).mi.item() == pytest.approx(ref_tuba(s, log_a), abs=1e-10)
    assert bounds.infonce(S).mi.item() == pytest.approx(ref_infonce(s), abs=1e-10)
    assert bounds.smile(S, clip=1.5).mi.item() == pytest.approx(ref_smile(s, 1.5), abs=1e-10)
    js = bounds.js(S)
    assert js.mi.item() == pytest.approx(ref_nwj(s), abs=1e-10)  # reported with NWJ
    assert js.loss.item() == pytest.approx(-ref_js_fgan(s), abs=1e-10)  # trained with f-GAN JS
    sj = bounds.smile_js(S, clip=1.5)
    assert sj.mi.item() == pytest.approx(ref_smile(s, 1.5), abs=1e-10)
    assert sj.loss.item() == pytest.approx(-ref_js_fgan(s), abs=1e-10)
    for alpha in (0.01, 0.5, 1.0):
        log_q = np.linspace(0.3, -0.4, s.shape[0])
        got = bounds.interpolated(S, t(log_q), alpha).mi.item()
        assert got == pytest.approx(ref_interpolated(s, log_q, alpha), abs=1e-9), alpha


def test_terms_and_losses():
    S = t(RAND)
    e = bounds.dv(S)
    assert e.joint.item() == pytest.approx(np.mean(np.diag(RAND)))
    assert e.marginal.item() == pytest.approx(lme(off(RAND)))
    assert e.loss.item() == pytest.approx(-e.mi.item())
    n = bounds.nwj(S)
    assert n.marginal.item() == pytest.approx(np.mean(np.exp(off(RAND) - 1)))
    assert (n.joint - n.marginal).item() == pytest.approx(n.mi.item())


def test_eta_dv():
    S = t(RAND)
    dv = bounds.dv(S).mi.item()
    for eta in (-1.0, 0.0, 2.5):
        got = bounds.eta_dv(S, torch.tensor(eta, dtype=torch.float64)).mi.item()
        ref = np.mean(np.diag(RAND)) - (math.exp(-eta) * np.mean(np.exp(off(RAND))) + eta - 1)
        assert got == pytest.approx(ref, abs=1e-10)
        assert got <= dv + 1e-12  # eta-DV <= DV, equality at the optimal eta
    eta_star = torch.tensor(lme(off(RAND)), dtype=torch.float64)
    assert bounds.eta_dv(S, eta_star).mi.item() == pytest.approx(dv, abs=1e-10)


@pytest.mark.parametrize("n", [2, 8, 64])
def test_infonce_at_most_log_n(n):
    for scale in (0.1, 3.0, 50.0):
        S = torch.randn(n, n, dtype=torch.float64) * scale
        assert bounds.infonce(S).mi.item() <= math.log(n) + 1e-12
    S = torch.full((n, n), -1e4, dtype=torch.float64)
    S.fill_diagonal_(1e4)  # a perfect critic: the bound saturates at log N
    assert bounds.infonce(S).mi.item() == pytest.approx(math.log(n), abs=1e-9)


def test_masks_slb_layout():
    """SLB: B x C logits, joint = one-hot labels, marginal = all entries; InfoNCE = log C - cross-entropy."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    joint = F.one_hot(labels, 4).bool()
    marginal = torch.ones_like(joint)
    nce = bounds.infonce(logits, joint, marginal).mi.item()
    assert nce == pytest.approx(math.log(4) - F.cross_entropy(logits, labels).item(), abs=1e-10)
    L = logits.numpy()
    ref = np.mean([L[i, labels[i]] for i in range(6)]) - lme(L)
    assert bounds.dv(logits, joint, marginal).mi.item() == pytest.approx(ref, abs=1e-10)


def test_loo_upper_reference():
    g = torch.Generator().manual_seed(5)
    lc = torch.randn(6, 6, generator=g, dtype=torch.float64)
    L = lc.numpy()
    ref = np.mean([L[i, i] - math.log(np.mean([math.exp(L[j, i]) for j in range(6) if j != i])) for i in range(6)])
    assert bounds.loo_upper(lc).item() == pytest.approx(ref, abs=1e-10)


def test_log_loo_mean_exp_stable():
    from mibench.estimators.base import log_loo_mean_exp

    s = torch.tensor([[0.0, 1.0, 2.0], [100.0, -100.0, 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    out = log_loo_mean_exp(s)
    for i in range(3):
        for j in range(3):
            others = [s[i, k].item() for k in range(3) if k != j]
            ref = max(others) + math.log(np.mean(np.exp(np.array(others) - max(others))))
            assert out[i, j].item() == pytest.approx(ref, abs=1e-9)


# --- regularized family (Choi & Lee eq. 14-15, Table 1) -------------------------------------------

PAIRS = {"remine": "dv", "renwj": "nwj", "reinfonce": "infonce", "resmile": "smile", "retuba": "tuba", "rejs": "js"}
BASE_PARAMS = {"renwj": {"clip": 10.0}, "retuba": {"clip": 10.0}}


def build(name, **kw):
    cfg = {"name": name, **kw}
    return build_estimator(cfg, dim_y=3)


@pytest.mark.parametrize("re_name,base_name", PAIRS.items())
def test_regularized_equals_base_at_lambda_zero(re_name, base_name):
    S = t(RAND)
    base = build(base_name, **BASE_PARAMS.get(re_name, {}))(S)
    re = build(re_name, lam=0.0, c_star=0.3)(S)
    for f in ("mi", "loss", "joint", "marginal"):
        assert getattr(re, f).item() == pytest.approx(getattr(base, f).item(), abs=1e-12), f


@pytest.mark.parametrize("re_name,base_name", PAIRS.items())
def test_regularized_changes_gradient_not_value(re_name, base_name):
    S = t(RAND).requires_grad_(True)
    base = build(base_name, **BASE_PARAMS.get(re_name, {}))(S)
    (g_base,) = torch.autograd.grad(base.loss, S)
    re = build(re_name, lam=0.1, c_star=0.0)(S)
    (g_re,) = torch.autograd.grad(re.loss, S)
    assert re.mi.item() == pytest.approx(base.mi.item(), abs=1e-12)  # reported value is unregularized
    assert not torch.allclose(g_re, g_base)
    # the gradient difference is exactly lambda * grad of the distance on the unclipped log-partition
    shift = 1.0 if re_name == "renwj" else 0.0
    c_star = 1.0 if re_name == "rejs" else 0.0
    S2 = t(RAND).requires_grad_(True)
    mask = ~torch.eye(7, dtype=torch.bool)
    L = torch.logsumexp(S2[mask], 0) - math.log(42)
    (g_reg,) = torch.autograd.grad(0.1 * (L - shift - c_star) ** 2, S2)
    default_c = {"rejs": 1.0}.get(re_name, 0.0)
    re_default = build(re_name, lam=0.1, c_star=default_c)(S)
    (g_re_default,) = torch.autograd.grad(re_default.loss, S)
    assert torch.allclose(g_re_default - g_base, g_reg, atol=1e-12)


def test_regularizer_values():
    S = t(RAND)
    L = lme(off(RAND))
    assert build("remine", lam=0.5, c_star=0.2)(S).extras["reg"].item() == pytest.approx((L - 0.2) ** 2)
    # eq. 15: lambda (log E[e^(T-1)])^2 with the paper's C* = 1, i.e. 0 on our log scale
    assert build("renwj", lam=0.5, c_star=0.0)(S).extras["reg"].item() == pytest.approx(
        math.log(np.mean(np.exp(off(RAND) - 1))) ** 2)


def test_regularizer_is_unclipped_for_resmile():
    big = RAND * 10  # scores well past tau = 10
    S = t(big)
    re = build("resmile", lam=1.0, c_star=0.0)(S)
    assert re.mi.item() == pytest.approx(ref_smile(big, 10.0), abs=1e-9)
    assert re.extras["reg"].item() == pytest.approx(lme(off(big)) ** 2, rel=1e-9)
    assert re.extras["reg"].item() != pytest.approx(lme(np.clip(off(big), -10, 10)) ** 2, rel=1e-3)


# --- stateful estimators ------------------------------------------------------------------------


def test_mine_ema_gradient():
    """Belghazi et al.: grad of the partition term = E_Q[grad T e^T] / moving average."""
    est = build("mine", ema=True, ema_rate=0.1).double()
    s1 = t(RAND)
    est(s1)  # first batch initialises the average with its own mean e^T
    m1 = np.mean(np.exp(off(RAND)))
    s2 = t(RAND * 0.5).requires_grad_(True)
    e = est(s2)
    m2 = np.mean(np.exp(off(RAND * 0.5)))
    ema = 0.9 * m1 + 0.1 * m2
    (g,) = torch.autograd.grad(e.loss, s2)
    R = RAND * 0.5
    for i, j in [(0, 1), (3, 2), (6, 0)]:
        assert g[i, j].item() == pytest.approx(math.exp(R[i, j]) / (42 * ema), rel=1e-9)
    assert g[2, 2].item() == pytest.approx(-1 / 7, rel=1e-9)
    assert e.mi.item() == pytest.approx(ref_dv(R), abs=1e-10)  # reported value: plain DV
    assert e.loss.item() == pytest.approx(-ref_dv(R), abs=1e-10)


def test_mine_defaults_to_dv():
    S = t(RAND).requires_grad_(True)
    a = build("mine")(S)
    b = bounds.dv(S)
    assert torch.allclose(torch.autograd.grad(a.loss, S)[0], torch.autograd.grad(b.loss, S)[0])


def test_eta_mine_eta_gradient_and_groups():
    est = build("eta_mine", eta_init=0.0, eta_lr=0.05).double()
    S = t(RAND)
    e = est(S)
    (g,) = torch.autograd.grad(e.loss, est.eta)
    assert g.item() == pytest.approx(1 - math.exp(lme(off(RAND)) - 0.0), abs=1e-10)
    groups = est.param_groups(1e-3)
    assert groups[0]["lr"] == 0.05 and groups[0]["params"][0] is est.eta


def test_learned_baselines_use_y():
    tub = build("tuba", baseline="learned")
    y = torch.randn(7, 3)
    S = torch.randn(7, 7)
    log_a = tub.log_baseline(S, y).detach().double().numpy()
    assert tub(S, y=y).mi.item() == pytest.approx(ref_tuba(S.double().numpy(), log_a), abs=1e-4)
    alpha = build("alpha", alpha=0.3, baseline="learned")
    log_q = alpha.log_baseline(S, y).detach().double().numpy()
    assert alpha(S, y=y).mi.item() == pytest.approx(ref_interpolated(S.double().numpy(), log_q, 0.3), abs=1e-4)
    assert len(alpha.param_groups(1e-3)[0]["params"]) > 0


def test_registry_complete_and_bad_params():
    required = {"dv", "mine", "nwj", "tuba", "infonce", "js", "smile", "alpha", "eta_mine",
                "remine", "renwj", "reinfonce", "resmile", "retuba", "rejs"}
    assert required <= set(REGISTRY)
    with pytest.raises(ValueError, match="clipp"):
        build("nwj", clipp=3)
    with pytest.raises(ValueError, match=r"^estimator.lam=-0.1 is invalid \(valid: lambda >= 0"):
        build("remine", lam=-0.1)  # the same rule and line as the config's (mibench.estimators.RANGES)
    with pytest.raises(ValueError, match="unknown estimator"):
        build_estimator({"name": "nope"})


def test_yaml_defaults_match_registry():
    """conf/estimator/<name>.yaml and the registry's Table 1 defaults build the same estimator."""
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[1] / "conf" / "estimator"
    assert {p.stem for p in conf.glob("*.yaml")} == set(REGISTRY)
    S = t(RAND * 4)
    for p in conf.glob("*.yaml"):
        cfg = yaml.safe_load(p.read_text())
        torch.manual_seed(0)
        a = build_estimator(cfg, dim_y=7)
        torch.manual_seed(0)
        b = build_estimator({"name": cfg["name"], **({"baseline": cfg["baseline"]} if "baseline" in cfg else {})}, dim_y=7)
        y = torch.randn(7, 7, dtype=torch.float64)
        ea, eb = a.double()(S, y=y), b.double()(S, y=y)
        assert ea.loss.item() == pytest.approx(eb.loss.item(), abs=1e-9), p.stem
        assert ea.mi.item() == pytest.approx(eb.mi.item(), abs=1e-9), p.stem
