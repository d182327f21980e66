"""One runs root holding a small CPU run of every benchmark (each registered Task), as a user would make it with
``python -m mibench ... runs_root=ROOT``, on tiny generated data: the report and leaderboard tests read it
(tests/test_every_benchmark.py). Build it by hand with ``python tests/every_benchmark.py DIR``."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
TWO = (0, 1)  # seeds of the cheap benchmarks (mean ± sd over seeds needs two)


def data(root: Path) -> dict[str, Path]:
    """The generated data every benchmark below reads: CIFAR-10/100 and STL-10 files, an image tree, a sample file."""
    from mibench.data import stl10
    from mibench.data.fake_cifar import write_fake_cifar
    from mibench.data.imagefolder import write_generated_tree

    images = root / "data"
    write_fake_cifar(images, classes=10, train_per_class=8, test_per_class=4, seed=1)
    write_fake_cifar(images, classes=100, train_per_class=1, test_per_class=1, seed=2)
    stl10.write_fake_stl10(images, train_per_class=3, test_per_class=1, seed=3)
    tree = write_generated_tree(root / "tree", classes=3, train_per_class=3, val_per_class=2, size=(72, 64))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 2))
    y = 0.8 * x + 0.6 * rng.standard_normal((400, 2))
    pairs = root / "pairs.npz"
    np.savez(pairs, x=x, y=y, true_mi=-np.log(1 - 0.8 ** 2 / (0.8 ** 2 + 0.6 ** 2)))  # 2 dims x -1/2 log(1 - rho^2)
    return {"images": images, "tree": Path(tree), "pairs": pairs}


def configs(d: dict[str, Path]) -> list[tuple[str, list[str], tuple[int, ...]]]:
    """(name, overrides, seeds) of each run: every benchmark, its papers' estimators where they are cheap."""
    img = f"dataset.root={d['images']}"
    slb = ["model=convnet", "model.width=8", "benchmark.epochs=1", "dataset.batch_size=16", img]
    dim = ["benchmark=dim", "benchmark.batch_size=16", "benchmark.mi_units=16", "benchmark.probe.epochs=1",
           "benchmark.epochs=1", "benchmark.probe.kinds=[mlp]", img]
    pair = ["benchmark=layerpair", "benchmark.batch_size=8", "benchmark.head_units=8", "benchmark.head_hidden=8",
            "benchmark.probe.epochs=1", "benchmark.epochs=1", img]
    jig = ["experiment=jigsaw_fast", f"dataset.root={d['tree']}", "model.width=2", "benchmark.images_per_batch=2",
           "benchmark.perms_per_batch=3", "benchmark.epochs=1", "benchmark.max_steps=2", "benchmark.check_every=1",
           "benchmark.witness.dim=16", "benchmark.descrambler.proj=8", "benchmark.descrambler.hidden=8",
           "benchmark.pretext.images=2", "benchmark.pretext.perms=2", "benchmark.probe.epochs=2"]
    migan = ["benchmark=migan", "benchmark.steps=40", "benchmark.eval_every=20", "benchmark.batch_size=16",
             "benchmark.eval_samples=200", "benchmark.g_hidden=16", "benchmark.d_hidden=16", "critic.hidden=16",
             "critic.embed=8"]
    grid = ["benchmark.mi_values=[0,2,4]", "benchmark.batch_sizes=[8,16]", "benchmark.n_batches=16",
            "benchmark.min_batches=4"]
    return [
        ("staircase_infonce", ["benchmark=staircase", "estimator=infonce", "dataset.mi_levels=[2,4]",
                               "dataset.steps_per_level=30", "dataset.batch_size=16"], TWO),
        ("staircase_nwj", ["benchmark=staircase", "estimator=nwj", "dataset.mi_levels=[2,4]",
                           "dataset.steps_per_level=30", "dataset.batch_size=16"], TWO),
        ("onehot_mine", ["benchmark=onehot", "estimator=mine", "benchmark.steps=60", "dataset.batch_size=32"], TWO),
        ("optimal", ["benchmark=optimal", *grid, "benchmark.alphas=[0.5]"], TWO),
        ("sandwich", ["benchmark=sandwich", *grid], TWO),
        ("gradients", ["experiment=poole_fig4_fast", *grid, "benchmark.alphas=[0.5]"], TWO),
        ("dsprites", ["experiment=dsprites_fast", "benchmark.steps=4", "benchmark.eval_every=2", "benchmark.batch_size=8",
                      "benchmark.eval_size=96", "benchmark.eval_batch=48"], TWO),
        ("eta_gaussian_eta_mine", ["benchmark=eta_gaussian", "estimator=eta_mine", "benchmark.steps=40",
                                   "benchmark.convex_iters=10", "benchmark.convex_perms=2",
                                   "benchmark.eval_every=20"], TWO),
        ("eta_gaussian_mine", ["benchmark=eta_gaussian", "estimator=mine", "benchmark.steps=40",
                               "benchmark.eval_every=20"], TWO),
        ("migan_eta_mine", [*migan, "estimator=eta_mine"], TWO),
        ("migan_mine", [*migan, "estimator=mine"], (0,)),
        ("migan_unconditional", [*migan, "estimator=mine", "benchmark.conditional=false"], (0,)),
        ("slb_mine", ["dataset=cifar10", "estimator=mine", *slb], TWO),
        ("slb_remine", ["dataset=cifar10", "estimator=remine", "lambda=0.1", *slb], TWO),
        ("clb_infonce", ["benchmark=clb", "estimator=infonce", "critic.embed=16", *slb], (0,)),
        ("dim_infonce", [*dim, "estimator=infonce"], (0,)),
        ("layerpair_eta_mine", [*pair, "estimator=eta_mine"], (0,)),
        ("jigsaw_eta_mine", [*jig, "estimator=eta_mine"], (0,)),
        ("jigsaw_ce", [*jig, "benchmark.objective=ce"], (0,)),
        ("samples_infonce", ["dataset=samples", f"dataset.path={d['pairs']}", "estimator=infonce",
                             "benchmark.batch_size=64", "benchmark.eval_every=25", "benchmark.steps=50"], TWO),
    ]


def make(root: Path) -> Path:
    """Run every configuration of :func:`configs` into ``root/runs`` (run directories ``<benchmark>/<name>_s<seed>``);
    returns that runs root."""
    from mibench.app import run
    from mibench.compose import compose_config

    d = data(root)
    runs = root / "runs"
    for name, overrides, seeds in configs(d):
        for seed in seeds:
            cfg = compose_config([*overrides, *QUIET, f"seed={seed}"], out_dir=runs / name.split("_")[0] / f"{name}_s{seed}")
            run(cfg, echo=False)
    return runs


if __name__ == "__main__":
    import time

    t0 = time.perf_counter()
    print(make(Path(sys.argv[1])), f"{time.perf_counter() - t0:.1f}s")
