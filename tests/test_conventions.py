"""Issue 11: the authors' conventions, checked against small independent ports of their loss functions.

The ``port_*`` functions below were written for these tests from reading Choi & Lee's public code
(Siyeong-Lee/Deconstructing-MINE: experiments.py for the Gaussian staircase, experiments_classification.py
for SLB, experiments_self_contrastive.py for CLB); they use flat NumPy in float64, one score matrix and
its joint / marginal entries, and return (reported value, loss to minimise). mibench's options must give
the same numbers on fixed score matrices (scores beyond +-tau exercise the clipping).
"""
import math

import numpy as np
import pytest
import torch

from mibench.benchmarks.cifar import clb_scores, slb_scores
from mibench.estimators import build_estimator

TAU = 10.0
RNG = np.random.default_rng(11)
GAUSS = RNG.normal(0, 6, size=(6, 6))  # staircase: joint = diagonal, marginal = off-diagonal
LOGITS = RNG.normal(0, 6, size=(5, 4))  # SLB: 5 samples x 4 classes
LABELS = np.array([0, 3, 1, 3, 2])
FEATS = np.abs(RNG.normal(0, 3.0, size=(6, 3)))  # CLB: 6 samples, 3-d features
CLB_Y = np.array([0, 1, 0, 2, 1, 0])


def sp(v):
    return np.logaddexp(0.0, v)


def lme(v):
    v = np.asarray(v, float).ravel()
    return float(np.log(np.mean(np.exp(v))))


def layouts():
    """(name, scores, joint entries, marginal entries, row lists for InfoNCE) for the three benchmarks."""
    n = GAUSS.shape[0]
    g_joint = [GAUSS[i, i] for i in range(n)]
    g_marg = [GAUSS[i, j] for i in range(n) for j in range(n) if i != j]
    s_joint = [LOGITS[i, LABELS[i]] for i in range(len(LABELS))]
    s_marg = list(LOGITS.ravel())  # the authors' SLB marginal: every logit
    dot = FEATS @ FEATS.T
    m = len(CLB_Y)
    c_joint = [dot[i, j] for i in range(m) for j in range(m) if i != j and CLB_Y[i] == CLB_Y[j]]
    c_marg = [dot[i, j] for i in range(m) for j in range(m) if i != j]
    return {"gaussian": (GAUSS, g_joint, g_marg), "slb": (LOGITS, s_joint, s_marg), "clb": (dot, c_joint, c_marg)}


def mibench_inputs(name):
    if name == "gaussian":
        return torch.tensor(GAUSS), None, None
    if name == "slb":
        return slb_scores(torch.tensor(LOGITS), torch.tensor(LABELS))
    return clb_scores(torch.tensor(FEATS), torch.tensor(CLB_Y))


# ------------------------------------------------------------------ ports of the authors' losses
def port_rejs(joint, marg, lam, bias):
    """JS f-GAN value trained, regularised on its softplus marginal term, reported as NWJ (no clip)."""
    t, et = np.mean(-sp(-np.asarray(joint))), np.mean(sp(np.asarray(marg)))
    nwj = np.mean(joint) - np.mean(np.exp(np.asarray(marg) - 1.0))
    return nwj, -(t - et - lam * (et - bias) ** 2)


def port_reinfonce(name, lam):
    """InfoNCE regularised on its own partition (diagonal included on the Gaussian, the C classes on SLB,
    positive-count-weighted rows of the off-diagonal on CLB)."""
    if name == "gaussian":
        s = GAUSS
        t = np.mean(np.diag(s))
        et = np.mean([lme(row) for row in s])
    elif name == "slb":
        t = np.mean([LOGITS[i, LABELS[i]] for i in range(len(LABELS))])
        et = np.mean([lme(row) for row in LOGITS])
    else:
        dot, m = FEATS @ FEATS.T, len(CLB_Y)
        t = np.mean([dot[i, j] for i in range(m) for j in range(m) if i != j and CLB_Y[i] == CLB_Y[j]])
        rows = [lme([dot[i, j] for j in range(m) if j != i]) for i in range(m)]
        w = [sum(CLB_Y[j] == CLB_Y[i] for j in range(m) if j != i) for i in range(m)]
        et = np.dot(rows, w) / np.sum(w)
    return t - et, -(t - et - lam * et ** 2)


def port_re_tuba(joint, marg, lam, a_y, clip):
    """TUBA with a constant a(y) (e for NWJ), both terms clamped at +-clip, regularised on the unclipped
    log-mean-exp of the marginal scores (no shift by log a)."""
    j = np.clip(joint, -clip, clip)
    m = np.clip(marg, -clip, clip)
    mi = np.mean(j) - (np.mean(np.exp(m)) / a_y + math.log(a_y) - 1.0)
    return mi, -(mi - lam * lme(marg) ** 2)


