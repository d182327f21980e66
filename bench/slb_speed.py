"""make bench (SLB part): SLB training-step time through mibench vs a raw PyTorch loop, and the data pipeline alone.

Same fake CIFAR-10 images in memory, same small conv net (model=convnet), same batch, same
augmentation (crop + flip + normalise as tensors), Adam at lr 1e-3, on the CPU. mibench runs the
full stack (config -> engine -> the SLB task with the registry's InfoNCE on the B x C logit
masks, epochs.csv, result.csv); the raw loop is F.cross_entropy + backward + step over the same
batches. Both are timed per epoch (mibench: epochs.csv's wall_s, from epoch start to epoch end),
the first epoch left out as warm-up; the test-set evaluation is reported separately.
Repeats are interleaved and the best of each is kept (the machine may be shared).

    python bench/slb_speed.py [--batch 128] [--epochs 4] [--per-class 320] [--repeats 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mibench.app import run
from mibench.compose import compose_config
from mibench.data.cifar import SPECS, CifarBatches, augment, load_cifar
from mibench.data.fake_cifar import write_fake_cifar
from mibench.models import build_model


def raw_loop(root: Path, batch: int, epochs: int, width: int, seed: int = 0) -> tuple[float, int]:
    torch.manual_seed(seed)
    x, y, _, _ = load_cifar(root, "cifar10")
    spec = SPECS["cifar10"]
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    model = build_model({"name": "convnet", "width": width}, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = CifarBatches(x, y, batch, seed)
    losses = torch.zeros(epochs * len(batches))
    t, walls = 0, []
    for _ in range(epochs):
        t0, n0 = time.perf_counter(), t
        for xb, yb in batches:
            loss = F.cross_entropy(model(augment(xb, mean, std, 4, True)), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[t] = loss.detach()
            t += 1
        walls.append(((time.perf_counter() - t0), t - n0))
    return _steady(walls)


def _steady(walls: list[tuple[float, int]]) -> tuple[float, int]:
    """Seconds and steps of all epochs but the first (warm-up: allocator, oneDNN primitives, Trainer start)."""
    rest = walls[1:] or walls
    return sum(w for w, _ in rest), sum(n for _, n in rest)


def mibench_run(root: Path, out: Path, batch: int, epochs: int, width: int) -> tuple[float, int, float]:
    cfg = compose_config(["estimator=infonce", "dataset=cifar10", f"dataset.root={root}", f"dataset.batch_size={batch}",
                          f"benchmark.epochs={epochs}", "model=convnet", f"model.width={width}", "logger=csv",
                          "trainer.enable_progress_bar=false"], out_dir=out)
    r = run(cfg, echo=False)
    m, h = r["metrics"], r["history"]
    wall, steps = _steady(list(zip(h["wall_s"], h["epoch_steps"])))
    return wall, steps, m["wall_time_s"] - m["train_wall_s"]


def pipeline(root: Path, batch: int, epochs: int) -> float:
    """images/s of sampling + gathering + augmenting batches alone (no model)."""
    x, y, _, _ = load_cifar(root, "cifar10")
    spec = SPECS["cifar10"]
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    batches = CifarBatches(x, y, batch, 0)
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, _ in batches:
            out = augment(xb, mean, std, 4, True)
            n += out.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--per-class", type=int, default=320, help="fake train images per class (10 classes)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_fake_cifar(root, 10, a.per_class, 10)
        raw_best = mib_best = float("inf")
        evals = []
        for i in range(a.repeats):
            w, n_raw = raw_loop(root, a.batch, a.epochs, a.width)
            raw_best = min(raw_best, w / n_raw)
            w, n_mib, ev = mibench_run(root, root / f"run{i}", a.batch, a.epochs, a.width)
            mib_best = min(mib_best, w / n_mib)
            evals.append(ev)
        ips = max(pipeline(root, a.batch, a.epochs) for _ in range(a.repeats))
    step_ips = a.batch / mib_best
    print(f"SLB step, small conv net (width {a.width}), batch {a.batch}, CPU, {torch.get_num_threads()} threads, "
          f"{n_mib} timed steps (epochs 2..{a.epochs}) x best of {a.repeats}:")
    print(f"  raw PyTorch loop   {raw_best * 1e3:8.2f} ms/step")
    print(f"  mibench (fit)      {mib_best * 1e3:8.2f} ms/step   ratio {mib_best / raw_best:.3f} (target <= 1.10)")
    print(f"  data pipeline      {ips:10.0f} images/s (sample + gather + crop/flip/normalise) vs training "
          f"{step_ips:.0f} images/s: {ips / step_ips:.0f}x")
    print(f"  (mibench test-set evaluation after fit: {min(evals):.2f} s, not in the ratio)")


if __name__ == "__main__":
    main()
