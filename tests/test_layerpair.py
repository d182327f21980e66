"""Layer-pair DIM (benchmark=layerpair) and the STL-10 reader: each against an independent computation.

Everything runs on tiny generated data (mibench.data.fake_cifar, mibench.data.stl10.write_fake_stl10,
both in the real on-disk formats); nothing here needs ../shared or a download.
"""
from __future__ import annotations

import hashlib
import math
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch

from mibench.app import run as app_run
from mibench.compose import compose_config
from mibench.config import ConfigError, validate
from mibench.data import stl10
from mibench.data.fake_cifar import write_fake_cifar
from mibench.estimators import build_estimator
from mibench.models.dim import DIMEncoder
from mibench.models.layerpair import LayerEncoder, PairWitness


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    write_fake_cifar(r, classes=10, train_per_class=3, test_per_class=1, seed=1)
    stl10.write_fake_stl10(r, train_per_class=3, test_per_class=1, seed=2)
    return r


# ---------------------------------------------------------------------------------------------
# networks and scores


def test_layer_encoder_is_dims_encoder_cut_after_layer_k():
    x = torch.randn(3, 3, 32, 32)
    torch.manual_seed(5)
    full = DIMEncoder().eval()
    torch.manual_seed(5)
    enc = LayerEncoder("y").eval()  # built from a DIMEncoder drawn from the same generator state
    ref, out = full(x), enc(x)
    for mine, theirs in (("conv2", "local"), ("conv3", "conv"), ("fc", "fc"), ("y", "y")):
        assert torch.allclose(out[mine], ref[theirs], atol=1e-5)
    assert torch.allclose(out["conv1"], full.conv1(x), atol=1e-6)
    short = LayerEncoder("conv2")
    assert list(short.blocks) == ["conv1", "conv2"] and set(short(x)) == {"conv1", "conv2"}
    assert sum(p.numel() for p in short.parameters()) == sum(
        p.numel() for m in (full.conv1, full.conv2) for p in m.parameters())


@pytest.mark.parametrize("layers", [("conv1", "conv2"), ("conv2", "fc")])
def test_pair_scores_against_a_loop_over_pairs(layers):
    torch.manual_seed(1)
    enc = LayerEncoder(layers[1]).eval()
    wit = PairWitness(layers, units=6, hidden=5).eval()  # eval: BN uses running stats, a pair sees no batch
    x = torch.randn(4, 3, 32, 32)
    scores = wit(enc(x))
    assert scores.shape == (4, 4)
    for i in range(4):
        fi = enc(x[i: i + 1])
        for j in range(4):
            fj = enc(x[j: j + 1])
            f_ij = (wit.head_x(fi[layers[0]])[0] * wit.head_y(fj[layers[1]])[0]).sum()  # f(x'_i, y'_j)
            assert torch.isclose(scores[i, j], f_ij, atol=1e-5), (i, j)


