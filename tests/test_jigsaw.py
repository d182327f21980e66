"""MI Jigsaw (benchmark=jigsaw): permutation set, patch pipeline, scrambling, witness scores, gradients, runs.

Each test checks against an independent computation (loops, numpy slicing, published counts). Images are
GENERATED (mibench.data.imagefolder.write_generated_tree); nothing here needs ImageNet.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mibench.compose import compose_config
from mibench.config import ConfigError, validate
from mibench.data.imagefolder import ImageFolder, ImageFolderError, subset_per_class, write_generated_tree
from mibench.data.jigsaw import (Geometry, max_hamming_set, permutation_set, puzzle_patches, scramble,
                                 target_patches, unscramble)
from mibench.estimators import build_estimator
from mibench.models.jigsaw import CosineWitness, PatchEncoder, witness_layout
from mibench.models.resnet import ResNet50


# ---------------------------------------------------------------------------------------------
# permutations


def test_permutation_set_is_distinct_deterministic_and_reports_its_min_hamming(tmp_path):
    perms, dmin = permutation_set(100, seed=0, cache_dir=tmp_path)
    assert perms.shape == (100, 9)
    assert all(sorted(p) == list(range(9)) for p in perms.tolist())
    assert len({tuple(p) for p in perms.tolist()}) == 100
    brute = min(sum(a != b for a, b in zip(p, q)) for p, q in itertools.combinations(perms.tolist(), 2))
    assert dmin == brute and brute >= 6
    assert (tmp_path / "jigsaw_perms_n100_seed0.npy").exists()
    again, d2 = permutation_set(100, seed=0, cache_dir=tmp_path)  # from the cache
    assert np.array_equal(again, perms) and d2 == dmin
    assert np.array_equal(max_hamming_set(100, seed=0), perms)  # recomputed: same set for the same seed
    assert not np.array_equal(max_hamming_set(100, seed=1), perms)


def test_greedy_step_maximises_the_min_distance_by_brute_force():
    chosen = max_hamming_set(12, seed=3, k=5).tolist()  # 5! = 120 candidates: a loop over all of them
    cands = [list(p) for p in itertools.permutations(range(5))]
    for t in range(1, len(chosen)):
        def dmin(c):
            return min(sum(a != b for a, b in zip(c, q)) for q in chosen[:t])
        assert dmin(chosen[t]) == max(dmin(c) for c in cands)


# ---------------------------------------------------------------------------------------------
# pipeline


def _images(n=3, size=292, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8))


def test_train_patches_shapes_and_per_patch_statistics():
    x = puzzle_patches(_images(), Geometry(gray_p=0.0), train=True, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 9, 3, 64, 64)
    p = x.reshape(-1, 64 * 64).double().numpy()
    assert np.allclose(p.mean(1), 0, atol=1e-5) and np.allclose(p.std(1), 1, atol=1e-4)
    assert not torch.equal(x[:, :, 0], x[:, :, 1])  # colour kept
    g = puzzle_patches(_images(), Geometry(gray_p=1.0), train=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(g[:, :, 0], g[:, :, 1]) and torch.equal(g[:, :, 1], g[:, :, 2])


def test_test_time_patches_are_the_centre_crop_by_numpy_slicing():
    imgs = _images(2)
    a = puzzle_patches(imgs, train=False)
    assert torch.equal(a, puzzle_patches(imgs, train=False))
    x = imgs.numpy().astype(np.float64) / 255.0
    for b in range(2):
        for k in range(9):
            r, c = divmod(k, 3)
            top, left = 18 + 85 * r + 10, 18 + 85 * c + 10  # (292-255)//2, cell, (85-64)//2
            ref = x[b, :, top:top + 64, left:left + 64]
            ref = (ref - ref.mean(axis=(1, 2), keepdims=True)) / ref.std(axis=(1, 2), keepdims=True)
            assert np.allclose(a[b, k].numpy(), ref, atol=1e-4)
    t = target_patches(_images(1, 232))
    x = _images(1, 232).numpy().astype(np.float64)[0] / 255.0
    ref = x[:, 20 + 64:20 + 128, 20 + 128:20 + 192]  # cell (1, 2) of the centre 192 crop
    ref = (ref - ref.mean(axis=(1, 2), keepdims=True)) / ref.std(axis=(1, 2), keepdims=True)
    assert t.shape == (1, 9, 3, 64, 64) and np.allclose(t[0, 5].numpy(), ref, atol=1e-4)


def test_scramble_against_a_loop_and_its_inverse():
    perms = torch.from_numpy(max_hamming_set(10, seed=0))
    p = torch.randn(4, 9, 3, 2, 2)
    idx = torch.tensor([0, 3, 7, 9])
    s = scramble(p, perms[idx])
    for b in range(4):
        for k in range(9):
            assert torch.equal(s[b, k], p[b, perms[idx[b], k]])
    assert torch.equal(unscramble(s, perms[idx]), p)


# ---------------------------------------------------------------------------------------------
# networks and scores


def test_resnet50_matches_the_published_parameter_count_and_width():
    net = ResNet50(None)
    # torchvision's resnet50 has 25,557,032 parameters, its fc 2048 * 1000 + 1000 of them
    assert sum(p.numel() for p in net.parameters()) == 25_557_032 - 2_049_000
    assert net.out_features == 2048
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2048)
    assert CosineWitness(2048).conv_features == 9216


def test_cosine_witness_scores_against_a_loop_and_the_layouts():
    torch.manual_seed(1)
    w = CosineWitness(16, n_perms=100, dim=32).eval()
    feats, cols = torch.randn(6, 9, 16), torch.tensor([5, 17, 3, 99, 42, 0, 8, 61])
    s = w(feats, cols)
    for i in range(6):
        gx = w.x_out(w.stages(w.x_proj(feats[i:i + 1]).unsqueeze(1)).flatten(1))[0]
        for j in range(len(cols)):
            hy = w.y_proj(F.one_hot(cols[j], 100).float())
            assert torch.allclose(s[i, j], F.cosine_similarity(gx, hy, dim=0), atol=1e-5)
    assert s.abs().max() <= 1 + 1e-6
    slot = torch.tensor([0, 1, 2, 3, 0, 1])
    sc, jm, mm, c = witness_layout(s, slot, 4, "unused")
    for i in range(6):
        for k in range(8):
            assert bool(jm[i, k]) == (k == slot[i]) and bool(mm[i, k]) == (k == 4 + slot[i])
    dv = build_estimator({"name": "dv"})(sc, jm, mm)
    ref = sum(s[i, slot[i]] for i in range(6)) / 6 - torch.log(sum(torch.exp(s[i, 4 + slot[i]]) for i in range(6)) / 6)
    assert torch.allclose(dv.mi, ref, atol=1e-6)
    sq, j2, m2, _ = witness_layout(s, slot, 4, "batch")
    assert j2 is None and all(sq[i, j] == s[i, slot[j]] for i in range(6) for j in range(6))
    _, _, m3, _ = witness_layout(s, slot, 4, "unused_all")
    assert int(m3.sum()) == 6 * 4 and not (m3 & jm).any()


def test_the_mi_term_reaches_the_encoder():
    torch.manual_seed(0)
    enc = PatchEncoder(ResNet50(None, width=2, blocks=(1, 1, 1, 1)), 64)
    w, est = CosineWitness(64, dim=16), build_estimator({"name": "eta_mine"})
    slot = torch.arange(4).repeat(2)
    s = w(enc(torch.randn(8, 9, 3, 64, 64)), torch.arange(100))[:, torch.arange(8)]
    sc, jm, mm, _ = witness_layout(s, slot, 4)
    est(sc, jm, mm).loss.backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0 and est.eta.grad is not None


# ---------------------------------------------------------------------------------------------
# data and runs


def test_ten_percent_subset_is_per_class_and_seeded():
    labels = np.repeat([0, 1, 2], [130, 50, 7])
    a = subset_per_class(labels, 0.1, seed=0)
    assert [int((labels[a] == c).sum()) for c in range(3)] == [13, 5, 1]
    assert np.array_equal(a, subset_per_class(labels, 0.1, seed=0))
    assert not np.array_equal(a, subset_per_class(labels, 0.1, seed=1))
    b = subset_per_class(np.repeat([0, 1, 2, 3], [130, 50, 7, 20]), 0.1, seed=0)  # another class: the others unchanged
    assert np.array_equal(b[b < 187], a)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_generated_tree(tmp_path_factory.mktemp("imgs"), classes=3, train_per_class=3, val_per_class=2,
                                size=(72, 64))


FAST = ["experiment=jigsaw_fast", "model.width=2", "benchmark.images_per_batch=2", "benchmark.perms_per_batch=3",
        "benchmark.epochs=2", "benchmark.max_steps=3", "benchmark.check_every=1", "benchmark.witness.dim=16",
        "benchmark.descrambler.proj=8", "benchmark.descrambler.hidden=8", "benchmark.pretext.images=2",
        "benchmark.pretext.perms=2", "benchmark.probe.epochs=3", "trainer.enable_progress_bar=false", "logger=none"]


@pytest.mark.parametrize("extra", [["benchmark.objective=ce"], ["estimator=mine"]])
def test_end_to_end_tiny_run(tree, tmp_path, extra):
    from mibench.app import run as app_run

    cfg = compose_config(FAST + [f"dataset.root={tree}", f"benchmark.perm_cache={tmp_path}", *extra],
                         out_dir=tmp_path / "run")
    res = app_run(cfg, echo=False)
    out = tmp_path / "run"
    record = json.loads((out / "result.json").read_text())
    assert record["status"] == "completed" and res.steps_done == 3  # 9 images // 2 = 4 a epoch, stopped at 3
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 3 and steps[["loss", "mi", "acc"]].notna().all().all()
    epochs = pd.read_csv(out / "epochs.csv")
    assert epochs.pretext_top1.notna().iloc[-1] and epochs.pretext_top1.between(0, 100).all()
    summ = pd.read_csv(out / "summary.csv")
    assert list(summ.metric) == ["top1"] and summ["mean"].between(0, 100).all()  # 3 classes: top-5 always hits
    assert "top5" not in record["metrics"] and "top5" not in pd.read_csv(out / "probes.csv")
    method = "CE" if "ce" in extra[0] else "DV-MINE"
    assert record["metrics"]["method"] == method and record["metrics"]["perm_min_hamming"] >= 6
    # generated images: said in the record, the console text and table3.md, beside the paper's Table 3
    assert record["generated_data"] == f"a GENERATED image tree (3 classes, {tree}), not ImageNet"
    assert f"on imagenet10: {record['generated_data']}" in res.text.splitlines()[0]
    assert f"{method} (this run, GENERATED data)" in res.text and "12.9 ± 0.3" in res.text
    md = (out / "table3.md").read_text()
    assert md.startswith(f"GENERATED DATA: {record['generated_data']}")
    (top5,) = [ln for ln in md.splitlines() if ln.startswith("| top5 |")]
    assert "trivial (3 classes)" in top5 and "100.0" not in top5


def test_bad_input_is_rejected_before_training_with_one_line(tree, tmp_path):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(FAST + [f"dataset.root={tmp_path / 'absent'}", "dataset.generated=false"]))
    assert "not found" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "t" / "train" / "a").mkdir(parents=True)
    (tmp_path / "t" / "train" / "b").mkdir()
    (tmp_path / "t" / "val").mkdir()
    import shutil

    shutil.copy(next((tree / "train" / "generated_00").iterdir()), tmp_path / "t" / "train" / "a")
    with pytest.raises(ConfigError) as e:
        validate(compose_config(FAST + [f"dataset.root={tmp_path / 't'}"]))
    assert "train/b has no images" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        validate(compose_config(FAST + [f"dataset.root={tree}", "benchmark.perms_per_batch=60"]))
    assert "perms_per_batch=60" in str(e.value)
    bad = tmp_path / "bad"
    shutil.copytree(tree, bad)
    next((bad / "val" / "generated_01").iterdir()).write_bytes(b"not an image")
    with pytest.raises(ImageFolderError) as e2:
        ImageFolder(bad, "val").verify()
    assert "cannot decode image" in str(e2.value) and "\n" not in str(e2.value)


def test_presets_carry_the_papers_settings():
    c = compose_config(["experiment=eta_table3"])
    b = c.benchmark
    assert (c.benchmark.name, c.dataset.name, c.model.name, list(c.model.blocks), c.model.width) == (
        "jigsaw", "imagenet10", "resnet50", [3, 4, 6, 3], 64)
    assert (b.epochs, b.images_per_batch, b.perms_per_batch, b.n_perms, b.lr, c.dataset.fraction) == (
        200, 10, 16, 100, 1e-4, 0.1)
    assert (c.estimator.name, c.estimator.eta_lr, c.estimator.eta_init) == ("eta_mine", 0.01, 0.0)
    assert (b.probe.epochs, b.probe.lr, list(b.probe.seeds)) == (200, 1e-4, [0, 1])
    g = b.geometry
    assert (g.resize, g.crop, g.patch, g.target_resize, g.target_crop) == (292, 255, 64, 232, 192)
    assert compose_config(["experiment=jigsaw_fast"]).dataset.generated is True
