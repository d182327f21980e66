"""make bench: the full 5 x 4,000-step staircase through mibench vs a minimal raw PyTorch loop.

Both do the same computation: the same StaircaseStream batches, the same critic, the same
estimator function and Adam; the raw loop just has no engine, no records, no CSV, no logging. Both are
timed in this one process, so the ratio compares like with like on whatever machine runs it.

    python bench/staircase_speed.py [--estimator infonce] [--steps 4000] [--concat-steps 4000] [--repeats 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from mibench.app import run
from mibench.cli import CONF_DIR
from mibench.critics import build_critic
from mibench.data.gaussian import StaircaseStream
from mibench.estimators import build_estimator


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.out_dir = "unused"
    return cfg


def raw_loop(cfg, device: str = "cpu") -> tuple[float, float]:
    """Minimal PyTorch training loop over the same data, critic, estimator and optimizer.

    On CUDA it uses the same precision as hardware=gpu: critic under bf16 autocast, bound in fp32.
    """
    torch.manual_seed(int(cfg.seed))
    d = cfg.dataset
    stream = StaircaseStream(d.dim, d.batch_size, list(d.mi_levels), d.steps_per_level, int(cfg.seed), d.transform)
    critic = build_critic(OmegaConf.to_container(cfg.critic), d.dim, d.dim).to(device)
    est = build_estimator(OmegaConf.to_container(cfg.estimator), dim_y=d.dim).to(device)
    opt = torch.optim.Adam([{"params": critic.parameters()}] + est.param_groups(cfg.benchmark.lr), lr=cfg.benchmark.lr)
    record = torch.zeros(len(stream) * stream.chunk, 4, device=device)
    t0, c0 = time.perf_counter(), time.process_time()
    cuda = device.startswith("cuda")
    for t, (x, y, _) in enumerate(stream.batches()):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            scores = critic(x, y)
        e = est(scores.float(), y=y)
        opt.zero_grad(set_to_none=True)
        e.loss.backward()
        opt.step()
        record[t] = torch.stack((e.mi, e.loss, e.joint, e.marginal)).detach()
    record.cpu()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0


def mibench_run(cfg) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        run(cfg, out_dir=Path(tmp), echo=False)
        return time.perf_counter() - t0, time.process_time() - c0


def compare(label: str, overrides: list[str], repeats: int, device: str = "cpu") -> tuple[float, float]:
    """Interleave raw and mibench runs ``repeats`` times; compare each one's best.

    Small shared machines vary by tens of percent between identical runs, so the best of several
    interleaved runs is the estimate, and process CPU time (less sensitive to being descheduled)
    is reported beside wall time.
    """
    cfg = compose_cfg(overrides)
    raws, mibs = [], []
    for _ in range(repeats):
        raws.append(raw_loop(cfg, device))
        mibs.append(mibench_run(compose_cfg(overrides)))
    raw, mib = min(r[0] for r in raws), min(m[0] for m in mibs)
    raw_cpu, mib_cpu = min(r[1] for r in raws), min(m[1] for m in mibs)
    steps = cfg.dataset.steps_per_level * len(cfg.dataset.mi_levels)
    print(f"{label:<40} steps={steps:>6}  wall: raw={raw:6.2f}s mibench={mib:6.2f}s ratio={mib / raw:5.3f}"
          f"  | cpu: raw={raw_cpu:6.2f}s mibench={mib_cpu:6.2f}s ratio={mib_cpu / raw_cpu:5.3f}"
          f"  ({1e3 * raw / steps:.3f} vs {1e3 * mib / steps:.3f} ms/step wall, best of {repeats})", flush=True)
    return raw, mib


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--estimator", default="infonce")
    p.add_argument("--steps", type=int, default=4000, help="steps per MI level (paper: 4000)")
    p.add_argument("--concat-steps", type=int, default=4000, help="steps for the one-level concat timing (0: skip)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--hardware", default="cpu", choices=["cpu", "gpu"], help="gpu: CUDA, bf16-mixed critic")
    a = p.parse_args()
    device = "cuda" if a.hardware == "gpu" else "cpu"
    common = ["logger=none", "benchmark.plot=true", "trainer.enable_progress_bar=false", f"hardware={a.hardware}"]
    gpu = f", {torch.cuda.get_device_name()}" if device == "cuda" else ""
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}{gpu}")
    compare(f"staircase 5 levels, separable, {a.estimator}",
            [f"estimator={a.estimator}", f"dataset.steps_per_level={a.steps}"] + common, a.repeats, device)
    if a.concat_steps:
        compare(f"one level (MI=2), concat, {a.estimator}",
                [f"estimator={a.estimator}", "critic=concat", "dataset.mi_levels=[2]",
                 f"dataset.steps_per_level={a.concat_steps}"] + common, a.repeats, device)


if __name__ == "__main__":
    main()
