"""Key names and id packing of the Redis store (layout in `docs/specs/table.md`, version 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from freshrec.table.records import IdArray

__all__ = ["TableKeys", "id_bytes", "pack_ids", "split_ids", "unpack_ids"]


def pack_ids(ids: IdArray) -> bytes:
    """The ids' 8-byte little-endian encodings, back to back."""
    return ids.astype("<u8", copy=False).tobytes()


def split_ids(ids: IdArray) -> list[bytes]:
    """Each id's 8 little-endian bytes (hash fields, key suffixes)."""
    raw = pack_ids(ids)
    return [raw[i : i + 8] for i in range(0, len(raw), 8)]


def id_bytes(ids: IdArray) -> npt.NDArray[np.uint8]:
    """`(N, 8)` uint8: each id's little-endian bytes."""
    return np.ascontiguousarray(ids, dtype="<u8").view(np.uint8).reshape(-1, 8)


def unpack_ids(raw: bytes) -> IdArray:
    """`(N,)` uint64 from `pack_ids` bytes."""
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


@dataclass(frozen=True)
class TableKeys:
    """The keys of one table in namespace `ns`: ``ns:t:<table>:...`` and ``ns:feed:<table>``.

    Attributes:
        base: ``ns:t:<table>:``, the prefix of every key the table owns but its feed.
        row_prefix: prefix of the row keys (the id's 8 bytes follow).
        stats: hash of counters.
        index_set: sorted set of the expiry-index buckets.
        pending_set: sorted set of the pending-count generations.
        feed: the change-feed stream.
    """

    base: str
    row_prefix: bytes
    stats: str
    index_set: str
    pending_set: str
    feed: str

    @classmethod
    def of(cls, namespace: str, table: str, tag: str | None = None) -> TableKeys:
        """The keys of `table` under `namespace`.

        Args:
            namespace: prefix of every key of the deployment.
            table: the table's name.
            tag: a Redis Cluster hash tag (``{...}``) that every key of this table shard
                carries after the table name, so they all share one slot (layout version 2,
                `docs/specs/table.md`); None for the single-server layout (version 1).
        """
        base = f"{namespace}:t:{table}:" if tag is None else f"{namespace}:t:{table}:{tag}:"
        feed = f"{namespace}:feed:{table}" if tag is None else f"{namespace}:feed:{table}:{tag}"
        return cls(
            base=base,
            row_prefix=(base + "r:").encode(),
            stats=base + "stats",
            index_set=base + "xb",
            pending_set=base + "pb",
            feed=feed,
        )

    def rows(self, ids: IdArray) -> list[bytes]:
        """The row key of each id, `B` byte strings."""
        raw = pack_ids(ids)
        return [self.row_prefix + raw[i : i + 8] for i in range(0, len(raw), 8)]

    def bucket(self, bucket: int) -> str:
        """The expiry-index bucket `bucket`."""
        return f"{self.base}x:{bucket}"

    def pending(self, generation: int) -> str:
        """The pending counts of generation `generation`."""
        return f"{self.base}p:{generation}"