def test_dv_and_eta_mine_on_the_score_matrix_against_formulas():
    torch.manual_seed(2)
    s = torch.randn(5, 5)
    pos = [s[i, i] for i in range(5)]
    neg = [s[i, j] for i in range(5) for j in range(5) if i != j]
    dv = sum(pos) / 5 - torch.log(sum(torch.exp(v) for v in neg) / 20)
    assert torch.isclose(build_estimator({"name": "mine"})(s, None, None).mi, dv, atol=1e-5)
    eta = build_estimator({"name": "eta_mine", "eta_init": 0.3})
    eta_dv = sum(pos) / 5 - math.exp(-0.3) * sum(torch.exp(v) for v in neg) / 20 - 0.3 + 1  # eta-DV, eq. 20
    assert torch.isclose(-eta(s, None, None).loss, eta_dv, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# STL-10 files


def test_stl10_reader_decodes_column_major_bytes_and_averages_3x3_blocks(root):
    d = stl10.data_dir(root)
    raw = (d / "train_X.bin").read_bytes()
    labels = (d / "train_y.bin").read_bytes()
    assert len(raw) == 30 * 27648 and len(labels) == 30 and set(labels) == set(range(1, 11))
    full = stl10.decode_images(np.frombuffer(raw, dtype=np.uint8))
    n = 7
    for c, r, col in ((0, 0, 1), (1, 5, 90), (2, 95, 3), (2, 40, 41)):  # manual decode: column-major per channel
        assert full[n, c, r, col] == raw[n * 27648 + c * 9216 + col * 96 + r]
    x, y = stl10.read_split(root, "train")
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [b - 1 for b in labels]
    for c, i, j in ((0, 0, 0), (1, 10, 31), (2, 31, 7)):  # the 96 -> 32 resize: a manual 3 x 3 average
        block = [raw[n * 27648 + c * 9216 + (3 * j + dc) * 96 + (3 * i + dr)] for dr in range(3) for dc in range(3)]
        assert int(x[n, c, i, j]) == int(math.floor(sum(block) / 9 + 0.5))
    assert stl10.is_generated(root)


def test_stl10_checksum_rejects_a_tampered_archive(tmp_path, root):
    assert stl10.MD5 == "91f7769df0f17e558f3565bffb0c7dfb"  # torchvision.datasets.STL10.tgz_md5
    archive = tmp_path / "stl10_binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stl10.data_dir(root), arcname="stl10_binary")
    good = hashlib.md5(archive.read_bytes()).hexdigest()
    out = stl10.download(tmp_path / "ok", url=archive.as_uri(), md5=good)  # the download path, from a file URL
    assert (out / "test_y.bin").read_bytes() == (stl10.data_dir(root) / "test_y.bin").read_bytes()
    with pytest.raises(stl10.STL10DataError) as e:  # the official md5 never matches a generated archive
        stl10.extract_archive(archive, tmp_path / "official")
    assert stl10.MD5 in str(e.value) and "\n" not in str(e.value)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(stl10.STL10DataError) as e:
        stl10.download(tmp_path / "bad", url=archive.as_uri(), md5=good)
    assert f"expected {good}" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "bad" / "stl10_binary").exists()


def test_stl10_malformed_files_are_one_line_errors(tmp_path):
    stl10.write_fake_stl10(tmp_path, train_per_class=1, test_per_class=1)
    d = stl10.data_dir(tmp_path)
    (d / "test_y.bin").write_bytes(bytes([1] * 9 + [11]))
    with pytest.raises(stl10.STL10DataError, match="labels outside 1..10"):
        stl10.load_stl10(tmp_path)
    (d / "train_X.bin").write_bytes((d / "train_X.bin").read_bytes()[:-5])
    with pytest.raises(stl10.STL10DataError) as e:
        stl10.read_split(tmp_path, "train")
    assert "not a multiple of 27648" in str(e.value) and "\n" not in str(e.value)
    (d / "train_y.bin").unlink()
    with pytest.raises(stl10.STL10DataError) as e:
        stl10.load_stl10(tmp_path)
    assert "stl10 not found" in str(e.value) and "train_y.bin" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# runs and config

TINY = ["benchmark=layerpair", "benchmark.batch_size=8", "benchmark.head_units=8", "benchmark.head_hidden=8",
        "benchmark.probe.epochs=1", "benchmark.epochs=1", "trainer.enable_progress_bar=false", "logger=none"]


