"""The Redis Cluster embedding store: a table split into hash-tagged shards by id.

Layout version 2 of `docs/specs/table.md`. Shard `s` of table `t` is a complete version-1
table whose every key carries the shard's hash tag `{s<s>.<k>}` after the table name
(``ns:t:t:{s3.17}:r:<id>``, ``ns:t:t:{s3.17}:stats``, ``ns:feed:t:{s3.17}``, ...), so one shard
lives in one slot and keeps every single-server mechanism — MGET lookups, MULTI/EXEC pushes,
the expiry scripts, the pending counts — unchanged. An id's shard is a 64-bit mix of the id
modulo the shard count (`router.shard_of`).

Reads fan out: a lookup sends one MGET per shard, all shards of one master on one connection,
every master's commands sent before any reply is read — one round trip per master, in
parallel. Writes go through `RedisClusterTableBackend.apply_shard`, which applies an
optimizer step to the rows *as they are in Redis at commit time*, under WATCH, retrying when
another trainer wrote them in between: no update is lost to a concurrent writer.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import redis

from freshrec.errors import InvalidInput, StoreUnavailable
from freshrec.table.admission import keeps_counts
from freshrec.table.base import (
    Change,
    EmbeddingStore,
    FloatArray,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableBackend,
    TableStats,
    Transaction,
    UpdateResult,
)
from freshrec.table.config import TableConfig
from freshrec.table.optimizers import make_optimizer
from freshrec.table.redis.backend import RedisTableBackend
from freshrec.table.redis.keys import TableKeys
from freshrec.table.redis.store import RedisEmbeddingStore, RedisPulled
from freshrec.table.redis_cluster.router import SlotRouter
from freshrec.table.resp import pack_command
from freshrec.table.update import UpdatePlan, check_ids, fresh_rows, plan_update

__all__ = [
    "ClusterCursor",
    "PendingReader",
    "RedisClusterEmbeddingStore",
    "ShardUpdate",
    "ShardedBackend",
    "pull_commands",
    "pulled_from",
    "reads_generation",
]


@dataclass(frozen=True, slots=True)
class ShardUpdate:
    """One table's gradient step for the ids of one shard, applied at commit.

    Attributes:
        store: the table.
        shard: the shard.
        ids: `(U,)` uint64 unique ids of the shard.
        grads: `(U, D)` float32 summed gradients.
        occurrences: `(U,)` int64 occurrences in the batch.
        event_time: `(U,)` float64 latest event time per id.
    """

    store: RedisClusterEmbeddingStore
    shard: int
    ids: IdArray
    grads: FloatArray
    occurrences: npt.NDArray[np.int64]
    event_time: npt.NDArray[np.float64]

    def plan(self, pulled: Pulled, now: float) -> UpdatePlan:
        """The optimizer step on `pulled` (the rows as read under WATCH)."""
        return plan_update(
            self.store.config,
            self.store.optimizer,
            pulled,
            grads=self.grads,
            occurrences=self.occurrences,
            event_time=self.event_time,
            now=now,
        )


PendingReader = Callable[[IdArray, int], npt.NDArray[np.int64]]


def reads_generation(part: RedisEmbeddingStore) -> bool:
    """Whether a pull of `part` reads the counting filter's pending generation from its
    stats hash (a counting filter whose generation the clock does not give)."""
    return keeps_counts(part.config.admission) and part._clock_generation() is None


def pull_commands(part: RedisEmbeddingStore, ids: IdArray) -> list[bytes]:
    """The commands reading what a pull of unique, non-empty `ids` needs (`pulled_from`)."""
    commands = [part._mget_command(ids)]
    if reads_generation(part):
        commands.append(pack_command(["HGET", part.stats_key, "pgen"]))
    return commands


def pulled_from(
    part: RedisEmbeddingStore, ids: IdArray, replies: Sequence[Any], read_pending: PendingReader
) -> RedisPulled:
    """The pulled rows of `ids` from the replies to `pull_commands` (as `part.pull` gives).

    Args:
        part: the shard's store.
        ids: `(U,)` unique ids of the shard.
        replies: the replies to `pull_commands(part, ids)`, in order.
        read_pending: reads the pending counts `(M,)` of `M` ids without a row in a generation
            (asked only on counting-filter tables).
    """
    exists, rec = part._decode(replies[0])
    generation = part._clock_generation()
    if generation is None:
        generation = int(replies[1]) if len(replies) > 1 and replies[1] is not None else 0
    found = part._rows(ids[exists], rec)
    n, missing = ids.shape[0], ~exists
    vectors = np.empty((n, part.config.dim), dtype=np.float32)
    state = np.empty((n, part.width), dtype=np.float32)
    vectors[exists], state[exists] = found.vectors, found.state
    columns = {
        name: np.zeros(n, dtype=getattr(found, name).dtype)
        for name in ("count", "event_time", "wall_time")
    }
    for name, column in columns.items():
        column[exists] = getattr(found, name)
    if missing.any():
        vectors[missing], state[missing] = fresh_rows(part.config, part.optimizer, ids[missing])
        if keeps_counts(part.config.admission):
            columns["count"][missing] = read_pending(ids[missing], generation)
    return RedisPulled(
        ids=ids,
        vectors=vectors,
        state=state,
        exists=exists,
        count=columns["count"],
        event_time=columns["event_time"],
        wall_time=columns["wall_time"],
        generation=generation,
    )


class ShardedBackend(TableBackend):
    """What a sharded store needs of its backend (`RedisClusterTableBackend` implements it).

    Attributes:
        router: the cluster's slot router.
        shards: shards per table.
    """

    router: SlotRouter
    shards: int

    @abc.abstractmethod
    def tag(self, shard: int) -> str:
        """The hash tag of shard `shard`."""

    @abc.abstractmethod
    def shard_of(self, ids: IdArray) -> np.ndarray:
        """`(B,)` shard of each id."""

    @abc.abstractmethod
    def shard_connection(self, shard: int) -> RedisTableBackend:
        """The single-slot connection of shard `shard`."""

    @abc.abstractmethod
    def fan_out(self, commands: Mapping[int, Sequence[bytes]]) -> dict[int, list[Any]]:
        """Each shard's packed commands sent to its master; shard → replies."""

    @abc.abstractmethod
    def apply_shards(
        self,
        by_shard: Mapping[int, Sequence[ShardUpdate]],
        *,
        group: str | None,
        batch: str | None,
    ) -> dict[int, list[UpdateResult]]:
        """Apply each shard's steps to its rows as they are (see the backend); shard → results."""

    @abc.abstractmethod
    def stage_updates(self, txn: Transaction, updates: Sequence[ShardUpdate]) -> None:
        """Add gradient steps to `txn` (a transaction of this backend; `TypeError` else)."""


