"""Golden regression cases: short runs whose per-step / per-epoch CSVs were written by the pre-engine
main (commit 7606dd6, one CPU thread) and must be reproduced to within 1e-6 by every later version.

    python tests/golden/cases.py            # (re)write the golden CSVs -- only before a refactor
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
TOL = 1e-6
# columns that hold wall-clock time or the config blob, not numbers of the run
SKIP_COLUMNS = {"wall_s", "wall_time_s", "train_wall_s", "config"}

STAIRCASE_ESTIMATORS = ["dv", "mine", "nwj", "tuba", "infonce", "js", "smile", "smile_js", "alpha", "eta_mine",
                        "remine", "renwj", "reinfonce", "resmile", "retuba", "rejs"]
STAIRCASE = ["dataset.dim=3", "dataset.batch_size=12", "dataset.mi_levels=[1,3]", "dataset.steps_per_level=8",
             "critic.hidden=16", "benchmark.plot=false", "benchmark.steps_per_batch=5"]
ONEHOT = ["benchmark=onehot", "benchmark.steps=40", "dataset.batch_size=32", "benchmark.plot=false",
          "benchmark.steps_per_batch=7"]
ETA = ["benchmark=eta_gaussian", "benchmark.steps=30", "benchmark.eval_every=10", "dataset.n_train=200",
       "dataset.n_test=100", "benchmark.eval_block=50", "benchmark.plot=false", "critic.hidden=16",
       "benchmark.convex_iters=10", "benchmark.convex_perms=2"]
IMAGE = ["model=convnet", "model.width=8", "dataset.batch_size=32", "benchmark.epochs=2", "benchmark.check_every=2"]
DIM = ["benchmark=dim", "benchmark.batch_size=16", "benchmark.mi_units=16", "benchmark.probe.epochs=2",
       "benchmark.epochs=2", "benchmark.probe.datasets=[cifar10]"]


def cases() -> dict[str, tuple[list[str], list[str]]]:
    """name -> (overrides, files compared). ``{root}`` in an override is the fake CIFAR root."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for critic in ("separable", "concat", "bilinear"):
        for est in STAIRCASE_ESTIMATORS:
            out[f"staircase_{critic}_{est}"] = ([f"estimator={est}", f"critic={critic}", "seed=1"] + STAIRCASE,
                                                ["steps.csv", "summary.csv"])
    out["staircase_separable_mine_ema"] = (["estimator=mine", "estimator.ema=true", "seed=1"] + STAIRCASE,
                                           ["steps.csv", "summary.csv"])
    for est in ("mine", "remine", "nwj"):
        out[f"onehot_{est}"] = ([f"estimator={est}", "seed=2"] + ONEHOT, ["steps.csv", "summary.csv"])
    for est in ("eta_mine", "mine", "infonce"):
        out[f"eta_gaussian_{est}"] = ([f"estimator={est}", "seed=3"] + ETA, ["curve.csv", "summary.csv"])
    for bench, est in (("slb", "infonce"), ("slb", "remine"), ("clb", "infonce"), ("clb", "mine")):
        out[f"{bench}_{est}"] = ([f"benchmark={bench}", "dataset=cifar10", f"estimator={est}", "dataset.root={root}",
                                  "seed=4"] + IMAGE, ["epochs.csv", "result.csv"])
    for est in ("infonce", "js"):
        out[f"dim_{est}"] = ([f"estimator={est}", "dataset.root={root}", "seed=5"] + DIM, ["epochs.csv", "probes.csv"])
    return out


def fake_root(where: Path) -> Path:
    from mibench.data.fake_cifar import write_fake_cifar

    write_fake_cifar(where, classes=10, train_per_class=16, test_per_class=6, seed=1)
    return where


def run_case(name: str, root: Path, out: Path) -> Path:
    """Run one case on one CPU thread: conv nets' float sums depend on the thread count (DIM's loss moved
    by 2e-4 between 1 and 2 threads), one thread is the same on every machine."""
    import torch

    from mibench.app import run
    from mibench.compose import compose_config

    overrides, _ = cases()[name]
    cfg = compose_config([o.replace("{root}", str(root)) for o in overrides] + QUIET, out_dir=out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, echo=False)
    finally:
        torch.set_num_threads(threads)
    return out


def golden_path(name: str, file: str) -> Path:
    return HERE / "data" / f"{name}__{file}"


def main() -> None:
    names = sys.argv[1:] or list(cases())
    with tempfile.TemporaryDirectory() as tmp:
        root = fake_root(Path(tmp) / "cifar")
        for name in names:
            out = run_case(name, root, Path(tmp) / name)
            for f in cases()[name][1]:
                golden_path(name, f).parent.mkdir(exist_ok=True)
                shutil.copy(out / f, golden_path(name, f))
            print("wrote", name)


if __name__ == "__main__":
    sys.path.append(str(HERE.parents[1]))  # a mibench already on the path (PYTHONPATH) wins
    main()
