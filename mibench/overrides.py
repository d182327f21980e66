"""The overrides a command line implies (``benchmark=X`` alone brings X's default dataset and estimator),
read from conf/ with omegaconf alone: shared by the CLI and :func:`mibench.compose.compose_config`."""
from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def benchmark_default(benchmark: str, key: str) -> str | None:
    """``benchmark.<key>`` (``default_dataset``, ``default_estimator``) of conf/benchmark/<benchmark>.yaml
    (plain or ``_global_`` package)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "benchmark" / f"{benchmark}.yaml"
    if not path.exists():
        return None
    node = OmegaConf.load(path)
    node = node.get("benchmark", node)
    return node.get(key)


def implied(args: list[str]) -> list[str]:
    """``benchmark=X`` alone: add X's default dataset (``benchmark=onehot`` -> ``dataset=onehot``) unless
    ``dataset=`` is given, and X's default estimator (``benchmark=dsprites`` -> ``estimator=struct_js``)
    unless ``estimator=`` is given. (A benchmark YAML cannot pick these itself: both groups come after it.)"""
    plain = [a for a in args if not a.startswith("-")]
    bench = [a.split("=", 1)[1] for a in plain if a.startswith("benchmark=")]
    if len(bench) != 1 or "," in bench[0] or any(a.startswith("experiment=") for a in plain):
        return args
    extra = []
    for group, key in (("dataset", "default_dataset"), ("estimator", "default_estimator")):
        choice = benchmark_default(bench[0], key)
        if choice and not any(a.startswith(f"{group}=") for a in plain):
            extra.append(f"{group}={choice}")
    return args + extra
