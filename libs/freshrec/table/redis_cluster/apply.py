"""Guarded shard applies of the Redis Cluster backend, every shard's round trip in flight at once.

Applying a batch's steps (`docs/specs/trainer-state.md`, "On Redis Cluster") takes two rounds
over the shards it touches, each shard on a connection of its own (WATCH state belongs to a
connection, and one MULTI/EXEC cannot span slots):

1. ``WATCH`` the writer's applied key in the shard and the row keys (and the stats hash where
   the counting filter reads its pending generation); read the applied batch, the rows and that
   generation;
2. ``MULTI``, the rows the optimizer step makes of what round 1 read, the feed entry, the
   counters, ``HSET applied writer <batch>``, ``EXEC`` (and ``WAIT``) — or ``UNWATCH`` when
   the shard has the batch already.

Nothing waits for one shard before the next is sent: round 1 goes out for the first
`WATCH_AHEAD` shards at once, and each shard's round 2 leaves as soon as its step is staged,
together with round 1 of the shard `WATCH_AHEAD` places further on. The masters work in
parallel, a later shard's replies are in by the time its turn comes, and each shard's WATCH
stays open only while the few shards before it are staged (a write by another writer inside
that time aborts the EXEC). A commit's record (its own MULTI/EXEC in the
group's slot) rides with the first round 1, which only watches and reads, and its reply is
checked before any round 2 is sent, so the record is still committed before any shard
applies. Shards whose EXEC another writer's write aborted go round again. Counting-filter
tables with new ids read their pending counts in one more round trip on that shard, under
WATCH of the pending hashes. Every send is one write (one system call).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import redis
from prometheus_client import Counter

from freshrec.errors import FenceAborted, StoreUnavailable
from freshrec.table.base import UpdateResult
from freshrec.table.records import IdArray
from freshrec.table.redis.connection import RedisTransaction
from freshrec.table.redis.keys import split_ids
from freshrec.table.redis.store import RedisEmbeddingStore
from freshrec.table.redis_cluster.record import batch_seq, text
from freshrec.table.redis_cluster.router import SlotRouter
from freshrec.table.redis_cluster.store import (
    ShardUpdate,
    pull_commands,
    pulled_from,
    reads_generation,
)
from freshrec.table.resp import pack_command

__all__ = [
    "APPLIED_LOG_LENGTH",
    "ApplyingBackend",
    "MAX_APPLY_ATTEMPTS",
    "RecordCommit",
    "apply_shards",
]

# A shard's apply retries this often when concurrent writers keep changing its rows.
MAX_APPLY_ATTEMPTS = 64

# Batches each shard's applied log keeps (audits; a few hundred kB per shard).
APPLIED_LOG_LENGTH = 10_000

APPLY_RETRIES = Counter(
    "freshrec_table_apply_retries_total",
    "Shard applies read again because another writer changed their rows under WATCH.",
)

UNWATCH = pack_command(["UNWATCH"])

# Shards whose WATCH and reads are in flight ahead of the one being staged. All of them at
# once would save the wait for the first reply of each later shard, but a shard's WATCH would
# then stay open while every shard before it is staged, and concurrent writers abort it more
# often (3 writers on 200 hot ids, 12 shards, shard retries per writer per 60 batches,
# measured: about 340 with all 12 ahead, 190 with 4, 140 with 2). Two cover a loopback
# round trip: a shard's replies are there by the time the two before it are staged.
WATCH_AHEAD = 2


T = TypeVar("T")


class ApplyingBackend(Protocol):
    """What the applies need of the cluster backend (`RedisClusterTableBackend`)."""

    router: SlotRouter
    namespace: str

    def slot(self, shard: int) -> int:
        """The hash slot of shard `shard`."""

    def applied_key(self, shard: int, applier: str) -> str:
        """The applied key of writer `applier` in shard `shard`."""

    def legacy_applied_key(self, shard: int) -> str:
        """The applied hash of shard `shard` that earlier releases wrote."""

    def applied_log_key(self, shard: int) -> str:
        """The applied log of shard `shard`."""

    def send_exec(self, conn: Any, chunks: Sequence[bytes]) -> None:
        """Send MULTI, `chunks`, EXEC (and WAIT) on `conn`."""

    def read_exec(self, conn: Any, commands: int, *, watched: bool) -> bool:
        """Read what `send_exec` sent; False when WATCH aborted it."""

    def _run(self, op: str, fn: Callable[[], T]) -> T:
        """Run `fn`, driver errors as `StoreUnavailable` (the slot map refreshed after)."""


@dataclass
class RecordCommit:
    """A commit record's MULTI/EXEC on its group's connection, riding with round 1.

    Attributes:
        conn: a connection to the group's master (WATCHing the expected hashes if `watched`).
        chunks: the group's staged commands.
        commands: how many commands `chunks` holds.
        watched: whether an aborted EXEC means a fenced-off commit (else an outage).
    """

    conn: Any
    chunks: list[bytes]
    commands: int
    watched: bool


@dataclass
class _Shard:
    """One shard's apply in flight: its connection and what round 1 made of it."""

    shard: int
    updates: Sequence[ShardUpdate]
    conn: Any
    replies: list[int] = field(default_factory=list)
    staged: RedisTransaction | None = None
    results: list[UpdateResult] = field(default_factory=list)


