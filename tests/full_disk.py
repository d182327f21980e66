"""A full disk, simulated: a write fails with ENOSPC part-way, as it would (tests/test_records.py).

``fail_records`` makes mibench's atomic writes (mibench.results.atomic_write_text: records, CSVs) of the files
``hit(name, text)`` picks fail; ``fail_checkpoints`` makes torch.save fail after writing part of the file.
``setattr``: pytest's ``monkeypatch.setattr`` in a test, or the builtin in a subprocess.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any, Callable

Hit = Callable[[str, str], bool]


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullFile:
    """An open text file whose ``write`` fails half-way when ``hit(its name, the text)``."""

    def __init__(self, f: Any, hit: Hit):
        self.f, self.hit = f, hit

    def write(self, text: str) -> int:
        if self.hit(Path(os.readlink(f"/proc/self/fd/{self.f.fileno()}")).name, text):
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            raise enospc()
        return self.f.write(text)

    def __enter__(self) -> "_FullFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()


class _Os:
    """``os`` whose ``fdopen`` gives a :class:`_FullFile`."""

    def __init__(self, hit: Hit):
        self.hit = hit

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fdopen(self, fd: int, *a: Any, **k: Any) -> _FullFile:
        return _FullFile(os.fdopen(fd, *a, **k), self.hit)


def final_record(name: str, text: str) -> bool:
    """The run's record once it has finished (its first, ``running`` record is written)."""
    return name.startswith(".result.json") and '"status": "running"' not in text


def fail_records(setattr: Callable[..., Any], hit: Hit = final_record) -> None:
    from mibench import results

    setattr(results, "os", _Os(hit))


def fail_checkpoints(setattr: Callable[..., Any]) -> None:
    from mibench.engine import loop

    def save(state: Any, path: Any) -> None:
        Path(path).write_bytes(b"PK\x03\x04 half a checkpoint")
        raise enospc()

    setattr(loop.torch, "save", save)
