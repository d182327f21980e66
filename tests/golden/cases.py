"""Golden regression cases: short runs whose per-step / per-epoch CSVs every later version must reproduce.

Each case has two goldens (see tests/test_golden.py for how each is compared):

- ``data64/``: the case run in float64 (``hardware.precision=64-true``). Rounding differences between CPU
  kernels stay at the 9th significant digit there, so these are compared tightly (:data:`RTOL64`) and catch
  any change of a formula, default, data draw or step order.
- ``data/``: the case in float32, as users run it, written by the pre-engine main (commit 7606dd6, one CPU
  thread). Never rewritten: they pin the numbers users got then, within the float32 drift between CPUs.

    python tests/golden/cases.py [name ...]     # (re)write the float64 goldens -- only when a change of
                                                # numbers is intended, and say so in the commit
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
# columns that hold wall-clock time or the config blob, not numbers of the run
SKIP_COLUMNS = {"wall_s", "wall_time_s", "train_wall_s", "config"}
FLOAT64 = ["hardware.precision=64-true"]
# float64 goldens: |got - want| <= ATOL64 + rtol64(case) |want|. Measured over the 61 cases between the native
# (AVX512), AVX2 and DEFAULT kernel paths: max 1e-9 abs, 4e-9 rel (one unit of the CSVs' 9th digit). MKL's
# reproducibility mode (MKL_CBWR=COMPATIBLE: another GEMM order) moves the conv-net cases more: CLB's epoch
# means by up to 4.9e-6 relative; they get IMAGE_RTOL64, 10x that.
RTOL64, ATOL64, IMAGE_RTOL64 = 1e-7, 1e-9, 5e-5
# accuracies move by whole test images when a prediction flips: DIM's probe top-1 (60 test images) moved by
# one image (1.7 points) under MKL_CBWR=COMPATIBLE. Allowance: two images.
ACCURACY_ATOL = {"top1": 2 * 100 / 60, "test_acc": 2 / 60}
# float32 goldens. The first record (step 0, or the first evaluation: before an update has acted much)
# matches tightly in every column: measured max 2e-8 abs between kernel paths (staircase, one-hot).
ATOL32_FIRST = 1e-5
# Later records drift as training amplifies rounding. Measured max relative drift (|d| / (1e-3 + |want|))
# of the bound-determined columns over native / AVX2 / DEFAULT: staircase 8e-3, DIM epoch means 7e-3,
# eta 9e-5, one-hot 4e-5, SLB/CLB 1e-5. Allowance: 5x the worst.
RTOL32, ATOL32 = 4e-2, 1e-3
# Columns a bound leaves undetermined (DV's / InfoNCE's scores are shift-invariant: the joint and marginal
# terms, and the one-hot critic's raw values, wander under rounding while the estimate does not): compared
# in the first record only. Measured drift by step 15: 4e-2 relative on the DEFAULT path.
SHIFT_COLUMNS = {"joint", "marginal", "t_support", "t_off_support", "t_off_min", "t_abs_max", "joint_end",
                 "marginal_end", "drift_slope_per_1k", "marginal_slope_per_1k", "t_support_end",
                 "t_off_support_end", "max_abs_t"}
# files with a first record that is a single step or evaluation (epoch files hold means over many steps)
FIRST_RECORD_FILES = {"steps.csv", "curve.csv"}

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


def rtol64(name: str) -> float:
    """The float64 golden tolerance of a case: conv-net cases (SLB, CLB, DIM) move more under MKL's modes."""
    return IMAGE_RTOL64 if name.split("_")[0] in ("slb", "clb", "dim") else RTOL64


def fake_root(where: Path) -> Path:
    from mibench.data.fake_cifar import write_fake_cifar

    write_fake_cifar(where, classes=10, train_per_class=16, test_per_class=6, seed=1)
    return where


def run_case(name: str, root: Path, out: Path, extra: list[str] = ()) -> Path:
    """Run one case (``extra``: more overrides, e.g. :data:`FLOAT64`) on one CPU thread: conv nets' float
    sums depend on the thread count (DIM's loss moved by 2e-4 between 1 and 2 threads)."""
    import torch

    from mibench.app import run
    from mibench.compose import compose_config

    overrides, _ = cases()[name]
    cfg = compose_config([o.replace("{root}", str(root)) for o in overrides] + QUIET + list(extra), out_dir=out)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, echo=False)
    finally:
        torch.set_num_threads(threads)
    return out


def golden_path(name: str, file: str, float64: bool = False) -> Path:
    return HERE / ("data64" if float64 else "data") / f"{name}__{file}"


def main() -> None:
    """Write the float64 goldens (the float32 ones are the pre-engine originals and are never rewritten)."""
    names = sys.argv[1:] or list(cases())
    with tempfile.TemporaryDirectory() as tmp:
        root = fake_root(Path(tmp) / "cifar")
        for name in names:
            out = run_case(name, root, Path(tmp) / name, FLOAT64)
            for f in cases()[name][1]:
                golden_path(name, f, float64=True).parent.mkdir(exist_ok=True)
                shutil.copy(out / f, golden_path(name, f, float64=True))
            print("wrote", name)


if __name__ == "__main__":
    sys.path.append(str(HERE.parents[1]))  # a mibench already on the path (PYTHONPATH) wins
    main()