def apply_shards(
    backend: ApplyingBackend,
    by_shard: Mapping[int, Sequence[ShardUpdate]],
    *,
    group: str | None,
    batch: str | None,
    record: RecordCommit | None = None,
) -> dict[int, list[UpdateResult]]:
    """Apply each shard's steps to its rows as they are, under WATCH, all shards at once.

    Args:
        backend: the cluster backend.
        by_shard: shard → the gradient steps of tables on `backend` in that shard.
        group: the applied-hash field (the writer's `applier`); with `batch`, recorded there.
        batch: the commit record's batch id; None applies without a record.
        record: a commit record to commit first, in the same round trip as round 1.

    Returns:
        shard → one `UpdateResult` per update (empty where the shard had the batch already).

    Raises:
        FenceAborted: a write to a hash `record` watched aborted it (nothing applied).
        StoreUnavailable: the cluster failed, or rows kept changing for
            `MAX_APPLY_ATTEMPTS` rounds.
    """
    todo = dict(by_shard)
    done: dict[int, list[UpdateResult]] = {}
    for tries in range(MAX_APPLY_ATTEMPTS):
        run = partial(_round, backend, todo, group or "", batch, record)
        done.update(backend._run("apply", run))
        record = None
        todo = {s: u for s, u in todo.items() if s not in done}
        if not todo:
            return done
        APPLY_RETRIES.inc(len(todo))
        time.sleep(random.uniform(0.0, 0.002 * (tries + 1)))
    raise StoreUnavailable(
        f"shards {sorted(todo)}: rows kept changing under {MAX_APPLY_ATTEMPTS} apply attempts"
    )


def _round(
    backend: ApplyingBackend,
    todo: Mapping[int, Sequence[ShardUpdate]],
    field: str,
    batch: str | None,
    record: RecordCommit | None,
) -> dict[int, list[UpdateResult]]:
    """One attempt of every shard in `todo`: shard → results, for the shards it finished."""
    held: list[tuple[redis.ConnectionPool, Any]] = []
    try:
        shards = []
        for s, updates in todo.items():
            pool = backend.router.pool_at(backend.router.master_of(backend.slot(s)))
            held.append((pool, pool.get_connection()))
            shards.append(_Shard(s, updates, held[-1][1]))
        if record is not None:
            backend.send_exec(record.conn, record.chunks)
        reads = [b"".join(_reads(backend, sh, field)) for sh in shards]
        for sh, chunk in zip(shards[:WATCH_AHEAD], reads, strict=False):
            sh.conn.send_packed_command([chunk])
        if record is not None and not backend.read_exec(
            record.conn, record.commands, watched=record.watched
        ):
            for sh in shards[:WATCH_AHEAD]:
                _drain(sh)  # the connections stay usable for the commit's next attempt
            raise FenceAborted("a write to an expected hash aborted the commit")
        for at, sh in enumerate(shards):
            if at + WATCH_AHEAD < len(shards):
                shards[at + WATCH_AHEAD].conn.send_packed_command([reads[at + WATCH_AHEAD]])
            _plan(backend, sh, field, batch)
            if sh.staged is None:
                sh.conn.send_packed_command([UNWATCH])
            else:
                backend.send_exec(sh.conn, sh.staged._chunks)
        out: dict[int, list[UpdateResult]] = {}
        for sh in shards:
            if sh.staged is None:
                sh.conn.read_response()
                out[sh.shard] = []
            elif backend.read_exec(sh.conn, sh.staged._commands, watched=True):
                out[sh.shard] = sh.results
        return out
    except FenceAborted:
        raise  # every connection was drained: they go back to their pools as they are
    except BaseException:
        for _pool, conn in held:
            conn.disconnect()
        raise
    finally:
        for pool, conn in held:
            pool.release(conn)