def port_smile_clip_both(joint, marg, clip):
    """SLB/CLB SMILE: DV on clamped scores (joint term included)."""
    mi = np.mean(np.clip(joint, -clip, clip)) - lme(np.clip(marg, -clip, clip))
    return mi, -mi


# ------------------------------------------------------------------ the checks
def check(est_cfg, scores, jm, mm, want):
    est = build_estimator(est_cfg, dim_y=2)
    out = est(scores, jm, mm)
    assert float(out.mi) == pytest.approx(want[0], rel=1e-12, abs=1e-9)
    assert float(out.loss) == pytest.approx(want[1], rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("name", ["gaussian", "slb", "clb"])
def test_rejs_softplus(name):
    s, joint, marg = layouts()[name]
    lam, bias = (1.0, 0.0) if name == "gaussian" else (0.01, 1.0)  # Fig. 7: lambda 1, no bias; Table 2: C* = 1
    check({"name": "rejs", "reg_term": "softplus", "lam": lam, "c_star": bias}, *mibench_inputs(name),
          port_rejs(joint, marg, lam, bias))


@pytest.mark.parametrize("name", ["gaussian", "slb", "clb"])
def test_reinfonce_own_partition(name):
    check({"name": "reinfonce", "reg_term": "bound", "lam": 0.1, "c_star": 0.0}, *mibench_inputs(name),
          port_reinfonce(name, 0.1))


@pytest.mark.parametrize("name", ["gaussian", "slb", "clb"])
@pytest.mark.parametrize("est,a_y", [("renwj", math.e), ("retuba", 1.0)])
def test_renwj_retuba_code_convention(name, est, a_y):
    s, joint, marg = layouts()[name]
    assert max(np.abs(joint)) > TAU or max(np.abs(marg)) > TAU  # the clip is exercised
    cfg = {"name": est, "clip": TAU, "clip_joint": True, "distance": "euclidean", "lam": 0.1, "c_star": 0.0}
    check(cfg, *mibench_inputs(name), port_re_tuba(joint, marg, 0.1, a_y, TAU))


@pytest.mark.parametrize("name", ["slb", "clb"])
def test_smile_clip_both(name):
    s, joint, marg = layouts()[name]
    check({"name": "smile", "clip": TAU, "clip_joint": True}, *mibench_inputs(name),
          port_smile_clip_both(joint, marg, TAU))


def test_defaults_differ_from_code_where_the_issue_says():
    """The paper conventions (defaults) give other losses than the ports on the same matrix."""
    s, joint, marg = layouts()["gaussian"]
    paper = build_estimator({"name": "renwj", "lam": 0.1}, dim_y=2)(torch.tensor(GAUSS))
    assert abs(float(paper.loss) - port_re_tuba(joint, marg, 0.1, math.e, TAU)[1]) > 1e-3
    paper = build_estimator({"name": "rejs", "lam": 1.0, "c_star": 0.0}, dim_y=2)(torch.tensor(GAUSS))
    assert abs(float(paper.loss) - port_rejs(joint, marg, 1.0, 0.0)[1]) > 1e-3
    for name in ("gaussian", "slb", "clb"):
        paper = build_estimator({"name": "reinfonce", "lam": 0.1}, dim_y=2)(*mibench_inputs(name))
        assert abs(float(paper.loss) - port_reinfonce(name, 0.1)[1]) > 1e-3


def test_js_values():
    """NWJ(T) (default), NWJ(T + 1) and the f-GAN value are reported; the training loss stays the JS one."""
    s = torch.tensor(GAUSS) / 4
    n = s.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    nwj = lambda v: float(v.diagonal().mean() - torch.exp(v[off] - 1).mean())  # noqa: E731
    fgan = float((-torch.nn.functional.softplus(-s.diagonal())).mean() - torch.nn.functional.softplus(s[off]).mean())
    for value, want in (("nwj", nwj(s)), ("nwj_shifted", nwj(s + 1)), ("js_fgan", fgan)):
        out = build_estimator({"name": "js", "value": value}, dim_y=2)(s)
        assert float(out.mi) == pytest.approx(want, abs=1e-12)
        assert float(out.loss) == pytest.approx(-fgan, abs=1e-12)  # the training loss does not change
    # NWJ(T + 1) - NWJ(T) = 1 - E_Q[e^T - e^(T-1)]: at the JS optimum T* = log p/q, E_Q[e^T*] = 1 and the shift is 1/e
    assert nwj(s + 1) - nwj(s) == pytest.approx(1 - float((torch.exp(s[off]) - torch.exp(s[off] - 1)).mean()), abs=1e-12)


def test_bad_convention_values():
    with pytest.raises(ValueError, match="reg_term=bound"):
        build_estimator({"name": "rejs", "reg_term": "bound"})
    with pytest.raises(ValueError, match="Euclidean"):
        build_estimator({"name": "renwj", "reg_term": "softplus"})  # renwj's default distance is log_euclidean
    with pytest.raises(ValueError, match=r"^estimator.reg_term=nope is invalid \(valid: log_partition \| softplus \| bound\)$"):
        build_estimator({"name": "remine", "reg_term": "nope"})
    with pytest.raises(ValueError, match=r"^estimator.distance=manhattan is invalid \(valid: euclidean"):
        build_estimator({"name": "remine", "distance": "manhattan"})


PRESETS = {  # preset (+ benchmark) -> estimator -> the code's convention its resolved config must hold
    ("remine_fig7",): {"rejs": {"reg_term": "softplus", "c_star": 0.0, "lam": 1.0}, "reinfonce": {"reg_term": "bound"},
                       "renwj": {"distance": "euclidean", "clip_joint": True}, "retuba": {"clip_joint": True},
                       "js": {"value": "js_fgan"}, "smile": {"clip": 10.0}},
    ("remine_table2", "benchmark=slb"): {"rejs": {"reg_term": "softplus", "c_star": 1.0},
                                         "reinfonce": {"reg_term": "bound"},
                                         "renwj": {"distance": "euclidean", "clip_joint": True},
                                         "retuba": {"clip_joint": True}, "smile": {"clip_joint": True},
                                         "resmile": {"clip_joint": True}, "js": {"value": "nwj"}},
    ("remine_table2_fast", "benchmark=clb"): {"rejs": {"reg_term": "softplus"}, "reinfonce": {"reg_term": "bound"},
                                              "renwj": {"distance": "euclidean", "clip_joint": True},
                                              "resmile": {"clip_joint": True}},
    ("remine_fig6",): {"reinfonce": {"reg_term": "bound"}, "retuba": {"clip_joint": True}},
    ("poole_fig2",): {"tuba": {"baseline": "learned", "baseline_hidden": 512},
                      "alpha": {"baseline": "learned", "baseline_hidden": 512}},
    ("poole_fig2_concat",): {"tuba": {"baseline": "learned", "baseline_hidden": 512},
                             "alpha": {"baseline_hidden": 512}},
}


@pytest.mark.parametrize("preset", list(PRESETS), ids=lambda p: p[0])
def test_presets_use_the_code_conventions(preset):
    """Composed once per preset; each estimator's group YAML swapped in as ``estimator=<name>`` would."""
    from pathlib import Path

    from omegaconf import OmegaConf, open_dict

    from mibench.compose import compose_config
    from mibench.config import apply_overrides
    from mibench.records import conventions

    conf = Path(__file__).resolve().parents[1] / "conf" / "estimator"
    base = compose_config([f"experiment={preset[0]}", *preset[1:]])
    for paper in (False, True):
        for est, want in PRESETS[preset].items():
            cfg = base.copy()
            with open_dict(cfg):
                cfg.estimator = OmegaConf.load(conf / f"{est}.yaml")
                if paper:  # the paper's conventions stay one override away: per_estimator=null
                    cfg.per_estimator = None
            apply_overrides(cfg)
            if paper:
                assert conventions(OmegaConf.create({"estimator": cfg.estimator})) == {}, (preset, est)
                continue
            assert {k: cfg.estimator.get(k) for k in want} == want, (preset, est)
            if est == "js" and preset[0] != "remine_fig7":  # Table 2's JS rows: NWJ(T), the default
                assert cfg.estimator.value == "nwj"


def test_per_estimator_names_are_checked():
    from mibench.compose import compose_config
    from mibench.config import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match="per_estimator.rejss is not an estimator"):
        apply_overrides(compose_config(["experiment=remine_fig7", "+per_estimator.rejss.lam=1"]))


