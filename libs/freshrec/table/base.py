"""The embedding-table seam: a backend, the per-table stores on it, batched operations only.

A `TableBackend` is one connection and namespace (a Redis server, an in-process registry). It
owns what is global to a deployment: transactions, metadata hashes and blobs (consumer offsets,
checkpoints, the published model), readiness. `backend.store(config)` opens an `EmbeddingStore`
for one table on it.

A table maps full 64-bit ids to rows (vector, optimizer state, metadata). Every operation
takes a whole batch of ids; implementations never do one round trip per id.

Training goes through `pull` and `push`:

1. `pull(unique_ids)` reads the rows the batch needs (vector, optimizer state, occurrence
   counts) — or the deterministic initial vector for ids without a row.
2. The caller runs forward/backward and sums gradients per unique id.
3. `push(pulled, grads, occurrences, event_time, txn=...)` applies the table's admission
   filter and optimizer and stages the new rows into a `Transaction`, together with the
   change-feed entry for the touched ids. Whatever else the caller staged in the same
   transaction (consumer offsets, a trainer checkpoint) commits with them, within the limits
   the backend's `atomicity` states.

Serving goes through `lookup` (vectors only) and `read_rows` (full rows, for operators).

The change feed: every committed write that creates, updates or removes rows appends one
entry (op, ids) to the table's feed, in the same transaction; the retrieval index follows it
with `changes(cursor)`.

Commit groups. A transaction is opened for a *commit group*: the name of what must commit
together. For the trainer that is its consumer group — the group's partition offsets, its
checkpoint and the batch's rows. A backend states what it can make atomic (`Atomicity`):

- `Atomicity.BACKEND` (single-node Redis, in memory): the whole backend is one shard, so every
  write staged in one transaction — rows of any table, any metadata key, whatever the group —
  becomes visible at once or not at all. The group is only a label.
- `Atomicity.GROUP` (a sharded backend, e.g. Redis Cluster, where MULTI/EXEC cannot span hash
  slots): a transaction is atomic within its group's shard only. The backend places metadata
  staged under group `g` (and read back with ``group=g``) in `g`'s shard, so a group's commit
  record — offsets plus checkpoint — commits atomically; row writes that land on other shards
  are applied idempotently from that record and replayed after a crash, never committed
  half-way without a record to replay them from.

The exactly-once argument of `docs/specs/trainer-state.md` (a crash never loses or
double-applies a batch) relies on this contract: with `BACKEND` atomicity directly, with
`GROUP` atomicity through the group's commit record and idempotent row application.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import StrEnum
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt

from freshrec.table.config import TableConfig
from freshrec.table.optimizers import Optimizer
from freshrec.table.records import (
    Change,
    ChangeOp,
    FeedLag,
    FloatArray,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableStats,
    UpdateResult,
)
from freshrec.table.update import UpdatePlan, plan_update

__all__ = [
    "Atomicity",
    "Change",
    "ChangeOp",
    "EmbeddingStore",
    "FeedLag",
    "FloatArray",
    "IdArray",
    "LookupResult",
    "Pulled",
    "Rows",
    "TableBackend",
    "TableStats",
    "Transaction",
    "UpdateResult",
]


class Atomicity(StrEnum):
    """What one transaction of a backend can make visible at once (see the module docstring)."""

    BACKEND = "backend"
    GROUP = "group"


class Transaction(abc.ABC):
    """Writes staged here become visible together, or not at all, within the backend's limits.

    Use as a context manager: leaving the block normally commits; an exception discards.
    Stores of the transaction's backend can stage into it, so one commit spans several tables
    and the caller's metadata. On a backend with `Atomicity.GROUP`, only the writes living in
    the shard of `group` are atomic with each other.

    Attributes:
        group: the commit group this transaction was opened for; None is the deployment-wide
            group (the published model, item names).
    """

    group: str | None = None

    @abc.abstractmethod
    def put_hash(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None:
        """Stage setting fields of the metadata hash `key` (namespace-relative)."""

    @abc.abstractmethod
    def put_blob(self, key: str, value: bytes) -> None:
        """Stage setting the metadata blob `key` (namespace-relative)."""

    @abc.abstractmethod
    def put_blob_range(self, key: str, start: int, data: bytes) -> None:
        """Stage overwriting bytes `start .. start + len(data)` of the metadata blob `key`.

        A blob shorter than that is first extended with zero bytes (Redis's SETRANGE), so a
        fixed-size ring can be written slot by slot without rewriting all of it.
        """

    @abc.abstractmethod
    def expect_hash(self, key: str, fields: Mapping[str, int | None]) -> None:
        """Commit only if the metadata hash `key` still holds `fields` (None: absent).

        The check and the commit are atomic (in the group's shard on a sharded backend):
        a writer fences off another that took over its work meanwhile. A mismatch at commit
        raises `CommitConflict` and commits nothing.
        """

    @abc.abstractmethod
    def commit(self) -> None:
        """Make every staged write visible, atomically as far as the backend's atomicity goes."""

    @abc.abstractmethod
    def discard(self) -> None:
        """Drop every staged write."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class TableBackend(abc.ABC):
    """One connection and namespace: transactions, metadata, readiness, and the tables on it.

    Attributes:
        namespace: prefix of everything this deployment owns on the backend.
        atomicity: what one transaction can commit at once (see the module docstring).
    """

    namespace: str
    atomicity: Atomicity = Atomicity.BACKEND

    @abc.abstractmethod
    def transaction(self, group: str | None = None, *, writer: str | None = None) -> Transaction:
        """A new transaction for commit group `group`.

        Args:
            group: what must commit together (the trainer passes its consumer group); None
                for the deployment-wide group. A single-node backend commits every staged
                write atomically whatever the group; a sharded one only the writes in the
                group's shard.
            writer: which of several writers of the group commits (a trainer's member name);
                a sharded backend keeps one commit record per writer, so members do not
                replace each other's. None: the group's only writer.
        """

    def recover(self, group: str | None) -> int:
        """Complete the last commit of every writer of group `group` if a crash cut it short.

        Call it before reading the group's offsets or checkpoint after a (re)start or an
        outage. A backend whose transactions are atomic (`Atomicity.BACKEND`) has nothing to
        complete; a sharded one replays the group's commit record on the shards that lack it.

        Returns:
            How many shards were completed (0: nothing was pending).
        """
        return 0

    @abc.abstractmethod
    def get_hash(self, key: str, *, group: str | None = None) -> dict[str, bytes]:
        """Read a metadata hash staged with `Transaction.put_hash`.

        Args:
            key: namespace-relative key.
            group: the commit group it was written in (locates the shard on a sharded backend;
                a single-node backend ignores it).
        """

    def get_hash_fields(
        self, key: str, fields: Sequence[str], *, group: str | None = None
    ) -> list[bytes | None]:
        """Selected fields of a metadata hash, in the order asked (None where absent).

        Backends override this with a single batched read; the default reads the whole hash.
        """
        whole = self.get_hash(key, group=group)
        return [whole.get(field) for field in fields]

    @abc.abstractmethod
    def get_blob(self, key: str, *, group: str | None = None) -> bytes | None:
        """Read a metadata blob staged with `Transaction.put_blob`, None when absent."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """True when the backend answers (readiness probes); never raises for an outage."""

    @abc.abstractmethod
    def store(self, config: TableConfig) -> EmbeddingStore:
        """The store of table `config.name` on this backend.

        Raises:
            ConfigError: the table exists here with another dimension or optimizer width.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection; stores opened on this backend stop working."""


class EmbeddingStore(abc.ABC):
    """One embedding table on a `TableBackend`. Every method is batched.

    Attributes:
        config: the table.
        backend: where its rows live; its transactions carry this store's writes.
        optimizer: the table's per-row optimizer.
        clock: wall clock (unix seconds) for wall time and TTL deadlines.
    """

    config: TableConfig
    backend: TableBackend
    optimizer: Optimizer
    clock: Callable[[], float]

    @abc.abstractmethod
    def lookup(self, ids: IdArray) -> LookupResult:
        """Vectors for `ids` (`(B,)`, duplicates allowed), default vector where no row.

        Args:
            ids: `(B,)` uint64.

        Returns:
            `LookupResult` with `(B, D)` vectors and `(B,)` exists.
        """

    @abc.abstractmethod
    def read_rows(self, ids: IdArray) -> Rows:
        """Full rows for the ids of `ids` that have one, in the order asked (missing skipped)."""

    @abc.abstractmethod
    def pull(self, ids: IdArray) -> Pulled:
        """Read what a training step needs for unique `ids` (`(U,)`)."""

    def push(
        self,
        pulled: Pulled,
        grads: FloatArray,
        occurrences: npt.NDArray[np.int64],
        event_time: npt.NDArray[np.float64],
        txn: Transaction | None = None,
    ) -> UpdateResult:
        """Apply the admission filter and optimizer, and stage the new rows.

        The plan (filter, optimizer step, metadata) is computed here, once for every backend;
        `_stage_push` writes it in the backend's terms.

        Args:
            pulled: what `pull` returned for these ids.
            grads: `(U, D)` float32 gradients, already summed over duplicates of each id.
            occurrences: `(U,)` how many times each id occurred in the batch (filter input).
            event_time: `(U,)` latest event time (unix seconds) of each id in the batch.
            txn: stage into this transaction (from this store's backend); None commits
                right away.

        Returns:
            What was written, created and filtered.
        """
        now = self.clock()
        plan = plan_update(
            self.config,
            self.optimizer,
            pulled,
            grads=grads,
            occurrences=occurrences,
            event_time=event_time,
            now=now,
        )
        own = txn if txn is not None else self.backend.transaction()
        batch_time = float(np.max(event_time)) if len(event_time) else 0.0
        self._stage_push(own, plan, pulled, batch_time, now)
        if txn is None:
            self._commit("push", own)
        return UpdateResult(
            written=plan.ids, created=int(plan.created.sum()), filtered=plan.filtered
        )

    @abc.abstractmethod
    def _stage_push(
        self, txn: Transaction, plan: UpdatePlan, pulled: Pulled, batch_time: float, now: float
    ) -> None:
        """Stage `plan` (rows, expiry index, pending counts, feed entry, counters) into `txn`.

        Args:
            txn: a transaction of this store's backend (`TypeError` otherwise).
            plan: the rows and counters `push` computed.
            pulled: what `pull` returned for these ids (backends may carry read-time extras).
            batch_time: latest event time of the batch (0 for an empty batch).
            now: wall-clock time of the push.
        """

    def _commit(self, op: str, txn: Transaction) -> None:
        """Commit a transaction this store opened itself for `op`."""
        txn.commit()

    def apply_gradients(
        self,
        ids: IdArray,
        grads: FloatArray,
        event_time: float,
        txn: Transaction | None = None,
    ) -> UpdateResult:
        """Pull, sum duplicate gradients (as PyTorch does for sparse gradients), push.

        Args:
            ids: `(B,)` uint64, duplicates allowed.
            grads: `(B, D)` float32.
            event_time: event time (unix seconds) of this update.
            txn: stage into this transaction; None commits right away.
        """
        unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        summed = np.zeros((unique.shape[0], grads.shape[1]), dtype=np.float32)
        np.add.at(summed, inverse, grads.astype(np.float32, copy=False))
        pulled = self.pull(unique)
        times = np.full(unique.shape[0], event_time, dtype=np.float64)
        return self.push(pulled, summed, counts.astype(np.int64), times, txn)

    @abc.abstractmethod
    def expire(self, watermark: float) -> IdArray:
        """Remove rows (event-time clock) not updated within `expire_after` of `watermark`.

        Wall-clock tables expire by themselves; for them this only reports ids whose rows
        have gone since the last call, so the change feed carries their tombstones.

        Returns:
            `(E,)` uint64 ids removed.
        """

    @abc.abstractmethod
    def stats(self) -> TableStats:
        """Row count, bytes used and lifetime counters."""

    @abc.abstractmethod
    def export(self, batch_size: int = 4096) -> Iterator[Rows]:
        """Every row, in batches (for snapshots and index builds)."""

    @abc.abstractmethod
    def import_rows(self, rows: Rows) -> None:
        """Write `rows` as they are (restore); announced on the change feed."""

    @abc.abstractmethod
    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> list[Change]:
        """Change-feed entries after `cursor` ("0" for the oldest kept).

        Args:
            cursor: the `cursor` of the last entry already handled, or "0".
            count: at most this many entries.
            block_ms: wait up to this long for a first entry; None returns at once.
        """

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every row, counter and feed entry of this table."""
