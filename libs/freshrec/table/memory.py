"""The in-memory reference store: real code, arrays in one process, used by tests and tools.

Rows live in growable numpy arrays (vectors, optimizer slots, metadata) indexed by a dict from
id to slot. Several tables, metadata hashes, blobs and change feeds share one
`InMemoryTableBackend`, so one `InMemoryTransaction` can span several tables, as a Redis
MULTI/EXEC spans several keys: the backend is one shard (`Atomicity.BACKEND`). Behaviour
(admission, optimizers, expiry, feed) matches `RedisEmbeddingStore` bit for bit; the parity
suite checks it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from freshrec.errors import CommitConflict, ConfigError, InvalidInput
from freshrec.table.admission import keeps_counts
from freshrec.table.base import (
    Atomicity,
    Change,
    ChangeOp,
    EmbeddingStore,
    FloatArray,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableBackend,
    TableStats,
    Transaction,
)
from freshrec.table.config import TableConfig
from freshrec.table.expiry import event_cutoff, pending_generation, wall_deadline
from freshrec.table.optimizers import make_optimizer
from freshrec.table.update import COUNT_MAX, UpdatePlan, check_ids, fresh_rows

__all__ = ["InMemoryEmbeddingStore", "InMemoryTableBackend", "InMemoryTransaction"]

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024


@dataclass
class _Feed:
    entries: deque[tuple[int, ChangeOp, IdArray]]
    seq: int = 0


@dataclass
class _TableData:
    """Everything one table holds. Guarded by the backend's lock."""

    dim: int
    width: int
    vectors: FloatArray
    state: FloatArray
    event_time: npt.NDArray[np.float64]
    wall_time: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    index: dict[int, int] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)
    used: int = 0
    pending: dict[int, dict[int, int]] = field(default_factory=dict)
    pending_gen: int = 0
    created_total: int = 0
    filtered_total: int = 0
    expired_total: int = 0

    @classmethod
    def empty(cls, dim: int, width: int) -> _TableData:
        cap = _INITIAL_CAPACITY
        return cls(
            dim=dim,
            width=width,
            vectors=np.zeros((cap, dim), dtype=np.float32),
            state=np.zeros((cap, width), dtype=np.float32),
            event_time=np.zeros(cap, dtype=np.float64),
            wall_time=np.zeros(cap, dtype=np.float64),
            count=np.zeros(cap, dtype=np.int64),
        )

    def slots(self, ids: IdArray) -> npt.NDArray[np.int64]:
        found = list(map(self.index.get, ids.tolist(), itertools.repeat(-1)))
        return np.array(found, dtype=np.int64).reshape(-1)

    def _grow(self, needed: int) -> None:
        cap = self.vectors.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        self.vectors = np.resize(self.vectors, (new_cap, self.dim))
        self.state = np.resize(self.state, (new_cap, self.width))
        self.event_time = np.resize(self.event_time, new_cap)
        self.wall_time = np.resize(self.wall_time, new_cap)
        self.count = np.resize(self.count, new_cap)

    def upsert(self, ids: IdArray) -> npt.NDArray[np.int64]:
        """Slots for `ids`, allocating rows for those without one, `(N,)` int64."""
        slots = self.slots(ids)
        missing = np.flatnonzero(slots < 0)
        if missing.size:
            reuse = min(len(self.free), int(missing.size))
            fresh = int(missing.size) - reuse
            taken = [self.free.pop() for _ in range(reuse)]
            self._grow(self.used + fresh)
            new_slots = np.array(taken + list(range(self.used, self.used + fresh)), dtype=np.int64)
            self.used += fresh
            slots[missing] = new_slots
            self.index.update(zip(ids[missing].tolist(), new_slots.tolist(), strict=True))
        return slots

    def remove(self, ids: IdArray) -> None:
        for i in ids.tolist():
            slot = self.index.pop(i, None)
            if slot is not None:
                self.free.append(slot)

    def live_slots(self) -> tuple[IdArray, npt.NDArray[np.int64]]:
        ids = np.fromiter(self.index.keys(), dtype=np.uint64, count=len(self.index))
        slots = np.fromiter(self.index.values(), dtype=np.int64, count=len(self.index))
        return ids, slots


