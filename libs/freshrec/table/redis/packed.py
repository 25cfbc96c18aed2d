"""The packed Redis layout: rows grouped into small Redis hashes, a bucket per hash of the id.

A table with ``layout: packed`` keeps each row as one field of the hash
``ns:t:<table>:b:<bucket>`` (the field is the id's 8 bytes, the value the row encoding of
`freshrec.table.encoding`), where ``<bucket>`` is a 64-bit mix of the id modulo
`TableConfig.packed_buckets`, as 8 lowercase hex digits. Redis stores a small hash as one
listpack (a flat byte array) instead of a key per row, which saves the per-key dictionary
entry, key object and value object: about 40 % of a row's memory at dim 16 (measured by
`freshrec bench table`). The server must keep such hashes as listpacks: its
``hash-max-listpack-value`` must be at least the encoded row size, which `PackedRedisEmbeddingStore`
checks when it opens, and ``hash-max-listpack-entries`` should exceed the rows per hash
(`docs/table.md`).

Everything else (stats hash, expiry index, pending counts, change feed, transactions) is the
one-key-per-row layout's. A batch read is one pipeline of ``HGET``s (one round trip), a batch
write one Lua call inside the push's MULTI/EXEC. Rows in a hash have no TTL of their own, so the
layout supports event-time expiry (and none), not wall-clock expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from freshrec.errors import ConfigError, InvalidInput
from freshrec.table.base import Rows
from freshrec.table.ids import mix64
from freshrec.table.records import IdArray
from freshrec.table.redis.connection import RedisTransaction
from freshrec.table.redis.expiry import TOMBSTONES_LUA, RedisExpiry
from freshrec.table.redis.keys import id_bytes, split_ids
from freshrec.table.redis.store import RedisEmbeddingStore
from freshrec.table.resp import execute_packed, rows_concat
from freshrec.table.update import UpdatePlan

__all__ = ["PackedRedisEmbeddingStore", "bucket_of_ids"]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

# Rows per Lua call when exporting, so one HGETALL batch stays a few megabytes.
_EXPORT_KEYS = 256

_WRITE_LUA = b"""
for i = 1, #KEYS do redis.call('HSET', KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]) end
return #KEYS
"""

# KEYS[1] feed, KEYS[2] stats, KEYS[3..] each row's hash; ARGV[1] cutoff, ARGV[2] feed length,
# ARGV[3..] each row's id field (aligned with its hash).
_EXPIRE_EVENT_LUA = (
    """
