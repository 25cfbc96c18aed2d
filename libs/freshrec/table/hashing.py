"""The hashing-trick baseline: ``id % buckets`` rows, shared by every id that collides.

Production tables are collisionless; this store exists only to measure what collisions cost
(offline evaluation compares the two on the same stream). It wraps any `EmbeddingStore` and
maps every id to its bucket before calling it, so colliding ids read, train and expire one
shared row. Gradients of colliding ids in one batch are summed into their bucket's row, as
PyTorch sums duplicate indices of a sparse gradient. It lives on the inner store's backend;
`open_tables(..., hashing_buckets=...)` builds it.

Everything the inner store reports (change feed, `expire`, `export`, `stats`) speaks of bucket
ids, not of the original ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from freshrec.errors import ConfigError
from freshrec.table.base import (
    Change,
    EmbeddingStore,
    FloatArray,
    IdArray,
    LookupResult,
    Pulled,
    Rows,
    TableStats,
    Transaction,
    UpdateResult,
)
from freshrec.table.update import UpdatePlan, check_ids

__all__ = ["CollisionStats", "HashingTrickStore"]


@dataclass(frozen=True)
class CollisionStats:
    """How much the ids pushed so far collide.

    Attributes:
        buckets: the modulus.
        ids_seen: distinct ids pushed.
        buckets_used: distinct buckets they fell into.
        colliding_ids: ids sharing their bucket with at least one other seen id.
    """

    buckets: int
    ids_seen: int
    buckets_used: int
    colliding_ids: int

    @property
    def collision_rate(self) -> float:
        """Share of seen ids whose row is shared with another id."""
        return self.colliding_ids / self.ids_seen if self.ids_seen else 0.0


class HashingTrickStore(EmbeddingStore):
    """A fixed-size ``id % buckets`` table behind the `EmbeddingStore` interface.

    Args:
        inner: the store holding the bucket rows.
        buckets: number of rows.
    """

    def __init__(self, inner: EmbeddingStore, buckets: int) -> None:
        if buckets < 1:
            raise ConfigError("buckets must be >= 1")
        self.inner = inner
        self.buckets = buckets
        self.config = inner.config
        self.backend = inner.backend
        self.optimizer = inner.optimizer
        self.clock = inner.clock
        self._modulus = np.uint64(buckets)
        self._seen: set[int] = set()

    def bucket_ids(self, ids: IdArray) -> IdArray:
        """The bucket of each id, `(B,)` uint64."""
        return check_ids(ids) % self._modulus

    def collision_stats(self) -> CollisionStats:
        """Collisions among the distinct ids pushed so far."""
        seen = np.fromiter(self._seen, dtype=np.uint64, count=len(self._seen))
        _, counts = np.unique(seen % self._modulus, return_counts=True)
        return CollisionStats(
            buckets=self.buckets,
            ids_seen=int(seen.shape[0]),
            buckets_used=int(counts.shape[0]),
            colliding_ids=int(counts[counts > 1].sum()),
        )

    def lookup(self, ids: IdArray) -> LookupResult:
        return self.inner.lookup(self.bucket_ids(ids))

    def read_rows(self, ids: IdArray) -> Rows:
        ids = check_ids(ids)
        buckets = ids % self._modulus
        unique = np.unique(buckets)
        rows = self.inner.read_rows(unique)
        pos = np.searchsorted(rows.ids, buckets)
        pos = np.minimum(pos, max(len(rows) - 1, 0))
        found = (rows.ids[pos] == buckets) if len(rows) else np.zeros(len(ids), dtype=np.bool_)
        return replace(rows.take(pos[found]), ids=ids[found])

    def pull(self, ids: IdArray) -> Pulled:
        ids = check_ids(ids, unique=True)
        unique, inverse = np.unique(ids % self._modulus, return_inverse=True)
        return self.inner.pull(unique).take(inverse, ids)

    def push(
        self,
        pulled: Pulled,
        grads: FloatArray,
        occurrences: npt.NDArray[np.int64],
        event_time: npt.NDArray[np.float64],
        txn: Transaction | None = None,
    ) -> UpdateResult:
        buckets = pulled.ids % self._modulus
        unique, first, inverse = np.unique(buckets, return_index=True, return_inverse=True)
        summed = np.zeros((unique.shape[0], grads.shape[1]), dtype=np.float32)
        np.add.at(summed, inverse, np.asarray(grads, dtype=np.float32))
        occ = np.zeros(unique.shape[0], dtype=np.int64)
        np.add.at(occ, inverse, np.asarray(occurrences, dtype=np.int64))
        times = np.full(unique.shape[0], -np.inf, dtype=np.float64)
        np.maximum.at(times, inverse, np.asarray(event_time, dtype=np.float64))
        shared = pulled.take(first, unique)
        result = self.inner.push(shared, summed, occ, times, txn)
        self._seen.update(pulled.ids.tolist())
        return UpdateResult(
            written=pulled.ids[np.isin(buckets, result.written)],
            created=result.created,
            filtered=result.filtered,
        )

    def _stage_push(
        self, txn: Transaction, plan: UpdatePlan, pulled: Pulled, batch_time: float, now: float
    ) -> None:
        # `push` maps ids to buckets and hands the whole update to the inner store's `push`,
        # which plans and stages it; a plan over unmapped ids has no place to go.
        raise NotImplementedError(
            "HashingTrickStore stages through its inner store's push, not a plan of its own"
        )

    def expire(self, watermark: float) -> IdArray:
        return self.inner.expire(watermark)

    def stats(self) -> TableStats:
        return self.inner.stats()

    def export(self, batch_size: int = 4096) -> Iterator[Rows]:
        return self.inner.export(batch_size)

    def import_rows(self, rows: Rows) -> None:
        self.inner.import_rows(rows)

    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> list[Change]:
        return self.inner.changes(cursor, count, block_ms)

    def clear(self) -> None:
        self.inner.clear()
        self._seen.clear()