class InMemoryTableBackend(TableBackend):
    """Tables, metadata and change feeds of one process, behind one lock.

    Stores opened on the same backend see each other's metadata and can share transactions;
    every commit is atomic across all of them (`Atomicity.BACKEND`), whatever its group.

    Args:
        namespace: a label only (nothing else shares this process's registry).
        clock: wall clock (unix seconds) handed to the stores `store` opens.
        feed_maxlen: change-feed entries each table keeps (oldest dropped first).
    """

    atomicity = Atomicity.BACKEND

    def __init__(
        self,
        namespace: str = "freshrec",
        *,
        clock: Callable[[], float] = time.time,
        feed_maxlen: int = 100_000,
    ) -> None:
        self.namespace = namespace
        self.clock = clock
        self.feed_maxlen = feed_maxlen
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.hashes: dict[str, dict[str, bytes]] = {}
        # a blob written by ranges is kept as a bytearray and edited in place: a range write
        # costs its own length, not the blob's (the trainer's frequency buckets, dedup rings)
        self.blobs: dict[str, bytes | bytearray] = {}
        self.tables: dict[str, _TableData] = {}
        self.feeds: dict[str, _Feed] = {}

    def transaction(
        self, group: str | None = None, *, writer: str | None = None
    ) -> InMemoryTransaction:
        return InMemoryTransaction(self, group)

    def get_hash(self, key: str, *, group: str | None = None) -> dict[str, bytes]:
        with self.lock:
            return dict(self.hashes.get(key, {}))

    def get_hash_fields(
        self, key: str, fields: Sequence[str], *, group: str | None = None
    ) -> list[bytes | None]:
        with self.lock:
            whole = self.hashes.get(key, {})
            return [whole.get(field) for field in fields]

    def get_blob(self, key: str, *, group: str | None = None) -> bytes | None:
        with self.lock:
            blob = self.blobs.get(key)
            return None if blob is None else bytes(blob)

    def ping(self) -> bool:
        return True

    def store(self, config: TableConfig) -> InMemoryEmbeddingStore:
        return InMemoryEmbeddingStore(config, self, clock=self.clock, feed_maxlen=self.feed_maxlen)

    def close(self) -> None:
        # Nothing to release: the registry lives as long as something references it.
        return None

    def table(self, config: TableConfig, width: int, feed_maxlen: int) -> _TableData:
        """The data of table `config.name`, created empty on first use.

        Raises:
            ConfigError: the table exists with another dimension or optimizer width.
        """
        with self.lock:
            data = self.tables.get(config.name)
            if data is None:
                data = _TableData.empty(config.dim, width)
                self.tables[config.name] = data
                self.feeds[config.name] = _Feed(entries=deque(maxlen=feed_maxlen))
            elif (data.dim, data.width) != (config.dim, width):
                raise ConfigError(
                    f"table {config.name!r} exists with dim {data.dim} and {data.width} "
                    f"optimizer slots; config asks for dim {config.dim} and {width}"
                )
            return data

    def append_feed(self, table: str, op: ChangeOp, ids: IdArray) -> None:
        """Append one change-feed entry (call with the lock held)."""
        feed = self.feeds[table]
        feed.seq += 1
        feed.entries.append((feed.seq, op, ids.copy()))


def _to_bytes(value: bytes | str | int | float) -> bytes:
    # Redis stores every hash value as bytes; mirror its conversions so both stores read alike.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        raise InvalidInput("booleans are not valid hash values; use 0/1")
    if isinstance(value, int):
        return str(value).encode()
    return repr(float(value)).encode()


