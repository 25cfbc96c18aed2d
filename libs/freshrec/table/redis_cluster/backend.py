"""The Redis Cluster table backend: commit records, guarded shard applies, metadata by group.

MULTI/EXEC cannot span slots, so a transaction is atomic within its commit group's slot only
(`Atomicity.GROUP`). A trainer's batch commits in two steps (`docs/specs/trainer-state.md`,
"On Redis Cluster"):

1. **Commit record.** One MULTI/EXEC in the group's slot writes the group's metadata (its
   partitions' offsets, its checkpoint) together with the batch's *commit record*: a fresh
   batch id and every table's gradient step, split by shard. Once this EXEC returns, the
   batch is committed: its offsets have moved on and its steps will be applied.
2. **Apply, shard by shard.** For each shard the record touches, under WATCH of the rows it
   changes and the writer's *applied* key in that shard: if it already names this batch, the
   shard is done; otherwise read the rows as they are now, run the optimizer step on them, and
   write the rows, the shard's feed entry, its counters and ``applied = batch`` in one
   MULTI/EXEC. Another writer touching those rows in between aborts the EXEC and the shard is
   read again — a concurrent trainer's update is never overwritten (no lost update).

The steps are pipelined (`freshrec.table.redis_cluster.apply`): step 1's MULTI/EXEC goes out
with every shard's WATCH and reads, and every shard's MULTI/EXEC goes out together once step
1's reply says it committed — a commit is two round trips in sequence, whatever its shards.

A crash after step 1 leaves a record whose shards are partly applied; the first transaction
the group opens in a new process replays it (step 2 again), and the applied keys make that
idempotent. A crash before step 1 commits nothing: the batch is consumed again. Batch ids
are ``<seq>.<random>`` with a per-writer sequence number, and a shard skips any batch not
newer than the one it last applied for that writer: a writer applies a record everywhere
before it writes the next, so a replay by another process that read the record before the
writer moved on cannot apply it twice.

Durability: replication is asynchronous. With ``wait_replicas=n`` every EXEC above is
followed by ``WAIT n`` and a commit only counts once `n` replicas have it
(`StoreUnavailable` otherwise, and the trainer retries the batch).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import redis

from freshrec.errors import (
    CommitConflict,
    ConfigError,
    FenceAborted,
    InvalidInput,
    StoreUnavailable,
)
from freshrec.table.base import Atomicity, Transaction, UpdateResult
from freshrec.table.config import TableConfig
from freshrec.table.records import IdArray
from freshrec.table.redis.backend import RedisTableBackend
from freshrec.table.redis.connection import FENCE_ATTEMPTS, TABLE_OP_SECONDS, RedisTransaction
from freshrec.table.redis_cluster.apply import RecordCommit, apply_shards
from freshrec.table.redis_cluster.record import (
    RECORD_KEY,
    WRITERS_KEY,
    applier,
    batch_seq,
    decode_record,
    encode_record,
    record_key,
)
from freshrec.table.redis_cluster.router import (
    Node,
    SlotRouter,
    parse_nodes,
    shard_of,
    shard_tag,
    tag_slot,
)
from freshrec.table.redis_cluster.store import (
    RedisClusterEmbeddingStore,
    ShardedBackend,
    ShardUpdate,
)
from freshrec.table.resp import EXEC, MULTI, pack_command

__all__ = [
    "RECORD_KEY",
    "ClusterTransaction",
    "RedisClusterTableBackend",
    "decode_record",
    "encode_record",
    "group_tag",
]

logger = logging.getLogger(__name__)


def group_tag(group: str | None) -> str:
    """The hash tag of commit group `group`'s metadata (``{m.<group>}``; ``{m}`` for None)."""
    if group is not None and ("{" in group or "}" in group):
        raise InvalidInput(f"a commit group name has no braces: {group!r}")
    return "{m}" if group is None else "{m." + group + "}"


class ClusterTransaction(RedisTransaction):
    """The metadata of one commit group (atomic in its slot) plus tables' gradient steps.

    Args:
        backend: the cluster backend.
        group: the commit group.
        writer: which writer of the group commits (its own commit record); None: the only one.
    """

    def __init__(
        self, backend: RedisClusterTableBackend, group: str | None, writer: str | None = None
    ) -> None:
        if writer is not None and ("{" in writer or "}" in writer or not writer):
            raise InvalidInput(f"a writer name is non-empty and has no braces: {writer!r}")
        super().__init__(backend.group_client(group), backend.namespace, group)
        self.backend = backend
        self.writer = writer
        self._updates: list[ShardUpdate] = []
        self._tag = group_tag(group)

    def _meta(self, key: str) -> str:
        return f"{self.namespace}:meta:{self._tag}:{key}"

    def stage_updates(self, updates: Sequence[ShardUpdate]) -> None:
        """Add tables' gradient steps (applied at commit, see the module docstring)."""
        for update in updates:
            if update.store.backend is not self.backend:
                raise TypeError("a ClusterTransaction takes steps of its own backend's tables")
        self._updates.extend(updates)

    def commit(self) -> None:
        updates = self._updates
        self._updates = []
        if not updates:
            self.backend.commit_group(self)
            return
        batch = self.backend.next_batch(self.group, self.writer)
        self.put_blob(record_key(self.writer), encode_record(batch, updates))
        if self.writer is not None:
            self.put_hash(WRITERS_KEY, {self.writer: 1})
        try:
            self.backend.commit_record(self, applier(self.group, self.writer), batch, updates)
        except BaseException:
            # the record may have committed: the group's next transaction completes it
            self.backend.pending(self.group)
            raise

    def discard(self) -> None:
        super().discard()
        self._updates = []