def test_records_name_the_conventions():
    from omegaconf import OmegaConf

    from mibench.records import conventions

    def conv(**est):
        return conventions(OmegaConf.create({"estimator": est, "benchmark": {"name": "staircase"}}))

    assert conv(name="rejs", lam=1.0, c_star=1.0, distance="euclidean") == {}  # the defaults: nothing recorded
    assert conv(name="smile", clip=5.0) == {} and conv(name="alpha", baseline="learned", baseline_hidden=256) == {}
    assert conv(name="rejs", reg_term="softplus") == {"rejs_reg": "softplus_marginal"}
    assert conv(name="reinfonce", reg_term="bound") == {"reinfonce_reg": "own_partition"}
    assert conv(name="renwj", clip=10.0, clip_joint=True, distance="euclidean") == {"renwj_reg": "log_mean_exp",
                                                                                   "clip": "both"}
    assert conv(name="js", value="js_fgan") == {"js_value": "js_fgan"}
    assert conv(name="tuba", baseline="learned", baseline_hidden=512) == {"baseline": "learned_2x512"}
    assert conv(name="alpha", baseline="learned", baseline_hidden=512) == {"baseline": "learned_2x512"}


def port_remove_fc_features(net, x):
    """The authors' CLB encoder with ``--remove_fc`` (fc = identity): global-average-pooled last stage, post-ReLU."""
    h = net.layers(net.stem(x))
    return h.mean(dim=(2, 3))