def _reads(backend: ApplyingBackend, sh: _Shard, field: str) -> list[bytes]:
    """Round 1 of shard `sh`: WATCH, the applied field, every update's pull reads."""
    applied = backend.applied_key(sh.shard, field)
    watch: list[bytes | str] = [applied]
    reads = [
        pack_command(["GET", applied]),
        pack_command(["HGET", backend.legacy_applied_key(sh.shard), field]),
    ]
    for u in sh.updates:
        part = u.store.parts[sh.shard]
        if reads_generation(part):
            # a writer moving the pending generation on in between must abort this apply
            # (the stats hash's other writes are increments, which commute)
            watch.append(part.stats_key)
        watch += part.row_keys(u.ids)
        pulls = pull_commands(part, u.ids)
        sh.replies.append(len(pulls))
        reads += pulls
    return [pack_command(["WATCH", *watch]), *reads]


def _drain(sh: _Shard) -> None:
    """Read shard `sh`'s round-1 replies unused and drop its WATCH."""
    for _ in range(3 + sum(sh.replies)):  # WATCH, the applied key and hash, the pulls
        sh.conn.read_response()
    sh.conn.send_packed_command([UNWATCH])
    sh.conn.read_response()


def _plan(backend: ApplyingBackend, sh: _Shard, field: str, batch: str | None) -> None:
    """Read shard `sh`'s round-1 replies and stage its writes (none: it has the batch)."""
    sh.conn.read_response()
    last = max(text(sh.conn.read_response()), text(sh.conn.read_response()), key=batch_seq)
    replies = [[sh.conn.read_response() for _ in range(n)] for n in sh.replies]
    if batch is not None and batch_seq(last) >= batch_seq(batch):
        # this batch, or a later one of the same writer, which comes only after this one
        # was applied everywhere: a replay read before the writer moved on
        return
    now = sh.updates[0].store.clock()
    staged: RedisTransaction | None = None
    for u, got in zip(sh.updates, replies, strict=True):
        part = u.store.parts[sh.shard]
        staged = staged or RedisTransaction(part.client, backend.namespace, field)
        pulled = pulled_from(part, u.ids, got, partial(_watched_pending, sh.conn, part))
        plan = u.plan(pulled, now)
        part._stage_push(staged, plan, pulled, float(np.max(u.event_time)), now)
        created = int(plan.created.sum())
        sh.results.append(UpdateResult(written=plan.ids, created=created, filtered=plan.filtered))
    if staged is not None and batch is not None:
        log = backend.applied_log_key(sh.shard)
        staged.stage("SET", backend.applied_key(sh.shard, field), batch)
        staged.stage("RPUSH", log, f"{field}:{batch}")
        staged.stage("LTRIM", log, -APPLIED_LOG_LENGTH, -1)
    sh.staged = staged


def _watched_pending(
    conn: Any, part: RedisEmbeddingStore, ids: IdArray, generation: int
) -> npt.NDArray[np.int64]:
    """The pending counts of `ids`, read on `conn` after WATCH of both generations' hashes."""
    keys = [part._pending_key(generation), part._pending_key(generation - 1)]
    fields = split_ids(ids)
    conn.send_packed_command(
        [
            pack_command(["WATCH", *keys])
            + pack_command(["HMGET", keys[0], *fields])
            + pack_command(["HMGET", keys[1], *fields])
        ]
    )
    conn.read_response()
    current, previous = conn.read_response(), conn.read_response()
    return np.array(
        [
            int(c) if c is not None else (int(p) if p is not None else 0)
            for c, p in zip(current, previous, strict=True)
        ],
        dtype=np.int64,
    )