def test_end_to_end_on_generated_cifar10_and_stl10_writes_the_table2_layout(root, tmp_path):
    cfg = compose_config(TINY + [f"dataset.root={root}", "dataset=stl10", "estimator=eta_mine"], out_dir=tmp_path / "a")
    assert cfg.benchmark.name == "layerpair" and list(cfg.benchmark.layers) == ["conv1", "conv2"]
    res = app_run(cfg, echo=False)
    assert res.status == "completed" and res.steps_done == 3  # 30 images // batch 8
    t = pd.read_csv(tmp_path / "a" / "table2.csv")
    assert list(zip(t.train_dataset, t.test_dataset)) == [("stl10", "stl10"), ("stl10", "cifar10")]
    assert set(t.method) == {"eta_mine"} and t.top1_acc.between(0, 100).all()
    assert t.set_index("test_dataset").published_top1_acc.to_dict() == {"stl10": 63.3, "cifar10": 68.3}
    assert list(t.train_data) == ["generated"] * 2 and list(t.test_data) == ["generated"] * 2  # fake_cifar's too
    assert (t.probe_train_n == 30).all() and t.set_index("test_dataset").test_n.to_dict() == {"stl10": 10, "cifar10": 10}
    assert "| stl10 (generated) |" in res.text and "S10 eta_mine" in res.text
    assert f"{t.top1_acc[0]:.1f} (63.3)" in res.text
    # the supervised reference: tested on its own dataset only, in its own column
    cfg = compose_config(TINY + [f"dataset.root={root}", "benchmark.supervised=true",
                                 "benchmark.probe.train_size=16", "benchmark.probe.test_size=6"], out_dir=tmp_path / "b")
    res = app_run(cfg, echo=False)
    s = pd.read_csv(tmp_path / "b" / "table2.csv")
    assert len(s) == 1 and (s.method[0], s.test_dataset[0], s.published_top1_acc[0], s.test_n[0]) == (
        "supervised_ce", "cifar10", 84.2, 6)
    from mibench.benchmarks.layerpair import collect, table2_markdown

    md = table2_markdown(collect(tmp_path))
    assert md.splitlines()[0].startswith("| train \\ test | C10 dv_mine | C10 eta_mine | C10 supervised_ce | S10 dv_mine")
    sup = f"{s.top1_acc[0]:.1f} (84.2)"
    assert f"| cifar10 (generated) | — (77.5) | — (74.8) | {sup} | — (55.1) | — (56.4) | — (—) |" in md
    assert f"| stl10 (generated) | — (67.5) | {t.top1_acc[1]:.1f} (68.3) | — (—) | — (61.8) | {t.top1_acc[0]:.1f} (63.3) |" in md


def test_presets_compose():
    c = compose_config(["experiment=eta_table2_layers"])
    b = c.benchmark
    assert (b.name, c.dataset.name, list(b.layers), b.lr, b.epochs) == ("layerpair", "cifar10", ["conv1", "conv2"],
                                                                         1e-4, 200)
    assert list(b.probe.datasets) == ["cifar10", "stl10"]
    c = compose_config(["experiment=layerpair_fast", "dataset=stl10", "estimator=mine"])
    assert (c.benchmark.name, c.dataset.name, c.benchmark.max_steps) == ("layerpair", "stl10", 200)
    assert compose_config(["dataset=stl10"]).benchmark.name == "layerpair"


@pytest.mark.parametrize("override, needle", [
    (["benchmark.layers=[conv2,conv1]"], "benchmark.layers=['conv2', 'conv1'] is invalid"),
    (["benchmark.layers=[conv1,conv9]"], "benchmark.layers"),
    (["benchmark.probe.datasets=[cifar10,mnist]"], "benchmark.probe.datasets"),
    (["benchmark.batch_size=1"], "benchmark.batch_size=1"),
    (["benchmark.supervised=true", "benchmark.epochs=0"], "trains nothing"),
    (["benchmark.probe.datasets=[cifar10,cifar100]"], "cifar100 not found"),
    (["benchmark.probe.train_size=0"], "benchmark.probe.train_size=0"),
])
def test_bad_values_are_one_line_config_errors(root, override, needle):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["benchmark=layerpair", f"dataset.root={root}", *override]))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_stl10_is_a_one_line_error_before_training(tmp_path):
    write_fake_cifar(tmp_path, classes=10, train_per_class=1, test_per_class=1)
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["benchmark=layerpair", f"dataset.root={tmp_path}"]))
    assert "stl10 not found" in str(e.value) and "download" in str(e.value) and "\n" not in str(e.value)