class RedisClusterTableBackend(ShardedBackend):
    """Tables of one namespace on a Redis Cluster (`Atomicity.GROUP`).

    Args:
        router: the cluster's slot router (closed with the backend).
        namespace: prefix of every key this deployment owns (no braces).
        shards: shards per table; part of the layout (changing it needs a snapshot restore).
        wait_replicas: replicas every commit waits for (``WAIT``); 0 does not wait.
        wait_timeout_ms: how long a commit waits for them before it fails.
    """

    atomicity = Atomicity.GROUP

    def __init__(
        self,
        router: SlotRouter,
        namespace: str = "freshrec",
        *,
        shards: int = 12,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        if "{" in namespace or "}" in namespace:
            raise ConfigError(f"a Redis Cluster namespace has no braces: {namespace!r}")
        if not 1 <= shards <= 1024:
            raise ConfigError(f"shards must be 1..1024, got {shards}")
        self.router = router
        self.namespace = namespace
        self.shards = shards
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._tags = [shard_tag(s, shards) for s in range(shards)]
        self._slots = [tag_slot(t) for t in self._tags]
        self._connections = [
            RedisTableBackend(router.slot_client(slot), namespace) for slot in self._slots
        ]
        self._stores: dict[str, RedisClusterEmbeddingStore] = {}
        self._recovered: set[str | None] = set()
        self._seq: dict[tuple[str | None, str | None], int] = {}

    @classmethod
    def from_nodes(
        cls,
        nodes: str | Sequence[Node],
        namespace: str = "freshrec",
        *,
        socket_timeout_s: float | None = None,
        shards: int = 12,
        wait_replicas: int = 0,
    ) -> RedisClusterTableBackend:
        """A backend over a new router for startup `nodes` (``"host:port,..."``)."""
        startup = parse_nodes(nodes) if isinstance(nodes, str) else list(nodes)
        router = SlotRouter(startup, socket_timeout_s=socket_timeout_s)
        return cls(router, namespace, shards=shards, wait_replicas=wait_replicas)

    # ---- layout ------------------------------------------------------------------------

    def tag(self, shard: int) -> str:
        """The hash tag of shard `shard`."""
        return self._tags[shard]

    def shard_of(self, ids: IdArray) -> np.ndarray:
        """`(B,)` shard of each id."""
        return shard_of(ids, self.shards)

    def shard_connection(self, shard: int) -> RedisTableBackend:
        """The connection (slot client + namespace) of shard `shard`."""
        return self._connections[shard]

    def group_client(self, group: str | None) -> redis.Redis:
        """A client on the slot of commit group `group`."""
        return self.router.slot_client(tag_slot(group_tag(group)))

    def applied_log_key(self, shard: int) -> str:
        """The list of the last `APPLIED_LOG_LENGTH` batches applied to shard `shard`
        (``<group>[/<writer>]:<batch>``), for audits: a batch is never in it twice."""
        return f"{self.namespace}:applog:{self._tags[shard]}"

    def applied_key(self, shard: int, applier: str) -> str:
        """The key naming the last batch of writer `applier` applied to shard `shard`.

        One key per (shard, writer): an apply WATCHes only its own writer's key, so two
        writers applying to the same shard conflict only where their rows do."""
        return f"{self.namespace}:applied:{self._tags[shard]}:{applier}"

    def legacy_applied_key(self, shard: int) -> str:
        """The hash of shard `shard` in which earlier releases named, per writer, the last
        batch applied there (read, never written: a record in flight across an upgrade)."""
        return f"{self.namespace}:applied:{self._tags[shard]}"

    # ---- TableBackend ------------------------------------------------------------------

    def transaction(
        self, group: str | None = None, *, writer: str | None = None
    ) -> ClusterTransaction:
        if group not in self._recovered:
            self.recover(group)
        return ClusterTransaction(self, group, writer)

    def stage_updates(self, txn: Transaction, updates: Sequence[ShardUpdate]) -> None:
        if not isinstance(txn, ClusterTransaction) or txn.backend is not self:
            raise TypeError("a Redis Cluster table needs a transaction of its own backend")
        txn.stage_updates(updates)

    def _meta_key(self, key: str, group: str | None) -> str:
        return f"{self.namespace}:meta:{group_tag(group)}:{key}"

    def _run(self, op: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        except redis.RedisError as exc:
            self.router.invalidate()
            raise StoreUnavailable(f"Redis Cluster failed during {op}: {exc}") from exc
        except CommitConflict:
            raise  # a fence said no: the cluster answered, its slot map stands
        except StoreUnavailable:
            self.router.invalidate()
            raise
        finally:
            TABLE_OP_SECONDS.labels("meta", op).observe(time.perf_counter() - started)

    def get_hash(self, key: str, *, group: str | None = None) -> dict[str, bytes]:
        client = self.group_client(group)
        raw = self._run("get_hash", lambda: client.hgetall(self._meta_key(key, group)))
        return {k.decode(): v for k, v in cast(dict[bytes, bytes], raw).items()}

    def get_hash_fields(
        self, key: str, fields: Sequence[str], *, group: str | None = None
    ) -> list[bytes | None]:
        if not fields:
            return []
        client = self.group_client(group)
        raw = self._run(
            "get_hash_fields", lambda: client.hmget(self._meta_key(key, group), list(fields))
        )
        return cast(list[bytes | None], raw)

    def get_blob(self, key: str, *, group: str | None = None) -> bytes | None:
        client = self.group_client(group)
        return cast(
            bytes | None, self._run("get_blob", lambda: client.get(self._meta_key(key, group)))
        )

    def ping(self) -> bool:
        return self.router.ping()

    def store(
        self,
        config: TableConfig,
        *,
        feed_maxlen: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> RedisClusterEmbeddingStore:
        """The store of table `config.name` (see `RedisClusterEmbeddingStore`)."""
        store = RedisClusterEmbeddingStore(self, config, feed_maxlen=feed_maxlen, clock=clock)
        self._stores[config.name] = store
        return store

    def close(self) -> None:
        self.router.close()

    def fan_out(self, commands: Mapping[int, Sequence[bytes]]) -> dict[int, list[Any]]:
        """Send each shard's packed commands to its master and read every reply.

        All shards of one master share one connection, and every master's commands are sent
        before any reply is read, so the masters work in parallel: one round trip in all.

        Args:
            commands: shard → its packed commands (one reply each).

        Returns:
            shard → its replies, in order.
        """
        by_node: dict[Node, list[int]] = {}
        for shard in commands:
            by_node.setdefault(self.router.master_of(self._slots[shard]), []).append(shard)
        held: list[tuple[redis.ConnectionPool, Any, list[int]]] = []
        out: dict[int, list[Any]] = {}
        try:
            for node, shards in by_node.items():
                pool = self.router.pool_at(node)
                conn = pool.get_connection()
                held.append((pool, conn, shards))
                # one write: redis-py makes a system call per list item
                conn.send_packed_command([b"".join(c for s in shards for c in commands[s])])  # type: ignore[no-untyped-call]
            for _pool, conn, shards in held:
                for s in shards:
                    out[s] = [conn.read_response() for _ in commands[s]]
        except BaseException:
            for _pool, conn, _shards in held:
                conn.disconnect()
            raise
        finally:
            for pool, conn, _shards in held:
                pool.release(conn)
        return out

    # ---- the commit protocol -----------------------------------------------------------

    def slot(self, shard: int) -> int:
        """The hash slot of shard `shard`."""
        return self._slots[shard]

    def send_exec(self, conn: Any, chunks: Sequence[bytes]) -> None:
        """Send MULTI, `chunks`, EXEC (and WAIT) on `conn` in one write (`read_exec` reads)."""
        tail = EXEC
        if self.wait_replicas:
            tail += pack_command(["WAIT", self.wait_replicas, self.wait_timeout_ms])
        conn.send_packed_command([b"".join([MULTI, *chunks, tail])])

    def read_exec(self, conn: Any, commands: int, *, watched: bool) -> bool:
        """The replies to `send_exec` of `commands` commands; False when WATCH aborted it."""
        tail = 2 if self.wait_replicas else 1
        replies = [conn.read_response() for _ in range(commands + 1 + tail)]
        results = replies[commands + 1]
        if results is None:
            if not watched:
                raise StoreUnavailable("Redis Cluster transaction was aborted")
            return False
        failed = [r for r in results if isinstance(r, Exception)]
        if failed:
            raise StoreUnavailable(
                f"Redis Cluster transaction had {len(failed)} failing commands: {failed[0]}"
            )
        if self.wait_replicas and int(replies[-1]) < self.wait_replicas:
            raise StoreUnavailable(
                f"commit reached {replies[-1]} replicas of the {self.wait_replicas} required"
            )
        return True

    def _with_connection(self, slot: int, op: str, fn: Callable[[Any], Any]) -> Any:
        def run() -> Any:
            pool = self.router.pool_at(self.router.master_of(slot))
            conn = pool.get_connection()
            try:
                return fn(conn)
            except BaseException:
                conn.disconnect()  # type: ignore[no-untyped-call]
                raise
            finally:
                pool.release(conn)

        return self._run(op, run)

    def commit_group(self, txn: ClusterTransaction) -> None:
        """The group's metadata alone (no steps) in one MULTI/EXEC in its slot."""
        self._commit_in_group(txn, self._exec_record)

    def commit_record(
        self, txn: ClusterTransaction, field: str, batch: str, updates: Sequence[ShardUpdate]
    ) -> None:
        """Step 1 (the group's metadata and commit record) and step 2 (every shard's apply).

        The record's MULTI/EXEC travels with the shards' first round (`apply_shards`); its
        reply is checked before any shard writes.
        """
        by_shard = _by_shard(updates)
        self._commit_in_group(
            txn, lambda record: self.apply_shards(by_shard, group=field, batch=batch, record=record)
        )

    def _exec_record(self, record: RecordCommit) -> None:
        self.send_exec(record.conn, record.chunks)
        if not self.read_exec(record.conn, record.commands, watched=record.watched):
            raise FenceAborted("a write to an expected hash aborted the commit")

    def _commit_in_group(self, txn: ClusterTransaction, fn: Callable[[RecordCommit], Any]) -> None:
        chunks, commands = txn._chunks, txn._commands
        txn._chunks, txn._commands = [], 0
        if not commands:
            return
        slot = tag_slot(group_tag(txn.group))

        def run(conn: Any) -> None:
            for attempt in range(FENCE_ATTEMPTS):
                try:
                    # CommitConflict when an expected field moved on: the writer is stale
                    fn(RecordCommit(conn, chunks, commands, txn.watch_expected(conn)))
                    return
                except FenceAborted:
                    # another member's commit wrote the group's offsets hash in between
                    if attempt == FENCE_ATTEMPTS - 1:
                        raise

        try:
            self._with_connection(slot, "commit", run)
        finally:
            txn._expect = []

    def apply_shards(
        self,
        by_shard: Mapping[int, Sequence[ShardUpdate]],
        *,
        group: str | None,
        batch: str | None,
        record: RecordCommit | None = None,
    ) -> dict[int, list[UpdateResult]]:
        """Apply each shard's steps under WATCH, all shards at once (`apply.apply_shards`)."""
        return apply_shards(self, by_shard, group=group, batch=batch, record=record)

    def next_batch(self, group: str | None, writer: str | None) -> str:
        """A new batch id of `writer` in `group`: ``<seq>.<random>``, seq one past its last.

        The seq orders a writer's batches (its last record is known from `recover`, which
        every process runs before its first commit of a group).
        """
        seq = self._seq.get((group, writer), 0) + 1
        self._seq[(group, writer)] = seq
        return f"{seq}.{uuid.uuid4().hex}"

    def pending(self, group: str | None) -> None:
        """Mark `group`'s last commit as possibly incomplete: its next transaction recovers."""
        self._recovered.discard(group)

    def recover(self, group: str | None) -> int:
        """Replay the last record of every writer of `group` on the shards that lack it.

        The trainer calls it before reading its offsets; the first transaction of each group
        in a process (and the first after a failed commit) calls it too. Idempotent, and safe
        while the writers are alive: a shard applies a batch once, whoever gets there first.

        Returns:
            How many shards it applied (0 when every record was complete).
        """
        writers: list[str | None] = [None]
        writers += sorted(self.get_hash(WRITERS_KEY, group=group))
        replayed = 0
        for writer in writers:
            raw = self.get_blob(record_key(writer), group=group)
            if not raw:
                continue
            batch, updates = decode_record(raw, self._stores)
            self._seq[(group, writer)] = max(self._seq.get((group, writer), 0), batch_seq(batch))
            field = applier(group, writer)
            results = self.apply_shards(_by_shard(updates), group=field, batch=batch)
            done = sum(1 for applied in results.values() if applied)
            if done:
                logger.warning(
                    "commit group %s, writer %s: replayed batch %s on %d shards after a crash",
                    group,
                    writer,
                    batch,
                    done,
                )
            replayed += done
        self._recovered.add(group)
        return replayed


def _by_shard(updates: Sequence[ShardUpdate]) -> dict[int, list[ShardUpdate]]:
    by_shard: dict[int, list[ShardUpdate]] = {}
    for update in updates:
        by_shard.setdefault(update.shard, []).append(update)
    return by_shard