local cutoff = tonumber(ARGV[1])
local gone = {}
for i = 3, #KEYS do
  local v = redis.call('HGET', KEYS[i], ARGV[i])
  if v and #v >= 16 and struct.unpack('<d', string.sub(v, 9, 16)) < cutoff then
    redis.call('HDEL', KEYS[i], ARGV[i])
    gone[#gone + 1] = ARGV[i]
  end
end
"""
    + TOMBSTONES_LUA
    + """
return table.concat(gone)
"""
)


def bucket_of_ids(ids: IdArray, buckets: int) -> npt.NDArray[np.uint64]:
    """The hash bucket of each id: SplitMix64's finalizer of the id, modulo `buckets`.

    Ids are mixed first because callers may hand out sequential ids, which would otherwise
    fill the buckets one after another.

    Args:
        ids: `(N,)` uint64.
        buckets: number of buckets (>= 1).

    Returns:
        `(N,)` uint64 in ``[0, buckets)``.
    """
    return mix64(ids) % np.uint64(buckets)


def _hex8(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """`(N, 8)` uint8: each value below 2**32 as 8 lowercase hex digits."""
    shifts = np.arange(28, -4, -4, dtype=np.uint64)
    nibbles = (values[:, None] >> shifts[None, :]) & np.uint64(15)
    return _HEX[nibbles.astype(np.intp)]


def _eval_head(script: bytes, args: int, keys: int) -> bytes:
    """The RESP head of ``EVAL script keys`` followed by `args` more arguments."""
    return b"*%d\r\n$4\r\nEVAL\r\n" % (3 + args) + b"".join(
        [b"$%d\r\n%s\r\n" % (len(part), part) for part in (script, b"%d" % keys)]
    )


class _PackedExpiry(RedisExpiry):
    """Event-time expiry of packed rows: the same walk, a script that reads hash fields."""

    def __init__(
        self, store: PackedRedisEmbeddingStore, bucket_keys: Callable[[IdArray], list[bytes]]
    ) -> None:
        super().__init__(store.client, store.keys, store.config, store.clock, store.feed_maxlen)
        self._bucket_keys = bucket_keys
        self._packed_script = store.client.register_script(_EXPIRE_EVENT_LUA)

    def _expire_rows(self, ids: IdArray, cutoff: float) -> IdArray:
        keys = [self.keys.feed.encode(), self.keys.stats.encode(), *self._bucket_keys(ids)]
        args: list[bytes | str | int] = [repr(cutoff), self.feed_maxlen, *split_ids(ids)]
        out = self._packed_script(keys=keys, args=args)
        return np.frombuffer(cast(bytes, out), dtype="<u8").astype(np.uint64)


class PackedRedisEmbeddingStore(RedisEmbeddingStore):
    """One table in Redis with ``layout: packed``; open it with `RedisTableBackend.store`.

    Arguments as `RedisEmbeddingStore`.

    Raises:
        ConfigError: the server would not keep a hash holding one row as a listpack
            (``hash-max-listpack-value`` below the encoded row size).
    """

    layout = "packed"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buckets = self.config.packed_buckets
        self.bucket_prefix = (self._base + "b:").encode()
        self._bucket_head = b"$%d\r\n" % (len(self.bucket_prefix) + 8) + self.bucket_prefix
        self._hget_head = b"*3\r\n$4\r\nHGET\r\n" + self._bucket_head
        self._check_server()

    def _make_expiry(self) -> RedisExpiry:
        return _PackedExpiry(self, self.bucket_keys)

    def _check_server(self) -> None:
        """Write a probe hash holding one row-sized field and ask Redis how it stored it."""
        probe = self._base + "layout-probe"
        size = self.dtype.itemsize

        def ask() -> Any:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(probe, b"\0" * 8, b"\0" * size)
            pipe.object("encoding", probe)
            pipe.delete(probe)
            return pipe.execute()[1]

        encoding = self._run("open", ask)
        found = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        if found not in ("listpack", "ziplist"):
            raise ConfigError(
                f"table {self.config.name!r} (layout packed) has {size}-byte rows, but this "
                f"Redis stores such a hash as a {found}, which costs more than one key per row: "
                f"set hash-max-listpack-value to at least {size} (CONFIG SET "
                f"hash-max-listpack-value {size}, and in redis.conf), or use layout key"
            )

    def _bucket_hex(self, ids: IdArray) -> npt.NDArray[np.uint8]:
        """`(N, 8)` each id's bucket as the hex digits ending its hash's name."""
        return _hex8(bucket_of_ids(ids, self.buckets))

    def bucket_keys(self, ids: IdArray) -> list[bytes]:
        """The hash holding each id's row, `N` byte strings."""
        hexed = self._bucket_hex(ids).tobytes()
        return [self.bucket_prefix + hexed[i : i + 8] for i in range(0, len(hexed), 8)]

    def row_keys(self, ids: IdArray) -> list[bytes]:
        """The hash holding each id's row (several rows share one)."""
        return self.bucket_keys(ids)

    def _key_args(self, ids: IdArray) -> bytes:
        """Each id's hash name as one RESP argument, for the ids in order."""
        return rows_concat(int(ids.shape[0]), [self._bucket_head, self._bucket_hex(ids), b"\r\n"])

    def _mget(self, op: str, ids: IdArray, *extra: bytes) -> list[Any]:
        """Every row of `ids` (None where absent), then the replies of `extra` commands.

        One pipeline, one round trip: an ``HGET`` per id, built in one numpy pass. It costs
        Redis less than the same HGETs through a Lua loop's ``redis.call`` (`freshrec bench
        table`: packed lookups 0.34x of raw MGET by script, 0.55x by pipeline); each row is
        read atomically, the batch is not a snapshot across rows (as the cluster layout's
        reads across shards are not).
        """
        n = int(ids.shape[0])
        if not n and not extra:
            return [[]]
        chunks = []
        if n:
            hexed = self._bucket_hex(ids)
            chunks.append(
                rows_concat(n, [self._hget_head, hexed, b"\r\n$8\r\n", id_bytes(ids), b"\r\n"])
            )
        replies = self._run(
            op, lambda: execute_packed(self.client, [*chunks, *extra], n + len(extra))
        )
        return [replies[:n], *replies[n:]]

    def _stage_rows(self, txn: RedisTransaction, plan: UpdatePlan, now: float) -> None:
        """Stage the rows: one Lua call setting every row's field in its hash."""
        n = int(plan.ids.shape[0])
        values = self._encode_plan(plan)
        head = _eval_head(_WRITE_LUA, 3 * n, n)
        value_head = b"$%d\r\n" % self.dtype.itemsize
        pairs = rows_concat(
            n, [b"$8\r\n", id_bytes(plan.ids), b"\r\n", value_head, values, b"\r\n"]
        )
        txn.stage_packed(head + self._key_args(plan.ids) + pairs, 1)

    def _row_bytes_estimate(self) -> int:
        # Field and value with their listpack headers; the hash's own key is shared.
        return 8 + self.dtype.itemsize + 6

    def export(self, batch_size: int = 4096) -> Iterator[Rows]:
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        key_len = len(self.bucket_prefix) + 8
        seen: set[bytes] = set()
        fields: list[bytes] = []
        values: list[bytes] = []
        cursor = 0
        while True:

            def scan(at: int = cursor) -> tuple[int, list[bytes]]:
                found = self.client.scan(at, match=self.bucket_prefix + b"*", count=1000)
                return cast(tuple[int, list[bytes]], found)

            cursor, keys = self._run("export", scan)
            # SCAN may return a key twice while Redis rehashes.
            fresh = [k for k in keys if len(k) == key_len and k not in seen]
            seen.update(fresh)
            for start in range(0, len(fresh), _EXPORT_KEYS):
                for mapping in self._hgetall(fresh[start : start + _EXPORT_KEYS]):
                    fields += mapping.keys()
                    values += mapping.values()
            while len(fields) >= batch_size or (cursor == 0 and fields):
                yield self._decoded(fields[:batch_size], values[:batch_size])
                fields, values = fields[batch_size:], values[batch_size:]
            if cursor == 0:
                return

    def _hgetall(self, keys: list[bytes]) -> list[dict[bytes, bytes]]:
        def read() -> list[dict[bytes, bytes]]:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return cast(list[dict[bytes, bytes]], pipe.execute())

        return self._run("export", read)

    def _decoded(self, fields: list[bytes], values: list[bytes]) -> Rows:
        _, rec = self._decode(list(values))
        ids = np.frombuffer(b"".join(fields), dtype="<u8").astype(np.uint64)
        return self._rows(ids, rec)