def test_clb_backbone_features_match_remove_fc():
    from mibench.models import build_model

    torch.manual_seed(0)
    net = build_model({"name": "resnet18", "width": 4}, None)
    x = torch.randn(3, 3, 8, 8)
    f = net(x)
    assert f.shape == (3, 32) and torch.allclose(f, port_remove_fc_features(net, x), atol=1e-6)
    scores, _, _ = clb_scores(f, torch.tensor([0, 0, 1]))
    assert bool((scores >= 0).all())  # dot products of post-ReLU features
    assert build_model({"name": "resnet18", "width": 4}, 5)(x).shape == (3, 5)  # the default linear head stays


def test_eval_bn_batch_statistics_and_restored_running_stats():
    """``eval_bn: batch``: each test batch normalised by its own statistics (train mode, as without net.eval())."""
    from mibench.benchmarks.cifar import encode
    from mibench.models import build_model

    torch.manual_seed(0)
    net = build_model({"name": "convnet", "width": 4}, 3)
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    norm = lambda v, train: v.float() / 255  # noqa: E731
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = encode(net, x, norm, batch_size=2, batch_stats=True)
    net.train()
    with torch.no_grad():
        want = torch.cat([net(norm(x[i:i + 2], False)) for i in (0, 2, 4)])
    assert torch.allclose(got, want, atol=1e-6)
    net.load_state_dict(before)
    net.eval()
    with torch.no_grad():
        assert not torch.allclose(encode(net, x, norm, batch_size=2), want, atol=1e-3)  # eval mode differs
    encode(net, x, norm, batch_size=2, batch_stats=True)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # nothing left changed
    assert not net.training


@pytest.mark.slow
def test_table2_preset_protocol_and_tiny_clb_run(tmp_path):
    from mibench.app import run
    from mibench.compose import compose_config
    from mibench.config import ConfigError, validate
    from mibench.data.fake_cifar import write_fake_cifar

    for bench, feats in (("slb", "head"), ("clb", "backbone")):
        b = compose_config(["experiment=remine_table2", f"benchmark={bench}"]).benchmark
        assert (b.normalise, b.eval_bn, b.features) == ("half", "batch", feats)
    root = tmp_path / "data"
    write_fake_cifar(root, classes=10, train_per_class=4, test_per_class=2, seed=1)
    base = ["benchmark=clb", "dataset=cifar10", f"dataset.root={root}", "model=convnet", "model.width=4",
            "dataset.batch_size=20", "benchmark.epochs=1", "logger=none", "trainer.enable_progress_bar=false"]
    over = base + ["estimator=renwj", "estimator.clip_joint=true", "estimator.distance=euclidean",
                   "benchmark.normalise=half", "benchmark.eval_bn=batch", "benchmark.features=backbone"]
    r = run(compose_config(over, out_dir=tmp_path / "run"), echo=False)
    assert r["metrics"]["eval_bn"] == "batch"
    rec = __import__("json").loads((tmp_path / "run" / "result.json").read_text())
    assert rec["conventions"] == {"renwj_reg": "log_mean_exp", "clip": "both", "normalise": "half", "eval_bn": "batch",
                                  "features": "backbone"}
    with pytest.raises(ConfigError, match="benchmark.features=backbone is invalid for benchmark=slb"):
        validate(compose_config([*base, "benchmark=slb", "benchmark.features=backbone"]))


def test_eta_fig3a_preset_uses_algorithm1():
    from mibench.compose import compose_config

    for est, want in (("eta_mine", ("alternating", "permutation")), ("nwj", ("joint", "permutation")),
                      ("infonce", ("joint", "pairs"))):
        b = compose_config(["experiment=eta_fig3a", f"estimator={est}"]).benchmark
        assert (b.eta_schedule, b.marginals) == want, est
