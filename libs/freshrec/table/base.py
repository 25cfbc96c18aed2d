"""The embedding-table seam: one interface, batched operations only.

A table maps full 64-bit ids to rows (vector, optimizer state, metadata). Every operation
takes a whole batch of ids; implementations never do one round trip per id.

Training goes through `pull` and `push`:

1. `pull(unique_ids)` reads the rows the batch needs (vector, optimizer state, occurrence
   counts) — or the deterministic initial vector for ids without a row.
2. The caller runs forward/backward and sums gradients per unique id.
3. `push(pulled, grads, occurrences, event_time, txn=...)` applies the table's admission
   filter and optimizer and stages the new rows into a `Transaction`, together with the
   change-feed entry for the touched ids. Whatever else the caller staged in the same
   transaction (consumer offsets, a trainer checkpoint) becomes visible atomically with them.

Serving goes through `lookup` (vectors only) and `read_rows` (full rows, for operators).

The change feed: every committed write that creates, updates or removes rows appends one
entry (op, ids) to the table's feed, in the same transaction; the retrieval index follows it
with `changes(cursor)`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt

from freshrec.table.config import TableConfig

__all__ = [
    "Change",
    "ChangeOp",
    "EmbeddingStore",
    "FloatArray",
    "IdArray",
    "LookupResult",
    "Pulled",
    "Rows",
    "TableStats",
    "Transaction",
    "UpdateResult",
]

IdArray = npt.NDArray[np.uint64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LookupResult:
    """Vectors for a batch of ids, in the order asked.

    Attributes:
        vectors: `(B, D)` float32; the table's default vector where `exists` is False.
        exists: `(B,)` bool; True where a row exists (admitted and not expired).
    """

    vectors: FloatArray
    exists: npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Rows:
    """Full rows: what a snapshot, an export or an operator sees.

    Attributes:
        ids: `(N,)` uint64.
        vectors: `(N, D)` float32.
        state: `(N, S)` float32 optimizer slots (`S = optimizer.state_width(D)`; 0 for SGD).
        event_time: `(N,)` float64, event time (unix seconds) of the last update.
        wall_time: `(N,)` float64, wall-clock time (unix seconds) of the last write.
        count: `(N,)` int64, occurrences seen (including those before admission).
    """

    ids: IdArray
    vectors: FloatArray
    state: FloatArray
    event_time: npt.NDArray[np.float64]
    wall_time: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def take(self, keep: npt.NDArray[np.bool_]) -> Rows:
        """The rows where `keep` is true, in order."""
        return Rows(
            ids=self.ids[keep],
            vectors=self.vectors[keep],
            state=self.state[keep],
            event_time=self.event_time[keep],
            wall_time=self.wall_time[keep],
            count=self.count[keep],
        )

    @classmethod
    def concat(cls, parts: Sequence[Rows], dim: int, state_width: int = 0) -> Rows:
        """`parts` one after the other (no rows of width `dim` / `state_width` when empty)."""
        if not parts:
            return cls(
                ids=np.zeros(0, dtype=np.uint64),
                vectors=np.zeros((0, dim), dtype=np.float32),
                state=np.zeros((0, state_width), dtype=np.float32),
                event_time=np.zeros(0, dtype=np.float64),
                wall_time=np.zeros(0, dtype=np.float64),
                count=np.zeros(0, dtype=np.int64),
            )
        return cls(
            ids=np.concatenate([p.ids for p in parts]),
            vectors=np.concatenate([p.vectors for p in parts]),
            state=np.concatenate([p.state for p in parts]),
            event_time=np.concatenate([p.event_time for p in parts]),
            wall_time=np.concatenate([p.wall_time for p in parts]),
            count=np.concatenate([p.count for p in parts]),
        )


@dataclass(frozen=True)
class Pulled:
    """Rows read for one training step, for `U` unique ids.

    Attributes:
        ids: `(U,)` uint64, unique.
        vectors: `(U, D)` float32; the deterministic initial vector where no row exists.
        state: `(U, S)` float32 optimizer slots (zeros / initial values where no row exists).
        exists: `(U,)` bool; a row exists now.
        count: `(U,)` int64 occurrences counted so far (counting filter), 0 when unknown.
        event_time: `(U,)` float64 event time of the last update (0 where no row).
    """

    ids: IdArray
    vectors: FloatArray
    state: FloatArray
    exists: npt.NDArray[np.bool_]
    count: npt.NDArray[np.int64]
    event_time: npt.NDArray[np.float64]


@dataclass(frozen=True)
class UpdateResult:
    """What a `push` staged.

    Attributes:
        written: `(W,)` uint64 ids whose rows were written (created or updated).
        created: how many of `written` are new rows.
        filtered: ids whose update was dropped because the admission filter refused them.
    """

    written: IdArray
    created: int
    filtered: int


@dataclass(frozen=True)
class TableStats:
    """Counters and sizes of one table (counters since the table was created)."""

    rows: int
    bytes: int
    created_total: int
    filtered_total: int
    expired_total: int


class ChangeOp(StrEnum):
    """What a change-feed entry says about its ids."""

    UPSERT = "upsert"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    """One change-feed entry: `ids` were upserted or deleted; `cursor` resumes after it."""

    cursor: str
    op: ChangeOp
    ids: IdArray


class Transaction(abc.ABC):
    """Writes staged here become visible together, or not at all.

    Use as a context manager: leaving the block normally commits; an exception discards.
    A transaction from one store can carry writes of any store of the same backend (same
    Redis server, same in-memory registry), so one commit can span several tables.
    """

    @abc.abstractmethod
    def put_hash(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None:
        """Stage setting fields of the metadata hash `key` (namespace-relative)."""

    @abc.abstractmethod
    def put_blob(self, key: str, value: bytes) -> None:
        """Stage setting the metadata blob `key` (namespace-relative)."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make every staged write visible atomically."""

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


class EmbeddingStore(abc.ABC):
    """One embedding table. Every method is batched."""

    config: TableConfig

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

    @abc.abstractmethod
    def push(
        self,
        pulled: Pulled,
        grads: FloatArray,
        occurrences: npt.NDArray[np.int64],
        event_time: npt.NDArray[np.float64],
        txn: Transaction | None = None,
    ) -> UpdateResult:
        """Apply the admission filter and optimizer, and stage the new rows.

        Args:
            pulled: what `pull` returned for these ids.
            grads: `(U, D)` float32 gradients, already summed over duplicates of each id.
            occurrences: `(U,)` how many times each id occurred in the batch (filter input).
            event_time: `(U,)` latest event time (unix seconds) of each id in the batch.
            txn: stage into this transaction; None commits right away.

        Returns:
            What was written, created and filtered.
        """

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
    def transaction(self) -> Transaction:
        """A new transaction on this store's backend."""

    @abc.abstractmethod
    def get_hash(self, key: str) -> dict[str, bytes]:
        """Read a metadata hash staged with `Transaction.put_hash`."""

    def get_hash_fields(self, key: str, fields: Sequence[str]) -> list[bytes | None]:
        """Selected fields of a metadata hash, in the order asked (None where absent).

        Backends override this with a single batched read; the default reads the whole hash.
        """
        whole = self.get_hash(key)
        return [whole.get(field) for field in fields]

    @abc.abstractmethod
    def get_blob(self, key: str) -> bytes | None:
        """Read a metadata blob staged with `Transaction.put_blob`, None when absent."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every row, counter and feed entry of this table."""
