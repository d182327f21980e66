"""Deep InfoMax (benchmark=dim): networks, score layouts vs loops, objectives, probes, end to end.

Everything runs on tiny generated data (mibench.data.fake_cifar); nothing here needs ../shared.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mibench.benchmarks.dim import local_estimator_cfg
from mibench.estimators import bounds, build_estimator
from mibench.models.dim import (DIMEncoder, GlobalMINet, LocalMINet, MapMINet, PriorDiscriminator, global_scores,
                                local_score_tensor, local_scores, make_probe, prior_scores)


def test_encoder_and_mi_network_shapes():
    enc = DIMEncoder()
    out = enc(torch.randn(5, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "local": (5, 128, 8, 8), "conv": (5, 256, 4, 4), "fc": (5, 1024), "y": (5, 64)}
    assert tuple(LocalMINet(128, 32)(out["local"]).shape) == (5, 32, 64)
    assert tuple(GlobalMINet(64, 32)(out["y"]).shape) == (5, 32)
    assert tuple(MapMINet(32)(out["local"]).shape) == (5, 32)
    assert tuple(PriorDiscriminator(64)(out["y"]).shape) == (5,)
    for kind in ("mlp", "linear"):
        assert tuple(make_probe(kind, 1024, 10)(out["fc"]).shape) == (5, 10)
    # Y is the 64-d output of a plain linear layer on the fc features
    assert torch.allclose(out["y"], enc.out(out["fc"]))


def test_local_score_tensor_and_layout_against_loops():
    b, d, hw = 3, 4, 5
    g, l = torch.randn(b, d), torch.randn(b, d, hw)
    s = local_score_tensor(g, l)
    ref = torch.zeros(b, b, hw)
    for i in range(b):
        for j in range(b):
            for k in range(hw):
                ref[i, j, k] = sum(g[i, c] * l[j, c, k] for c in range(d))
    assert torch.allclose(s, ref, atol=1e-5)
    scores, joint, marginal = local_scores(s)
    assert scores.shape == (b, b * hw)
    for i in range(b):
        for c in range(b * hw):
            j, k = divmod(c, hw)
            assert scores[i, c] == ref[i, j, k]
            assert bool(joint[i, c]) == (i == j) and bool(marginal[i, c]) == (i != j)


def _dim_loops(s):
    """DIM's local objectives written out with loops (Hjelm et al. / DIM slides; authors' nce_loss)."""
    b, _, hw = s.shape
    pos = [s[i, i, k] for i in range(b) for k in range(hw)]
    neg = [s[i, j, k] for i in range(b) for j in range(b) if j != i for k in range(hw)]
    jsd = sum(-F.softplus(-p) for p in pos) / len(pos) - sum(F.softplus(q) for q in neg) / len(neg)
    dv = sum(pos) / len(pos) - torch.log(sum(torch.exp(q) for q in neg) / len(neg))
    nce = 0.0
    for i in range(b):
        negs = torch.stack([s[i, j, k] for j in range(b) if j != i for k in range(hw)])
        for k in range(hw):
            logits = torch.cat([s[i, i, k].view(1), negs])
            nce = nce + F.log_softmax(logits, 0)[0]
    nce = nce / (b * hw) + math.log(1 + (b - 1) * hw)  # Poole's K-sample form: <= log K
    return jsd, dv, nce


def test_registry_estimators_on_the_local_layout_match_dim_loops():
    torch.manual_seed(3)
    s = 2.0 * torch.randn(4, 4, 6)
    jsd, dv, nce = _dim_loops(s)
    scores, joint, marginal = local_scores(s)
    est = {n: build_estimator(local_estimator_cfg({"name": n}))(scores, joint=joint, marginal=marginal)
           for n in ("js", "dv", "infonce")}
    assert torch.allclose(-est["js"].loss, jsd, atol=1e-5)
    assert torch.allclose(est["dv"].mi, dv, atol=1e-5)
    assert torch.allclose(est["infonce"].mi, nce, atol=1e-5)


def test_global_scores_and_prior_scores_against_loops():
    g, m = torch.randn(3, 4), torch.randn(3, 4)
    sc = global_scores(g, m)
    for i in range(3):
        for j in range(3):
            assert torch.isclose(sc[i, j], (g[i] * m[j]).sum())
    d_real, d_fake = torch.randn(5), torch.randn(5)
    scores, real, fake = prior_scores(d_real, d_fake)
    # the discriminator's loss through the registry's f-GAN JS = binary cross-entropy, real = prior
    disc = build_estimator({"name": "js"})(scores, joint=real, marginal=fake).loss
    bce = F.binary_cross_entropy_with_logits(d_real, torch.ones(5)) + F.binary_cross_entropy_with_logits(
        d_fake, torch.zeros(5))
    assert torch.isclose(disc, bce, atol=1e-6)


def test_infonce_pair_partition_against_loop_and_row_partition():
    torch.manual_seed(4)
    scores = torch.randn(3, 7)
    joint = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    marginal = torch.ones_like(joint)  # marginal entries that are joint ones are not negatives
    marginal[0, 6] = False
    terms = []
    for i in range(3):
        negs = [scores[i, c] for c in range(7) if marginal[i, c] and not joint[i, c]]
        for c in range(7):
            if joint[i, c]:
                part = torch.stack([scores[i, c]] + negs)
                terms.append(scores[i, c] - (torch.logsumexp(part, 0) - math.log(len(part))))
    est = bounds.infonce(scores, joint, marginal, partition="pair")
    assert torch.allclose(est.mi, torch.stack(terms).mean(), atol=1e-6)
    # one joint entry per row: pair == row (the staircase / SLB results are unchanged)
    sq = torch.randn(5, 5)
    assert torch.allclose(bounds.infonce(sq, partition="pair").mi, bounds.infonce(sq).mi, atol=1e-6)
    onehot = torch.nn.functional.one_hot(torch.tensor([1, 0, 2, 2, 1]), 3).bool()
    logits = torch.randn(5, 3)
    assert torch.allclose(bounds.infonce(logits, onehot, torch.ones_like(onehot), partition="pair").mi,
                          bounds.infonce(logits, onehot, torch.ones_like(onehot)).mi, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# objectives, probes, runs

from mibench.app import run as app_run  # noqa: E402
from mibench.benchmarks.dim import DIMNets
from mibench.probes import extract_features, train_probes  # noqa: E402
from mibench.compose import compose_config  # noqa: E402
from mibench.config import ConfigError, validate  # noqa: E402
from mibench.data.fake_cifar import write_fake_cifar  # noqa: E402


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_fake_cifar(root, classes=10, train_per_class=8, test_per_class=4, seed=1)
    write_fake_cifar(root, classes=100, train_per_class=1, test_per_class=1, seed=2)
    return root


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_prior_matching_gradients_reach_the_encoder():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    prior_only = DIMNets({"name": "js"}, alpha=0.0, beta=0.0, gamma=1.0, mi_units=16)
    loss, _, _, z = prior_only.objective(x)
    loss.backward()
    assert z is not None and torch.all((z > 0) & (z < 1))  # sigmoid(Y), compared with U[0, 1]^64 samples
    assert _grad_norm(prior_only.encoder.conv1) > 0 and _grad_norm(prior_only.encoder.out) > 0
    # the encoder term is the non-saturating GAN loss E_Q[softplus(-D(sigmoid(Y)))], recomputed by hand
    # plus E_V[softplus(D(v))] for the prior samples v (which do not depend on the encoder)
    torch.manual_seed(1)
    loss, _, _, z = prior_only.objective(x)
    torch.manual_seed(1)
    v = torch.rand(8, 64)  # the objective's only random draw
    d = prior_only.disc
    assert torch.isclose(loss, F.softplus(-d(z)).mean() + F.softplus(d(v)).mean(), atol=1e-5)
    # with local DIM on, gamma changes the encoder's gradient (the prior term is not detached)
    grads = []
    for gamma in (0.0, 1.0):
        torch.manual_seed(0)
        m = DIMNets({"name": "infonce"}, alpha=0.0, beta=1.0, gamma=gamma, mi_units=16)
        m.objective(x)[0].backward()
        grads.append(m.encoder.out.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.slow
def test_probe_on_frozen_encoder_leaves_its_weights_unchanged_and_learns_separable_features():
    torch.manual_seed(0)
    enc = DIMEncoder()
    enc.train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}  # BN running stats included
    x = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    y = torch.arange(40) % 4
    norm = lambda xb, train: xb.float() / 255.0  # noqa: E731
    feats = extract_features(enc, x, norm, batch_size=16)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"conv": (40, 4096), "fc": (40, 1024), "y": (40, 64)}
    acc = train_probes(feats, y, feats, y, 4, epochs=2, batch_size=8)
    assert enc.training  # mode restored
    after = enc.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in enc.parameters())
    # features that carry the label: both probes reach 100 % on a linearly separable problem
    sep = {layer: F.one_hot(y, 4).float().repeat(1, 3) + 0.01 * torch.randn(40, 12) for layer in ("conv", "fc", "y")}
    acc = train_probes(sep, y, sep, y, 4, epochs=60, lr=1e-2, batch_size=8)
    assert set(acc) == {(k, layer) for k in ("mlp", "linear") for layer in ("conv", "fc", "y")}
    assert all(v == 100.0 for v in acc.values()), acc


FAST = ["benchmark=dim", "benchmark.batch_size=16", "benchmark.mi_units=16", "benchmark.probe.epochs=2",
        "trainer.enable_progress_bar=false", "logger=none"]


@pytest.mark.slow
def test_end_to_end_local_dim_with_transfer(fake_root, tmp_path):
    cfg = compose_config(FAST + [f"dataset.root={fake_root}", "benchmark.epochs=2", "estimator=js",
                                 "benchmark.probe.datasets=[cifar10,cifar100]"], out_dir=tmp_path / "run")
    assert cfg.dim.name == "local" and (cfg.dim.alpha, cfg.dim.beta, cfg.dim.gamma) == (0.0, 1.0, 0.1)
    res = app_run(cfg, echo=False)
    out = tmp_path / "run"
    import pandas as pd

    epochs = pd.read_csv(out / "epochs.csv")
    assert list(epochs["steps"]) == [5, 10]  # 80 images // batch 16 per epoch
    assert epochs[["loss_mean", "mi_local_mean", "loss_prior_d_mean"]].notna().all().all()
    assert (epochs["mi_global_mean"] == 0).all()  # alpha = 0: no global term
    probes = pd.read_csv(out / "probes.csv")
    assert len(probes) == 12 and set(probes.probe_dataset) == {"cifar10", "cifar100"}
    assert probes.top1.between(0, 100).all()
    transfer = pd.read_csv(out / "transfer.csv")
    assert set(transfer.train_dataset) == {"cifar10"} and set(transfer.test_dataset) == {"cifar10", "cifar100"}
    record = json.loads((out / "result.json").read_text())
    m = record["metrics"]
    assert record["status"] == "completed" and m["steps"] == 10 and m["model"] == "dim_local_js"
    for r in probes.itertuples():
        assert m[f"top1/{r.probe_dataset}/{r.probe}/{r.layer}"] == pytest.approx(r.top1)
    table = (out / "table1.md").read_text()
    row = probes[(probes.probe_dataset == "cifar10") & (probes.probe == "mlp")].set_index("layer").top1
    assert f"| dim_local_js | mlp | {row['conv']:.2f} | {row['fc']:.2f} | {row['y']:.2f} |" in table
    assert "Transfer" in table and res["steps_done"] == 10


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["dim=global", "estimator=alpha"], ["estimator=eta_mine"], ["estimator=remine"]])
def test_any_estimator_plugs_in(fake_root, tmp_path, extra):
    cfg = compose_config(FAST + [f"dataset.root={fake_root}", "benchmark.epochs=1", "benchmark.probe.kinds=[linear]",
                                 *extra], out_dir=tmp_path / "run")
    res = app_run(cfg, echo=False)
    assert res["metrics"]["steps"] == 5 and not res["metrics"]["diverged"]
    assert math.isfinite(res["metrics"]["last_epoch_loss"])


def test_random_init_baseline_trains_nothing(fake_root, tmp_path):
    cfg = compose_config(FAST + [f"dataset.root={fake_root}", "benchmark.epochs=0"], out_dir=tmp_path / "run")
    res = app_run(cfg, echo=False)
    assert res["metrics"]["model"] == "random_init" and res["steps_done"] == 0
    assert not (tmp_path / "run" / "epochs.csv").exists() and (tmp_path / "run" / "probes.csv").exists()


def test_divergence_is_recorded_and_the_run_ends_cleanly(fake_root, tmp_path, monkeypatch):
    import mibench.benchmarks.dim as dimmod

    monkeypatch.setattr(dimmod, "local_score_tensor", lambda g, l: local_score_tensor(g, l) * float("nan"))
    cfg = compose_config(FAST + [f"dataset.root={fake_root}", "benchmark.epochs=3", "benchmark.check_every=1"],
                         out_dir=tmp_path / "run")
    res = app_run(cfg, echo=False)
    assert res["diverged_step"] == 0 and res["metrics"]["diverged"] and res["steps_done"] == 1
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"


def test_presets_compose_and_staircase_is_unaffected():
    c = compose_config([])
    assert c.benchmark.name == "staircase" and c.get("dim") is None
    c = compose_config(["benchmark=dim", "dim=global"])
    assert c.dataset.name == "cifar10" and (c.dim.alpha, c.dim.beta, c.dim.gamma) == (1.0, 0.0, 1.0)
    c = compose_config(["experiment=dim_table1"])
    b = c.benchmark
    assert (c.benchmark.name, c.dataset.name, c.dim.name) == ("dim", "cifar10", "local")
    assert (b.batch_size, b.lr, b.epochs, b.mi_units) == (64, 1e-4, 1000, 2048)
    assert (b.probe.lr, b.probe.batch_size, list(b.probe.milestones)) == (1e-4, 64, [50, 100])
    c = compose_config(["experiment=dim_fast", "dataset=cifar100", "dim=global"])
    assert (c.benchmark.name, c.dataset.name, c.dim.name, c.benchmark.epochs) == ("dim", "cifar100", "global", 100)


@pytest.mark.parametrize("override, needle", [
    (["estimator=alpha"], "estimator=alpha needs a square matrix of paired samples"),
    (["dim.beta=0"], "no MI term"),
    (["benchmark.probe.kinds=[svm]"], "benchmark.probe.kinds"),
    (["benchmark.batch_size=1"], "benchmark.batch_size=1"),
    (["benchmark.probe.datasets=[cifar10,mnist]"], "mnist"),
])
def test_bad_values_are_one_line_config_errors(fake_root, override, needle):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["benchmark=dim", f"dataset.root={fake_root}", *override]))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_probe_dataset_is_a_one_line_error(tmp_path):
    write_fake_cifar(tmp_path, classes=10, train_per_class=2, test_per_class=1)
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["benchmark=dim", f"dataset.root={tmp_path}", "benchmark.probe.datasets=[cifar100]"]))
    assert "cifar100 not found" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_cli_runs_dim_and_rejects_missing_data(fake_root, runs_dir):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "MIBENCH_RUNS": str(runs_dir), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "mibench", *FAST, f"dataset.root={fake_root}", "benchmark.epochs=1",
                        "benchmark.probe.kinds=[linear]"], cwd=root, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    (d,) = [q.parent for q in runs_dir.rglob("probes.csv")]
    assert d.parent == runs_dir / "dim" / "cifar10" and "| model | probe |" in p.stdout
    p = subprocess.run([sys.executable, "-m", "mibench", "benchmark=dim", f"dataset.root={runs_dir / 'nowhere'}"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "cifar10 not found" in p.stderr and len(p.stderr.strip().splitlines()) == 1
