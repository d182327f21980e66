"""mibench: a benchmark suite for neural mutual-information estimators."""
import secrets

from omegaconf import OmegaConf

__version__ = "0.1.0"

_UID = secrets.token_hex(2)
# ${uid:} in conf/hydra: a per-process random tag that keeps concurrent runs' directories apart
OmegaConf.register_new_resolver("uid", lambda: _UID, replace=True)


def __getattr__(name: str):
    """``from mibench import estimate`` (the Python API, mibench.api) without importing torch for ``import mibench``."""
    if name in ("estimate", "Estimation"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'mibench' has no attribute {name!r}")
