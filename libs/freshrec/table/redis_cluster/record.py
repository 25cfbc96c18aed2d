"""Commit records of the Redis Cluster backend: encoding, batch ids, applied-hash fields.

A commit record holds a batch's gradient steps per table and shard under a fresh batch id
(layout in `docs/specs/table.md`, section 11); it lives in the commit group's slot and is
applied to the row shards afterwards (`freshrec.table.redis_cluster.apply`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from freshrec.errors import ConfigError
from freshrec.table.redis_cluster.store import ShardUpdate

if TYPE_CHECKING:
    from freshrec.table.redis_cluster.store import RedisClusterEmbeddingStore

__all__ = [
    "RECORD_KEY",
    "RECORD_MAGIC",
    "WRITERS_KEY",
    "applier",
    "batch_seq",
    "decode_record",
    "encode_record",
    "record_key",
    "text",
]

RECORD_MAGIC = b"FRCR1"
RECORD_KEY = "commit"
WRITERS_KEY = "writers"


def record_key(writer: str | None) -> str:
    """The metadata key of a writer's commit record (``commit``, ``commit:<writer>``)."""
    return RECORD_KEY if writer is None else f"{RECORD_KEY}:{writer}"


def applier(group: str | None, writer: str | None) -> str:
    """The field naming a writer of a group in the shards' applied hashes."""
    name = "" if group is None else group
    return name if writer is None else f"{name}/{writer}"


def batch_seq(batch: str | None) -> int:
    """The writer's sequence number in batch id `batch` (-1: none, or an id without one)."""
    if not batch or "." not in batch:
        return -1
    head = batch.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def text(raw: Any) -> str | None:
    """A Redis reply as text (None stays None)."""
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def encode_record(batch: str, updates: Sequence[ShardUpdate]) -> bytes:
    """A commit record: batch id and every step (layout in `docs/specs/trainer-state.md`)."""
    header = {
        "batch": batch,
        "updates": [
            {"table": u.store.config.name, "shard": u.shard, "n": int(u.ids.shape[0])}
            for u in updates
        ],
    }
    head = orjson.dumps(header)
    body = b"".join(
        u.ids.astype("<u8").tobytes()
        + np.ascontiguousarray(u.grads, dtype="<f4").tobytes()
        + u.occurrences.astype("<i8").tobytes()
        + u.event_time.astype("<f8").tobytes()
        for u in updates
    )
    return RECORD_MAGIC + struct.pack("<I", len(head)) + head + body


def decode_record(
    raw: bytes, stores: Mapping[str, RedisClusterEmbeddingStore]
) -> tuple[str, list[ShardUpdate]]:
    """The batch id and steps of a commit record, on the tables `stores` has open.

    Raises:
        ConfigError: the record names a table that is not open, or is not a commit record.
    """
    if not raw.startswith(RECORD_MAGIC):
        raise ConfigError("not a freshrec commit record")
    at = len(RECORD_MAGIC)
    (size,) = struct.unpack_from("<I", raw, at)
    at += 4
    header = orjson.loads(raw[at : at + size])
    at += size
    out = []
    for item in header["updates"]:
        store = stores.get(item["table"])
        if store is None:
            raise ConfigError(
                f"the commit record names table {item['table']!r}, which is not open; "
                "open every table before the first transaction"
            )
        n, dim = int(item["n"]), store.config.dim
        ids = np.frombuffer(raw, "<u8", n, at).astype(np.uint64)
        at += 8 * n
        grads = np.frombuffer(raw, "<f4", n * dim, at).reshape(n, dim).astype(np.float32)
        at += 4 * n * dim
        occ = np.frombuffer(raw, "<i8", n, at).astype(np.int64)
        at += 8 * n
        times = np.frombuffer(raw, "<f8", n, at).astype(np.float64)
        at += 8 * n
        out.append(ShardUpdate(store, int(item["shard"]), ids, grads, occ, times))
    return str(header["batch"]), out
