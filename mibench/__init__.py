"""mibench: a benchmark suite for neural mutual-information estimators."""
import secrets

from omegaconf import OmegaConf

__version__ = "0.1.0"

_UID = secrets.token_hex(2)
# ${uid:} in conf/hydra: a per-process random tag that keeps concurrent runs' directories apart
OmegaConf.register_new_resolver("uid", lambda: _UID, replace=True)


def _run_label(*, _root_) -> str:
    """${run_label:} in conf/hydra: what names the run beside its seed (mibench.labels.roles): the estimator, or
    the analysis where the benchmark uses none (``sandwich``, ``optimal``, jigsaw's ``ce``)."""
    from .labels import roles

    return roles(_root_)["label"]


OmegaConf.register_new_resolver("run_label", _run_label, replace=True)


def __getattr__(name: str):
    """``from mibench import estimate`` (the Python API, mibench.api) without importing torch for ``import mibench``."""
    if name in ("estimate", "Estimation"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mibench' has no attribute {name!r}")