class InMemoryTransaction(Transaction):
    """Staged writes on an `InMemoryTableBackend`, applied under its lock at commit."""

    def __init__(self, backend: InMemoryTableBackend, group: str | None = None) -> None:
        self.backend = backend
        self.group = group
        self._ops: list[Callable[[], None]] = []
        self._expect: list[tuple[str, dict[str, int | None]]] = []

    def stage(self, op: Callable[[], None]) -> None:
        """Stage a write to run, under the backend's lock, at commit."""
        self._ops.append(op)

    def put_hash(self, key: str, mapping: Mapping[str, bytes | str | int | float]) -> None:
        values = {k: _to_bytes(v) for k, v in mapping.items()}

        def op() -> None:
            self.backend.hashes.setdefault(key, {}).update(values)

        self.stage(op)

    def put_blob(self, key: str, value: bytes) -> None:
        data = bytes(value)

        def op() -> None:
            self.backend.blobs[key] = data

        self.stage(op)

    def put_blob_range(self, key: str, start: int, data: bytes) -> None:
        if start < 0:
            raise InvalidInput("a blob range starts at byte 0 or later")
        chunk = bytes(data)

        def op() -> None:
            blob = self.backend.blobs.get(key, b"")
            if not isinstance(blob, bytearray):
                blob = self.backend.blobs[key] = bytearray(blob)
            if len(blob) < start + len(chunk):
                blob.extend(bytes(start + len(chunk) - len(blob)))
            blob[start : start + len(chunk)] = chunk

        self.stage(op)

    def expect_hash(self, key: str, fields: Mapping[str, int | None]) -> None:
        if fields:
            self._expect.append((key, dict(fields)))

    def commit(self) -> None:
        ops, self._ops = self._ops, []
        expected, self._expect = self._expect, []
        with self.backend.changed:
            for key, fields in expected:
                stored = self.backend.hashes.get(key, {})
                for field, want in fields.items():
                    raw = stored.get(field)
                    have = None if raw is None else int(raw)
                    if have != want:
                        raise CommitConflict(
                            f"{key} field {field} is {have}, this commit expected {want}"
                        )
            for op in ops:
                op()
            self.backend.changed.notify_all()

    def discard(self) -> None:
        self._ops = []
        self._expect = []


