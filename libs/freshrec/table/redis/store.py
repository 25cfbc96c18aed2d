"""The Redis embedding store: one key per row, every operation batched and pipelined.

Key layout, row encoding, change feed and expiry mechanics are specified in
`docs/specs/table.md` (format version 1). In short, for namespace `ns` and table `t`:

- ``ns:t:t:r:<id>``  one row; `<id>` is the id's 8 bytes, little-endian. Value: the row
  encoding of `freshrec.table.encoding`. Wall-clock tables set a PXAT deadline on every write.
- ``ns:t:t:stats``  hash of counters: rows, created_total, filtered_total, expired_total, pgen.
- ``ns:t:t:x:<bucket>`` + ``ns:t:t:xb``  expiry index: packed ids appended per time bucket,
  and a sorted set of the buckets that exist.
- ``ns:t:t:p:<gen>`` + ``ns:t:t:pb``  pending counts of the counting filter.
- ``ns:feed:t``  the change feed, a stream of (op, ids) entries.
- ``ns:meta:<key>``  metadata hashes and blobs staged through `Transaction`.

A lookup is one MGET and one vectorised decode; a push is one MULTI/EXEC holding an MSET (or one
SET PXAT per row on wall-clock tables), the index appends, the pending counts, one XADD and the
counter increments. The hot commands are encoded as one numpy byte matrix (`resp.py`) rather
than argument by argument. Driver errors surface as `StoreUnavailable`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import redis

from freshrec.errors import ConfigError, InvalidInput, StoreUnavailable
from freshrec.table.admission import keeps_counts
from freshrec.table.base import (
    Change,
    ChangeOp,
    EmbeddingStore,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableStats,
    Transaction,
)
from freshrec.table.config import TableConfig
from freshrec.table.encoding import decode_rows, encode_records, row_dtype
from freshrec.table.expiry import bucket_of, pending_generation, wall_deadline
from freshrec.table.optimizers import make_optimizer
from freshrec.table.redis.connection import TABLE_OP_SECONDS, RedisConnection, RedisTransaction
from freshrec.table.redis.expiry import RedisExpiry
from freshrec.table.redis.keys import TableKeys, id_bytes, pack_ids, split_ids, unpack_ids
from freshrec.table.resp import execute_packed, pack_command, rows_concat
from freshrec.table.update import COUNT_MAX, UpdatePlan, check_ids, fresh_rows

__all__ = ["KEY_OVERHEAD_BYTES", "RedisEmbeddingStore", "RedisPulled"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Redis's own cost per key on a 64-bit build (dict entry, key and value headers, allocator
# rounding), used to estimate `TableStats.bytes`; the table benchmark measures the real figure.
KEY_OVERHEAD_BYTES = 64
_PENDING_BYTES = 8 + 4 + KEY_OVERHEAD_BYTES // 2


@dataclass(frozen=True)
class RedisPulled(Pulled):
    """`Pulled` plus what the Redis store needs to index the push cheaply.

    Attributes:
        wall_time: `(U,)` float64 wall time of each row's last write (0 where no row).
        generation: the pending-count generation the counts were read from.
    """

    wall_time: npt.NDArray[np.float64]
    generation: int


class RedisEmbeddingStore(EmbeddingStore):
    """One table in Redis; open it with `RedisTableBackend.store`.

    Args:
        backend: the Redis server and namespace.
        config: the table.
        feed_maxlen: approximate number of change-feed entries kept (MAXLEN ~).
        clock: wall clock (unix seconds) for wall time and TTL deadlines.
        keys: the table's key names; None for the single-server layout. A Redis Cluster
            table passes one shard's hash-tagged keys (`TableKeys.of` with a tag).
    """

    layout = "key"

    def __init__(
        self,
        backend: RedisConnection,
        config: TableConfig,
        *,
        feed_maxlen: int = 100_000,
        clock: Callable[[], float] = time.time,
        keys: TableKeys | None = None,
    ) -> None:
        if feed_maxlen < 1:
            raise ConfigError("feed_maxlen must be >= 1")
        if config.layout != self.layout:
            msg = f"{type(self).__name__} stores layout {self.layout!r}, not {config.layout!r}"
            raise ConfigError(f"table {config.name!r}: {msg} (only a single server packs rows)")
        self.backend = backend
        self.client = backend.client
        self.namespace = backend.namespace
        self.config = config
        self.clock = clock
        self.feed_maxlen = feed_maxlen
        self.optimizer = make_optimizer(config.optimizer)
        self.width = self.optimizer.state_width(config.dim)
        self.dtype = row_dtype(config.dim, self.width)
        self.keys = keys if keys is not None else TableKeys.of(self.namespace, config.name)
        self._base = self.keys.base
        self._row_prefix = self.keys.row_prefix
        self._key_head = b"$%d\r\n" % (len(self._row_prefix) + 8) + self._row_prefix
        self.stats_key = self.keys.stats
        self.index_set_key = self.keys.index_set
        self.pending_set_key = self.keys.pending_set
        self.feed_key = self.keys.feed
        self._generation = 0
        self._expiry = self._make_expiry()

    def _make_expiry(self) -> RedisExpiry:
        return RedisExpiry(self.client, self.keys, self.config, self.clock, self.feed_maxlen)

    # ---- keys and plumbing -------------------------------------------------------------

    def bound_to(self, client: redis.Redis) -> RedisEmbeddingStore:
        """This store speaking through `client` (e.g. one pinned, WATCHing connection)."""
        view = copy.copy(self)
        view.client = client
        return view

    def watch_pending(self, ids: IdArray) -> None:
        """WATCH the pending counts a `pull` of `ids` reads (counting filter), if any."""
        if not ids.shape[0] or not keeps_counts(self.config.admission):
            return
        generation = self._clock_generation()
        if generation is None:
            raw = self._run("pull", lambda: self.client.hget(self.stats_key, "pgen"))
            generation = int(cast(bytes, raw)) if raw is not None else 0
        keys = [self._pending_key(generation), self._pending_key(generation - 1)]
        self._run("pull", lambda: self.client.execute_command("WATCH", *keys))  # type: ignore[no-untyped-call]

    def row_keys(self, ids: IdArray) -> list[bytes]:
        """The row key of each id, `B` byte strings."""
        return self.keys.rows(ids)

    def _mget_command(self, ids: IdArray) -> bytes:
        """``MGET`` of the row keys of `ids` (non-empty), built in one numpy pass."""
        n = int(ids.shape[0])
        return b"*%d\r\n$4\r\nMGET\r\n" % (n + 1) + rows_concat(
            n, [self._key_head, id_bytes(ids), b"\r\n"]
        )

    def _mget(self, op: str, ids: IdArray, *extra: bytes) -> list[Any]:
        """MGET the rows of `ids`, plus `extra` packed commands, in one round trip."""
        if not ids.shape[0] and not extra:
            return [[]]
        chunks = [self._mget_command(ids)] if ids.shape[0] else []
        replies = self._run(
            op, lambda: execute_packed(self.client, [*chunks, *extra], len(chunks) + len(extra))
        )
        return replies if ids.shape[0] else [[], *replies]

    def _bucket_key(self, bucket: int) -> str:
        return self.keys.bucket(bucket)

    def _pending_key(self, generation: int) -> str:
        return self.keys.pending(generation)

    def _run(self, op: str, fn: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return fn()
        except redis.RedisError as exc:
            raise StoreUnavailable(
                f"Redis failed during {op} on table {self.config.name!r}: {exc}"
            ) from exc
        finally:
            TABLE_OP_SECONDS.labels(self.config.name, op).observe(time.perf_counter() - started)

    def _own(self, txn: Transaction) -> RedisTransaction:
        if not isinstance(txn, RedisTransaction) or (
            txn.client is not self.client
            and txn.client.connection_pool is not self.client.connection_pool
        ):
            raise TypeError(
                "RedisEmbeddingStore needs a transaction from a store on the same Redis client"
            )
        return txn

    def _commit(self, op: str, txn: Transaction) -> None:
        self._run(op, txn.commit)

    def _decode(self, values: list[bytes | None]) -> tuple[npt.NDArray[np.bool_], np.ndarray]:
        return decode_rows(self.dtype, values)

    # ---- reads -------------------------------------------------------------------------

    def lookup(self, ids: IdArray) -> LookupResult:
        ids = check_ids(ids)
        exists, rec = self._decode(self._mget("lookup", ids)[0])
        if rec.shape[0] == ids.shape[0]:
            return LookupResult(vectors=np.array(rec["vector"], dtype=np.float32), exists=exists)
        vectors = np.empty((ids.shape[0], self.config.dim), dtype=np.float32)
        vectors[exists] = rec["vector"]
        if not exists.all():
            missing = ~exists
            vectors[missing], _ = fresh_rows(self.config, self.optimizer, ids[missing])
        return LookupResult(vectors=vectors, exists=exists)

    def read_rows(self, ids: IdArray) -> Rows:
        ids = check_ids(ids)
        exists, rec = self._decode(self._mget("read_rows", ids)[0])
        return self._rows(ids[exists], rec)

    def _rows(self, ids: IdArray, rec: np.ndarray) -> Rows:
        return Rows(
            ids=ids.copy(),
            vectors=np.array(rec["vector"], dtype=np.float32).reshape(len(rec), self.config.dim),
            state=np.array(rec["state"], dtype=np.float32).reshape(len(rec), self.width),
            event_time=np.array(rec["event_time"], dtype=np.float64),
            wall_time=np.array(rec["wall_time"], dtype=np.float64),
            count=np.array(rec["count"], dtype=np.int64),
        )

    def _clock_generation(self) -> int | None:
        """The pending generation when it follows the wall clock or is fixed, else None."""
        expiry = self.config.expiry
        if expiry is None:
            return 0
        if expiry.clock == "wall":
            return pending_generation(self.clock(), expiry)
        return None

    def pull(self, ids: IdArray) -> RedisPulled:
        ids = check_ids(ids, unique=True)
        n = ids.shape[0]
        counting = keeps_counts(self.config.admission)
        generation = self._clock_generation()
        extra = []
        if counting and generation is None and n:
            extra.append(pack_command(["HGET", self.stats_key, "pgen"]))
        replies = self._mget("pull", ids, *extra)
        exists, rec = self._decode(replies[0])
        if counting and generation is None:
            if n:
                self._generation = int(replies[1]) if replies[1] is not None else 0
            generation = self._generation
        vectors = np.empty((n, self.config.dim), dtype=np.float32)
        state = np.empty((n, self.width), dtype=np.float32)
        count = np.zeros(n, dtype=np.int64)
        event_time = np.zeros(n, dtype=np.float64)
        wall_time = np.zeros(n, dtype=np.float64)
        vectors[exists] = rec["vector"]
        state[exists] = rec["state"].reshape(len(rec), self.width)
        count[exists] = rec["count"]
        event_time[exists] = rec["event_time"]
        wall_time[exists] = rec["wall_time"]
        missing = ~exists
        gen = generation if generation is not None else 0
        if missing.any():
            vectors[missing], state[missing] = fresh_rows(self.config, self.optimizer, ids[missing])
            if counting:
                count[missing] = self._pending_counts(ids[missing], gen)
        return RedisPulled(
            ids=ids,
            vectors=vectors,
            state=state,
            exists=exists,
            count=count,
            event_time=event_time,
            wall_time=wall_time,
            generation=gen,
        )

    def _pending_counts(self, ids: IdArray, generation: int) -> npt.NDArray[np.int64]:
        fields = split_ids(ids)

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self._pending_key(generation), fields)
            pipe.hmget(self._pending_key(generation - 1), fields)
            return pipe.execute()

        current, previous = self._run("pull", read)
        return np.array(
            [
                int(c) if c is not None else (int(p) if p is not None else 0)
                for c, p in zip(current, previous, strict=True)
            ],
            dtype=np.int64,
        )

    # ---- writes ------------------------------------------------------------------------

    def _stage_push(
        self, txn: Transaction, plan: UpdatePlan, pulled: Pulled, batch_time: float, now: float
    ) -> None:
        own = self._own(txn)
        created = int(plan.created.sum())
        if plan.ids.size:
            self._stage_rows(own, plan, now)
            self._stage_index(own, plan, pulled, now)
            self._stage_feed(own, ChangeOp.UPSERT, plan.ids)
        if keeps_counts(self.config.admission):
            self._stage_pending(own, plan, pulled, batch_time, now)
        if created:
            own.stage("HINCRBY", self.stats_key, "rows", created)
            own.stage("HINCRBY", self.stats_key, "created_total", created)
        if plan.filtered:
            own.stage("HINCRBY", self.stats_key, "filtered_total", plan.filtered)

    def _stage_rows(self, txn: RedisTransaction, plan: UpdatePlan, now: float) -> None:
        """Stage the rows: one MSET, or one SET PXAT per row on wall-clock tables."""
        n = int(plan.ids.shape[0])
        values = self._encode_plan(plan)
        value_head = b"\r\n$%d\r\n" % self.dtype.itemsize
        expiry = self.config.expiry
        if expiry is not None and expiry.clock == "wall":
            # Every row of one push is written at `now`, so all share one deadline.
            deadline = wall_deadline(np.array([now]), expiry)[0]
            pxat = b"%d" % math.ceil(deadline * 1000.0)
            tail = b"\r\n$4\r\nPXAT\r\n$%d\r\n%s\r\n" % (len(pxat), pxat)
            head = b"*5\r\n$3\r\nSET\r\n" + self._key_head
            txn.stage_packed(
                rows_concat(n, [head, id_bytes(plan.ids), value_head, values, tail]), n
            )
            return
        command = b"*%d\r\n$4\r\nMSET\r\n" % (2 * n + 1) + rows_concat(
            n, [self._key_head, id_bytes(plan.ids), value_head, values, b"\r\n"]
        )
        txn.stage_packed(command, 1)

    def _encode_plan(self, plan: UpdatePlan) -> npt.NDArray[np.uint8]:
        """`(N, row_bytes)` uint8: the encoded rows of `plan`."""
        return encode_records(
            self.dtype,
            plan.vectors,
            plan.state,
            event_time=plan.event_time,
            wall_time=plan.wall_time,
            count=plan.count,
        )

    def _stage_feed(self, txn: RedisTransaction, op: ChangeOp, ids: IdArray) -> None:
        txn.stage(
            "XADD", self.feed_key, "MAXLEN", "~", self.feed_maxlen, "*",
            "op", op.value, "ids", pack_ids(ids),
        )  # fmt: skip

    def _stage_index(
        self, txn: RedisTransaction, plan: UpdatePlan, pulled: Pulled, now: float
    ) -> None:
        """Append ids to the expiry bucket of their new time, unless already indexed there."""
        expiry = self.config.expiry
        if expiry is None:
            return
        if expiry.clock == "event":
            new = bucket_of(plan.event_time, expiry)
            old = bucket_of(plan.previous_event_time, expiry)
            fresh = plan.created | (new != old)
        else:
            new = bucket_of(np.full(plan.ids.shape[0], now), expiry)
            fresh = np.ones(plan.ids.shape[0], dtype=np.bool_)
            if isinstance(pulled, RedisPulled):
                written = np.isin(pulled.ids, plan.ids)
                old = bucket_of(pulled.wall_time[written], expiry)
                fresh = plan.created | (new != old)
        if not fresh.any():
            return
        ids = plan.ids[fresh]
        buckets = new[fresh]
        members: list[int | str] = []
        for bucket in np.unique(buckets).tolist():
            txn.stage("APPEND", self._bucket_key(bucket), pack_ids(ids[buckets == bucket]))
            members += [bucket, str(bucket)]
        txn.stage("ZADD", self.index_set_key, *members)

    def _stage_pending(
        self,
        txn: RedisTransaction,
        plan: UpdatePlan,
        pulled: Pulled,
        batch_time: float,
        now: float,
    ) -> None:
        expiry = self.config.expiry
        seen = pulled.generation if isinstance(pulled, RedisPulled) else self._generation
        if expiry is None:
            gen = 0
        elif expiry.clock == "event":
            gen = max(seen, pending_generation(batch_time, expiry))
            if gen > seen:
                txn.stage("HSET", self.stats_key, "pgen", gen)
                txn.stage("ZADD", self.pending_set_key, gen, str(gen))
                self._generation = gen
        else:
            gen = pending_generation(now, expiry)
        admitted = plan.ids[plan.created]
        if admitted.size:
            fields = split_ids(admitted)
            txn.stage("HDEL", self._pending_key(gen), *fields)
            txn.stage("HDEL", self._pending_key(gen - 1), *fields)
        if plan.pending_ids.size:
            key = self._pending_key(gen)
            pairs = zip(split_ids(plan.pending_ids), plan.pending_counts.tolist(), strict=True)
            txn.stage("HSET", key, *(x for pair in pairs for x in pair))
            if expiry is None or expiry.clock == "event":
                txn.stage("ZADD", self.pending_set_key, gen, str(gen))
            else:
                # Two generations on, readers no longer consult it.
                at = math.ceil((gen + 2) * expiry.expire_after_s * 1000.0) + 1000
                txn.stage("PEXPIREAT", key, at)

    def import_rows(self, rows: Rows) -> None:
        ids = check_ids(rows.ids, unique=True)
        n = len(ids)
        if rows.vectors.shape != (n, self.config.dim) or rows.state.shape != (n, self.width):
            raise InvalidInput(
                f"rows must have ({n}, {self.config.dim}) vectors and ({n}, {self.width}) state"
            )
        chunk = 4096
        for start in range(0, n, chunk):
            self._import_chunk(replace(rows, ids=ids).take(slice(start, start + chunk)))

    def _import_chunk(self, rows: Rows) -> None:
        now = self.clock()
        present, _ = self._decode(self._mget("import", rows.ids)[0])
        created = int((~present).sum())
        # A restore is a write: wall-clock expiry starts afresh.
        wall = np.full(len(rows), now, dtype=np.float64)
        plan = UpdatePlan(
            ids=rows.ids,
            vectors=rows.vectors,
            state=rows.state,
            event_time=rows.event_time,
            wall_time=wall,
            count=np.minimum(rows.count, COUNT_MAX),
            created=np.ones(len(rows), dtype=np.bool_),
            previous_event_time=np.zeros(len(rows)),
            pending_ids=np.zeros(0, dtype=np.uint64),
            pending_counts=np.zeros(0, dtype=np.int64),
            filtered=0,
        )
        txn = RedisTransaction(self.client, self.namespace)
        self._stage_rows(txn, plan, now)
        self._stage_index(txn, plan, _NO_PULL, now)
        self._stage_feed(txn, ChangeOp.UPSERT, rows.ids)
        if created:
            txn.stage("HINCRBY", self.stats_key, "rows", created)
            txn.stage("HINCRBY", self.stats_key, "created_total", created)
        self._run("import", txn.commit)

    # ---- expiry ------------------------------------------------------------------------

    def expire(self, watermark: float) -> IdArray:
        expiry = self.config.expiry
        if expiry is None:
            return np.zeros(0, dtype=np.uint64)
        if expiry.clock == "event":
            removed = self._run("expire", lambda: self._expiry.event_clock(watermark))
        else:
            removed = self._run("expire", self._expiry.wall_clock)
        if removed.size:
            logger.info("table %s: expired %d rows", self.config.name, removed.size)
        return removed

    # ---- metadata, feed, bookkeeping ---------------------------------------------------

    def stats(self) -> TableStats:
        def read() -> tuple[dict[bytes, bytes], list[int], int]:
            counters = cast(dict[bytes, bytes], self.client.hgetall(self.stats_key))
            buckets = cast(list[bytes], self.client.zrange(self.index_set_key, 0, -1))
            gens = cast(list[bytes], self.client.zrange(self.pending_set_key, 0, -1))
            pipe = self.client.pipeline(transaction=False)
            for b in buckets:
                pipe.strlen(self._bucket_key(int(b)))
            sizes = cast(list[int], pipe.execute()) if buckets else []
            pipe = self.client.pipeline(transaction=False)
            for g in gens:
                pipe.hlen(self._pending_key(int(g)))
            pending = sum(cast(list[int], pipe.execute())) if gens else 0
            return counters, sizes, pending

        counters, sizes, pending = self._run("stats", read)

        def counter(name: str) -> int:
            return int(counters.get(name.encode(), b"0"))

        rows = max(counter("rows"), 0)
        return TableStats(
            rows=rows,
            bytes=rows * self._row_bytes_estimate() + sum(sizes) + pending * _PENDING_BYTES,
            created_total=counter("created_total"),
            filtered_total=counter("filtered_total"),
            expired_total=counter("expired_total"),
        )

    def _row_bytes_estimate(self) -> int:
        """Memory one row takes in Redis, for `stats` (the table benchmark measures it)."""
        return len(self._row_prefix) + 8 + self.dtype.itemsize + KEY_OVERHEAD_BYTES

    def export(self, batch_size: int = 4096) -> Iterator[Rows]:
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        key_len = len(self._row_prefix) + 8
        pattern = self._row_prefix + b"*"
        seen: set[bytes] = set()
        pending: list[bytes] = []

        def flush(keys: list[bytes]) -> Rows:
            values = self._run("export", lambda: self.client.mget(keys))
            exists, rec = self._decode(cast(list[bytes | None], values))
            ids = np.frombuffer(b"".join(k[-8:] for k in keys), dtype="<u8").astype(np.uint64)
            return self._rows(ids[exists], rec)

        cursor = 0
        while True:

            def scan(at: int = cursor) -> tuple[int, list[bytes]]:
                return cast(
                    tuple[int, list[bytes]], self.client.scan(at, match=pattern, count=1000)
                )

            cursor, keys = self._run("export", scan)
            for key in keys:
                # SCAN may return a key twice while Redis rehashes.
                if len(key) == key_len and key not in seen:
                    seen.add(key)
                    pending.append(key)
            while len(pending) >= batch_size:
                rows = flush(pending[:batch_size])
                pending = pending[batch_size:]
                if len(rows):
                    yield rows
            if cursor == 0:
                break
        if pending:
            rows = flush(pending)
            if len(rows):
                yield rows

    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> list[Change]:
        def read() -> Any:
            block = block_ms if block_ms else None
            return self.client.xread({self.feed_key: cursor}, count=count, block=block)

        try:
            reply = self._run("changes", read)
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, redis.ResponseError):
                raise InvalidInput(f"invalid change-feed cursor {cursor!r}") from exc
            raise
        out: list[Change] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append(
                    Change(
                        cursor=entry_id.decode(),
                        op=ChangeOp(fields[b"op"].decode()),
                        ids=unpack_ids(fields[b"ids"]),
                    )
                )
        return out

    def clear(self) -> None:
        def wipe() -> None:
            pattern = f"{self._base}*".encode()
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pattern, count=10_000):
                batch.append(key)
                if len(batch) >= 10_000:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)
            self.client.unlink(self.feed_key)

        self._run("clear", wipe)
        self._generation = 0


_NO_PULL = Pulled(
    ids=np.zeros(0, dtype=np.uint64),
    vectors=np.zeros((0, 0), dtype=np.float32),
    state=np.zeros((0, 0), dtype=np.float32),
    exists=np.zeros(0, dtype=np.bool_),
    count=np.zeros(0, dtype=np.int64),
    event_time=np.zeros(0, dtype=np.float64),
)
