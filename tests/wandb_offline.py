"""Read what an offline W&B run logged, straight from its run-*.wandb file (no network, no W&B API).

The file is W&B's LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
records, each a 7-byte header (crc32c, length, type FULL/FIRST/MIDDLE/LAST) and a piece of a
serialized ``wandb_internal_pb2.Record``.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK, HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B log file"
    pos, pieces, out = HEADER, b"", []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        body = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pieces = body if kind in (FULL, FIRST) else pieces + body
        if kind in (FULL, LAST):
            r = pb.Record()
            r.ParseFromString(pieces)
            out.append(r)
            pieces = b""
    return out


def logged(run_dir: str | Path) -> dict:
    """{"history": [{key: value}], "config": {...}, "summary": {...}} of the offline run under ``run_dir``."""
    (f,) = Path(run_dir).rglob("run-*.wandb")
    hist, config, summary = [], {}, {}
    for r in records(f):
        kind = r.WhichOneof("record_type")
        if kind == "history":
            hist.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "config":
            for i in r.config.update:
                config[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind == "summary":
            for i in r.summary.update:
                summary[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind == "run":
            for i in r.run.config.update:
                config[i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
    return {"history": hist, "config": config, "summary": summary}
