"""Fallback candidates for users without a row: popular and fresh items.

Follows the item table's change feed (its own cursor, beside the retrieval index): every
upsert entry counts once for each item it names, with exponential decay, so popularity tracks
what the trainer is updating now; items never seen before are also kept as "fresh".

The counts are kept with forward decay: an occurrence at time ``t`` adds
``exp(rate * (t - origin))`` to its item's weight, so an item's decayed count at ``now`` is its
weight times ``exp(-rate * (now - origin))``, a factor shared by every item. Ranking therefore
needs no per-item arithmetic, and a poll is a few numpy passes over the tracked items. (The
ranker polls from a background thread every 0.2 s; a Python loop over 200,000 tracked items
held the GIL for 75-225 ms per poll, long enough to stall requests on the event loop.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from prometheus_client import Gauge

from freshrec.table.base import ChangeOp, EmbeddingStore, FeedLag, IdArray

__all__ = ["POPULARITY_FEED_LAG", "PopularityTracker"]

POPULARITY_FEED_LAG = Gauge(
    "freshrec_ranker_popularity_feed_lag_seconds",
    "How far the fallback's popularity trails the item change feed: 0 while polls reach the "
    "end of the feed, else seconds since the last poll that did.",
)

# Weights are rebased to a new origin once the newest occurrence weighs this much (e^40),
# far below float64's range, so sums of many weights never overflow.
_REBASE_EXPONENT = 40.0


class PopularityTracker:
    """Decayed update counts per item, and the most recently created items."""

    def __init__(
        self,
        store: EmbeddingStore,
        half_life_s: float = 3600.0,
        max_items: int = 200_000,
        fresh_items: int = 200,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Track popularity from `store`'s change feed.

        Args:
            store: the item table.
            half_life_s: an occurrence counts half as much after this long.
            max_items: items kept when the tracked ones exceed it by a tenth; the least
                popular are forgotten.
            fresh_items: most recently created items kept as fresh candidates.
            clock: time source (seconds).
        """
        self._store = store
        self._rate = math.log(2) / half_life_s
        self._max_items = max_items
        self._fresh_cap = fresh_items
        self._clock = clock
        self._cursor = "0"
        self._origin: float | None = None
        # tracked items, sorted by id, and each one's forward-decayed weight
        self._ids: IdArray = np.zeros(0, dtype=np.uint64)
        self._weights: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)
        # oldest first; replaced, never mutated, so readers on other threads see whole arrays
        self._fresh: IdArray = np.zeros(0, dtype=np.uint64)
        self._top: IdArray = np.zeros(0, dtype=np.uint64)
        self._lag = FeedLag(clock)

    @property
    def tracked(self) -> int:
        """Items with a popularity count."""
        return int(self._ids.shape[0])

    def decayed_counts(self, ids: IdArray) -> npt.NDArray[np.float64]:
        """Each of `ids`' decayed occurrence count now (0 for untracked items), `(N,)`."""
        ids = np.asarray(ids, dtype=np.uint64)
        out = np.zeros(ids.shape[0], dtype=np.float64)
        if not self._ids.size or self._origin is None:
            return out
        pos = np.minimum(np.searchsorted(self._ids, ids), self._ids.size - 1)
        found = self._ids[pos] == ids
        decay = math.exp(-self._rate * (self._clock() - self._origin))
        out[found] = self._weights[pos[found]] * decay
        return out

    def feed_lag(self) -> float:
        """0 while polls reach the end of the feed, else seconds since the last that did."""
        return self._lag.seconds()

    def drain(self, count: int = 500, max_polls: int = 10) -> int:
        """Poll until a poll reaches the end of the feed, at most `max_polls` times (so a
        long backlog is read in steps and the caller's other work goes on between them);
        returns how many entries were read."""
        read = 0
        for _ in range(max_polls):
            got = self.poll_once(count)
            read += got
            if got < count:
                break
        return read

    def poll_once(self, count: int = 500) -> int:
        """Apply up to `count` new change-feed entries; returns how many were read."""
        changes = self._store.changes(self._cursor, count=count)
        self._lag.polled(len(changes) < count)
        if not changes:
            return 0
        weight = self._weight_now()
        upserts: list[IdArray] = []
        for change in changes:
            self._cursor = change.cursor
            if change.op is ChangeOp.DELETE:
                # entries apply in feed order: what was upserted before the delete counts first
                self._count(upserts, weight)
                upserts = []
                self._forget(np.asarray(change.ids, dtype=np.uint64))
            else:
                upserts.append(np.asarray(change.ids, dtype=np.uint64))
        self._count(upserts, weight)
        self._prune()
        self._top = self._rank()
        return len(changes)

    def candidates(self, n: int) -> IdArray:
        """Up to `n` fallback items: the freshest few first, then the most popular."""
        fresh = self._fresh[::-1][: max(1, n // 5)]
        merged = np.concatenate([fresh, self._top])
        _, first = np.unique(merged, return_index=True)
        return merged[np.sort(first)][:n]

    def _weight_now(self) -> float:
        """The weight of one occurrence now, rebasing every weight when it grows large."""
        now = self._clock()
        if self._origin is None:
            self._origin = now
        exponent = self._rate * (now - self._origin)
        if exponent > _REBASE_EXPONENT:
            self._weights = self._weights * math.exp(-exponent)
            self._origin, exponent = now, 0.0
        return math.exp(exponent)

    def _count(self, parts: list[IdArray], weight: float) -> None:
        """Add `weight` per occurrence of each id in `parts`; new ids become fresh."""
        if not parts:
            return
        ids = np.concatenate(parts)
        if not ids.size:
            return
        unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
        pos = np.searchsorted(self._ids, unique)
        known = pos < self._ids.size
        known[known] = self._ids[pos[known]] == unique[known]
        self._weights[pos[known]] += counts[known] * weight  # unique ids: no repeated slot
        new = ~known
        if not new.any():
            return
        # `unique` is sorted, so the new ids go in at non-decreasing positions in one pass
        self._ids = np.insert(self._ids, pos[new], unique[new])
        self._weights = np.insert(self._weights, pos[new], counts[new] * weight)
        # in feed order; only the newest can stay fresh
        created = unique[new][np.argsort(first[new], kind="stable")][-self._fresh_cap :]
        older = self._fresh[~np.isin(self._fresh, created)]
        self._fresh = np.concatenate([older, created])[-self._fresh_cap :]

    def _forget(self, ids: IdArray) -> None:
        keep = ~np.isin(self._ids, ids)
        self._ids, self._weights = self._ids[keep], self._weights[keep]
        self._fresh = self._fresh[~np.isin(self._fresh, ids)]

    def _order(self, keep: int) -> npt.NDArray[np.intp]:
        """Positions of the `keep` heaviest items, heaviest first (ties by id)."""
        n = int(self._weights.shape[0])
        part = np.argpartition(-self._weights, keep - 1)[:keep] if n > keep else np.arange(n)
        return part[np.lexsort((self._ids[part], -self._weights[part]))]

    def _rank(self, keep: int = 1000) -> IdArray:
        return self._ids[self._order(keep)]

    def _prune(self) -> None:
        # a tenth of slack, so a busy feed pays for a cut every few polls, not every one
        if self._ids.shape[0] <= self._max_items + self._max_items // 10:
            return
        kept = np.sort(self._order(self._max_items))
        self._ids, self._weights = self._ids[kept], self._weights[kept]