class InMemoryEmbeddingStore(EmbeddingStore):
    """One table held in process memory.

    Args:
        config: the table.
        backend: shared registry; a private one when None.
        clock: wall clock (unix seconds); tests may pass their own.
        feed_maxlen: change-feed entries kept (oldest dropped first).
    """

    def __init__(
        self,
        config: TableConfig,
        backend: InMemoryTableBackend | None = None,
        *,
        clock: Callable[[], float] = time.time,
        feed_maxlen: int = 100_000,
    ) -> None:
        self.config = config
        self.backend: InMemoryTableBackend = (
            backend if backend is not None else InMemoryTableBackend()
        )
        self.clock = clock
        self.optimizer = make_optimizer(config.optimizer)
        self.width = self.optimizer.state_width(config.dim)
        self._feed_maxlen = feed_maxlen
        self.backend.table(config, self.width, feed_maxlen)

    @property
    def _table(self) -> _TableData:
        # clear() swaps the table's data; always go through the registry.
        return self.backend.tables[self.config.name]

    # ---- reads -------------------------------------------------------------------------

    def _visible(self, data: _TableData, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        found = slots >= 0
        expiry = self.config.expiry
        if expiry is not None and expiry.clock == "wall" and found.any():
            deadline = wall_deadline(data.wall_time[slots[found]], expiry)
            alive = np.zeros_like(found)
            alive[found] = self.clock() < deadline
            return alive
        return found

    def lookup(self, ids: IdArray) -> LookupResult:
        ids = check_ids(ids)
        with self.backend.lock:
            data = self._table
            slots = self._slots_visible(data, ids)
            exists = slots >= 0
            vectors = np.empty((ids.shape[0], self.config.dim), dtype=np.float32)
            vectors[exists] = data.vectors[slots[exists]]
        if not exists.all():
            missing = ~exists
            vectors[missing], _ = fresh_rows(self.config, self.optimizer, ids[missing])
        return LookupResult(vectors=vectors, exists=exists)

    def _slots_visible(self, data: _TableData, ids: IdArray) -> npt.NDArray[np.int64]:
        slots = data.slots(ids)
        return np.where(self._visible(data, slots), slots, -1)

    def read_rows(self, ids: IdArray) -> Rows:
        ids = check_ids(ids)
        with self.backend.lock:
            data = self._table
            slots = self._slots_visible(data, ids)
            keep = slots >= 0
            return self._rows(data, ids[keep], slots[keep])

    @staticmethod
    def _rows(data: _TableData, ids: IdArray, slots: npt.NDArray[np.int64]) -> Rows:
        return Rows(
            ids=ids.copy(),
            vectors=data.vectors[slots].copy(),
            state=data.state[slots].copy(),
            event_time=data.event_time[slots].copy(),
            wall_time=data.wall_time[slots].copy(),
            count=data.count[slots].copy(),
        )

    def _read_generation(self, data: _TableData) -> int:
        expiry = self.config.expiry
        if expiry is None:
            return 0
        if expiry.clock == "event":
            return data.pending_gen
        return pending_generation(self.clock(), expiry)

    def pull(self, ids: IdArray) -> Pulled:
        ids = check_ids(ids, unique=True)
        n = ids.shape[0]
        with self.backend.lock:
            data = self._table
            slots = self._slots_visible(data, ids)
            exists = slots >= 0
            vectors = np.empty((n, self.config.dim), dtype=np.float32)
            state = np.empty((n, self.width), dtype=np.float32)
            count = np.zeros(n, dtype=np.int64)
            event_time = np.zeros(n, dtype=np.float64)
            rows = slots[exists]
            vectors[exists] = data.vectors[rows]
            state[exists] = data.state[rows]
            count[exists] = data.count[rows]
            event_time[exists] = data.event_time[rows]
            missing = ~exists
            if keeps_counts(self.config.admission) and missing.any():
                gen = self._read_generation(data)
                current = data.pending.get(gen, {})
                previous = data.pending.get(gen - 1, {})
                count[missing] = [current.get(i, previous.get(i, 0)) for i in ids[missing].tolist()]
        if missing.any():
            vectors[missing], state[missing] = fresh_rows(self.config, self.optimizer, ids[missing])
        return Pulled(
            ids=ids, vectors=vectors, state=state, exists=exists, count=count, event_time=event_time
        )

    # ---- writes ------------------------------------------------------------------------

    def _stage_push(
        self, txn: Transaction, plan: UpdatePlan, pulled: Pulled, batch_time: float, now: float
    ) -> None:
        if not isinstance(txn, InMemoryTransaction) or txn.backend is not self.backend:
            raise TypeError(
                "InMemoryEmbeddingStore needs a transaction from a store on the same backend"
            )
        txn.stage(lambda: self._apply(plan, batch_time, now))

    def _apply(self, plan: UpdatePlan, batch_time: float, now: float) -> None:
        data = self._table
        if plan.ids.size:
            slots = data.upsert(plan.ids)
            data.vectors[slots] = plan.vectors
            data.state[slots] = plan.state
            data.event_time[slots] = plan.event_time
            data.wall_time[slots] = plan.wall_time
            data.count[slots] = plan.count
            self.backend.append_feed(self.config.name, ChangeOp.UPSERT, plan.ids)
        data.created_total += int(plan.created.sum())
        data.filtered_total += plan.filtered
        if keeps_counts(self.config.admission):
            self._apply_pending(data, plan, batch_time, now)

    def _apply_pending(
        self, data: _TableData, plan: UpdatePlan, batch_time: float, now: float
    ) -> None:
        expiry = self.config.expiry
        if expiry is None:
            gen = 0
        elif expiry.clock == "event":
            gen = max(data.pending_gen, pending_generation(batch_time, expiry))
            data.pending_gen = gen
        else:
            gen = pending_generation(now, expiry)
        for old in [g for g in data.pending if g < gen - 1]:
            del data.pending[old]
        admitted = plan.ids[plan.created].tolist()
        for g in (gen, gen - 1):
            bucket = data.pending.get(g)
            if bucket:
                for i in admitted:
                    bucket.pop(i, None)
        if plan.pending_ids.size:
            data.pending.setdefault(gen, {}).update(
                zip(plan.pending_ids.tolist(), plan.pending_counts.tolist(), strict=True)
            )

    def import_rows(self, rows: Rows) -> None:
        ids = check_ids(rows.ids, unique=True)
        if rows.vectors.shape != (len(ids), self.config.dim) or rows.state.shape != (
            len(ids),
            self.width,
        ):
            raise InvalidInput(
                f"rows must have ({len(ids)}, {self.config.dim}) vectors and "
                f"({len(ids)}, {self.width}) state"
            )
        if not len(ids):
            return
        now = self.clock()
        with self.backend.changed:
            data = self._table
            created = int((data.slots(ids) < 0).sum())
            slots = data.upsert(ids)
            data.vectors[slots] = rows.vectors
            data.state[slots] = rows.state
            data.event_time[slots] = rows.event_time
            # A restore is a write: wall-clock expiry starts afresh.
            data.wall_time[slots] = now
            data.count[slots] = np.minimum(rows.count, COUNT_MAX)
            data.created_total += created
            self.backend.append_feed(self.config.name, ChangeOp.UPSERT, ids)
            self.backend.changed.notify_all()

    def expire(self, watermark: float) -> IdArray:
        expiry = self.config.expiry
        if expiry is None:
            return np.zeros(0, dtype=np.uint64)
        with self.backend.changed:
            data = self._table
            ids, slots = data.live_slots()
            if expiry.clock == "event":
                gone = data.event_time[slots] < event_cutoff(watermark, expiry)
                horizon = min(pending_generation(watermark, expiry), data.pending_gen)
                for old in [g for g in data.pending if g < horizon - 1]:
                    del data.pending[old]
            else:
                gone = self.clock() >= wall_deadline(data.wall_time[slots], expiry)
            removed = ids[gone]
            if removed.size:
                data.remove(removed)
                data.expired_total += int(removed.size)
                self.backend.append_feed(self.config.name, ChangeOp.DELETE, removed)
                self.backend.changed.notify_all()
        if removed.size:
            logger.info("table %s: expired %d rows", self.config.name, removed.size)
        return removed

    # ---- metadata, feed, bookkeeping ---------------------------------------------------

    def stats(self) -> TableStats:
        with self.backend.lock:
            data = self._table
            rows = len(data.index)
            row_bytes = 8 + 4 * (self.config.dim + self.width) + 8 + 8 + 8
            pending = sum(len(b) for b in data.pending.values())
            return TableStats(
                rows=rows,
                bytes=rows * row_bytes + pending * 16,
                created_total=data.created_total,
                filtered_total=data.filtered_total,
                expired_total=data.expired_total,
            )

    def export(self, batch_size: int = 4096) -> Iterator[Rows]:
        if batch_size < 1:
            raise InvalidInput("batch_size must be >= 1")
        with self.backend.lock:
            ids, _ = self._table.live_slots()
        for start in range(0, len(ids), batch_size):
            rows = self.read_rows(ids[start : start + batch_size])
            if len(rows):
                yield rows

    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> list[Change]:
        try:
            after = int(cursor)
        except ValueError as exc:
            raise InvalidInput(f"invalid change-feed cursor {cursor!r}") from exc
        deadline = time.monotonic() + (block_ms or 0) / 1000.0
        with self.backend.changed:
            while True:
                feed = self.backend.feeds[self.config.name]
                out = [
                    Change(cursor=str(seq), op=op, ids=ids.copy())
                    for seq, op, ids in feed.entries
                    if seq > after
                ][:count]
                remaining = deadline - time.monotonic()
                if out or block_ms is None or remaining <= 0:
                    return out
                self.backend.changed.wait(remaining)

    def clear(self) -> None:
        with self.backend.changed:
            self.backend.tables[self.config.name] = _TableData.empty(self.config.dim, self.width)
            # Sequence numbers keep growing so cursors handed out before stay valid.
            seq = self.backend.feeds[self.config.name].seq
            self.backend.feeds[self.config.name] = _Feed(
                entries=deque(maxlen=self._feed_maxlen), seq=seq
            )