class ClusterCursor:
    """A change-feed position over every shard: one stream entry id per shard.

    Written ``c2:<id of shard 0>,<id of shard 1>,...`` (``0`` where a shard has not been read);
    the single-server cursor "0" means every shard from its start.
    """

    PREFIX = "c2:"

    def __init__(self, positions: list[str]) -> None:
        self.positions = positions

    @classmethod
    def parse(cls, cursor: str, shards: int) -> ClusterCursor:
        """The cursor `cursor` of a table with `shards` shards.

        Raises:
            InvalidInput: not a cursor of this table.
        """
        if cursor in ("0", "0-0", ""):
            return cls(["0"] * shards)
        if not cursor.startswith(cls.PREFIX):
            raise InvalidInput(f"invalid change-feed cursor {cursor!r}")
        positions = cursor[len(cls.PREFIX) :].split(",")
        if len(positions) != shards:
            raise InvalidInput(
                f"change-feed cursor {cursor!r} has {len(positions)} shards, the table {shards}"
            )
        return cls(positions)

    def __str__(self) -> str:
        return self.PREFIX + ",".join(self.positions)


class RedisClusterEmbeddingStore(EmbeddingStore):
    """One table on a Redis Cluster; open it with `RedisClusterTableBackend.store`.

    Args:
        backend: the cluster and namespace.
        config: the table.
        feed_maxlen: approximate change-feed entries kept per shard (MAXLEN ~).
        clock: wall clock (unix seconds) for wall time and TTL deadlines.
    """

    backend: ShardedBackend

    def __init__(
        self,
        backend: ShardedBackend,
        config: TableConfig,
        *,
        feed_maxlen: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.config = config
        self.clock = clock
        self.optimizer = make_optimizer(config.optimizer)
        self.shard_count = backend.shards
        self.parts = [
            RedisEmbeddingStore(
                backend.shard_connection(shard),
                config,
                feed_maxlen=feed_maxlen,
                clock=clock,
                keys=TableKeys.of(backend.namespace, config.name, backend.tag(shard)),
            )
            for shard in range(self.shard_count)
        ]

    # ---- routing -----------------------------------------------------------------------

    def _split(self, ids: IdArray) -> list[tuple[int, npt.NDArray[np.intp]]]:
        """(shard, positions in `ids`) for every shard holding some of `ids`."""
        shard = self.backend.shard_of(ids)
        order = np.argsort(shard, kind="stable")
        bounds = np.searchsorted(shard[order], np.arange(self.shard_count + 1))
        return [
            (s, order[bounds[s] : bounds[s + 1]])
            for s in range(self.shard_count)
            if bounds[s + 1] > bounds[s]
        ]

    def _run(self, op: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except StoreUnavailable:
            self.backend.router.invalidate()
            raise
        except redis.RedisError as exc:
            self.backend.router.invalidate()
            raise StoreUnavailable(
                f"Redis Cluster failed during {op} on table {self.config.name!r}: {exc}"
            ) from exc

    def _mget_parts(self, op: str, ids: IdArray) -> list[tuple[int, npt.NDArray[np.intp], Any]]:
        """(shard, positions, MGET reply) per shard, one round trip per master in parallel."""
        parts = self._split(ids)
        commands = {s: [self.parts[s]._mget_command(ids[pos])] for s, pos in parts}
        replies = self._run(op, lambda: self.backend.fan_out(commands))
        return [(s, pos, replies[s][0]) for s, pos in parts]

    # ---- reads -------------------------------------------------------------------------

    def lookup(self, ids: IdArray) -> LookupResult:
        ids = check_ids(ids)
        vectors = np.empty((ids.shape[0], self.config.dim), dtype=np.float32)
        exists = np.zeros(ids.shape[0], dtype=np.bool_)
        for s, pos, values in self._mget_parts("lookup", ids):
            found, rec = self.parts[s]._decode(values)
            exists[pos[found]] = True
            vectors[pos[found]] = rec["vector"]
        if not exists.all():
            missing = ~exists
            vectors[missing], _ = fresh_rows(self.config, self.optimizer, ids[missing])
        return LookupResult(vectors=vectors, exists=exists)

    def read_rows(self, ids: IdArray) -> Rows:
        ids = check_ids(ids)
        keep = np.zeros(ids.shape[0], dtype=np.bool_)
        found_rows: list[tuple[npt.NDArray[np.intp], Rows]] = []
        for s, pos, values in self._mget_parts("read_rows", ids):
            found, rec = self.parts[s]._decode(values)
            keep[pos[found]] = True
            found_rows.append((pos[found], self.parts[s]._rows(ids[pos[found]], rec)))
        return self._in_order(ids, keep, found_rows)

    def _in_order(
        self,
        ids: IdArray,
        keep: npt.NDArray[np.bool_],
        found: list[tuple[npt.NDArray[np.intp], Rows]],
    ) -> Rows:
        """The found rows in the order of `ids` (missing ids skipped)."""
        width = self.optimizer.state_width(self.config.dim)
        if not found:
            return Rows.concat([], self.config.dim, width)
        rows = Rows.concat([r for _, r in found], self.config.dim, width)
        positions = np.concatenate([p for p, _ in found])
        return rows.take(np.argsort(positions, kind="stable"))

    def pull(self, ids: IdArray) -> Pulled:
        ids = check_ids(ids, unique=True)
        n = ids.shape[0]
        width = self.optimizer.state_width(self.config.dim)
        vectors = np.empty((n, self.config.dim), dtype=np.float32)
        state = np.empty((n, width), dtype=np.float32)
        exists = np.zeros(n, dtype=np.bool_)
        count = np.zeros(n, dtype=np.int64)
        event_time = np.zeros(n, dtype=np.float64)
        parts = self._split(ids)
        commands = {s: pull_commands(self.parts[s], ids[pos]) for s, pos in parts}
        replies = self._run("pull", lambda: self.backend.fan_out(commands))
        for s, pos in parts:
            part = self.parts[s]
            got = pulled_from(part, ids[pos], replies[s], partial(self._pending, part))
            vectors[pos], state[pos], exists[pos] = got.vectors, got.state, got.exists
            count[pos], event_time[pos] = got.count, got.event_time
        return Pulled(
            ids=ids,
            vectors=vectors,
            state=state,
            exists=exists,
            count=count,
            event_time=event_time,
        )

    def _pending(
        self, part: RedisEmbeddingStore, ids: IdArray, generation: int
    ) -> npt.NDArray[np.int64]:
        counts = self._run("pull", partial(part._pending_counts, ids, generation))
        return cast(npt.NDArray[np.int64], counts)

    # ---- writes ------------------------------------------------------------------------

    def updates(
        self,
        ids: IdArray,
        grads: FloatArray,
        occurrences: npt.NDArray[np.int64],
        event_time: npt.NDArray[np.float64],
    ) -> list[ShardUpdate]:
        """The gradient step of unique `ids` split by shard (see `ShardUpdate`)."""
        grads = np.asarray(grads, dtype=np.float32)
        occurrences = np.asarray(occurrences, dtype=np.int64).reshape(-1)
        event_time = np.asarray(event_time, dtype=np.float64).reshape(-1)
        n = int(ids.shape[0])
        if grads.shape != (n, self.config.dim) or occurrences.shape != (n,):
            raise InvalidInput(
                f"push needs ({n}, {self.config.dim}) gradients and ({n},) occurrences"
            )
        return [
            ShardUpdate(self, s, ids[pos], grads[pos], occurrences[pos], event_time[pos])
            for s, pos in self._split(ids)
        ]

    def push(
        self,
        pulled: Pulled,
        grads: FloatArray,
        occurrences: npt.NDArray[np.int64],
        event_time: npt.NDArray[np.float64],
        txn: Transaction | None = None,
    ) -> UpdateResult:
        """Stage the gradient step; it is applied to the rows as they are at commit.

        With `txn` (a `ClusterTransaction`), the step joins the transaction's commit record
        and the result is what the step does to `pulled` — the rows the caller trained on; the
        rows applied at commit may have moved on by another trainer's steps since. Without it,
        the step is applied right away and the result is exact.
        """
        updates = self.updates(pulled.ids, grads, occurrences, event_time)
        if txn is None:
            results = self.backend.apply_shards(
                {u.shard: [u] for u in updates}, group=None, batch=None
            )
            return _merge([r[0] for r in results.values() if r])
        self.backend.stage_updates(txn, updates)
        plan = plan_update(
            self.config,
            self.optimizer,
            pulled,
            grads=grads,
            occurrences=occurrences,
            event_time=event_time,
            now=self.clock(),
        )
        return UpdateResult(
            written=plan.ids, created=int(plan.created.sum()), filtered=plan.filtered
        )

    def _stage_push(
        self, txn: Transaction, plan: UpdatePlan, pulled: Pulled, batch_time: float, now: float
    ) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} applies steps at commit (push), not precomputed plans"
        )

    def import_rows(self, rows: Rows) -> None:
        ids = check_ids(rows.ids, unique=True)
        for s, pos in self._split(ids):
            self._run("import", partial(self.parts[s].import_rows, rows.take(pos)))

    # ---- expiry, stats, feed -----------------------------------------------------------

    def expire(self, watermark: float) -> IdArray:
        removed = [self._run("expire", partial(p.expire, watermark)) for p in self.parts]
        return np.concatenate(removed) if removed else np.zeros(0, dtype=np.uint64)

    def stats(self) -> TableStats:
        parts = [self._run("stats", p.stats) for p in self.parts]
        return TableStats(
            rows=sum(p.rows for p in parts),
            bytes=sum(p.bytes for p in parts),
            created_total=sum(p.created_total for p in parts),
            filtered_total=sum(p.filtered_total for p in parts),
            expired_total=sum(p.expired_total for p in parts),
        )

    def export(self, batch_size: int = 4096) -> Iterator[Rows]:
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        for part in self.parts:
            yield from self._run("export", partial(_listed, part, batch_size))

    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> list[Change]:
        """Entries of every shard after `cursor` (a `ClusterCursor`), shard by shard.

        Order holds within a shard (an id's entries are all on its shard), not across shards.
        With `block_ms`, waits for a first entry by polling every shard.
        """
        at = ClusterCursor.parse(cursor, self.shard_count)
        deadline = time.monotonic() + (block_ms or 0) / 1000.0
        while True:
            out = self._read_feed(at, count)
            if out or time.monotonic() >= deadline:
                return out
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def _read_feed(self, at: ClusterCursor, count: int) -> list[Change]:
        out: list[Change] = []
        positions = list(at.positions)
        for s, part in enumerate(self.parts):
            if len(out) >= count:
                break
            entries = self._run("changes", partial(part.changes, positions[s], count - len(out)))
            for entry in entries:
                positions[s] = entry.cursor
                written = int(entry.cursor.split("-", 1)[0]) / 1000.0  # a stream entry id
                out.append(
                    Change(str(ClusterCursor(list(positions))), entry.op, entry.ids, written)
                )
        return out

    def clear(self) -> None:
        for part in self.parts:
            self._run("clear", part.clear)


def _listed(part: RedisEmbeddingStore, batch_size: int) -> list[Rows]:
    return list(part.export(batch_size))


def _merge(results: list[UpdateResult]) -> UpdateResult:
    if not results:
        return UpdateResult(written=np.zeros(0, dtype=np.uint64), created=0, filtered=0)
    return UpdateResult(
        written=np.concatenate([r.written for r in results]),
        created=sum(r.created for r in results),
        filtered=sum(r.filtered for r in results),
    )
