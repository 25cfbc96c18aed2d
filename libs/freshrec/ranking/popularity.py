"""Fallback candidates for users without a row: popular and fresh items.

Follows the item table's change feed (its own cursor, beside the retrieval index): every
upsert entry counts once for each item it names, with exponential decay, so popularity tracks
what the trainer is updating now; items never seen before are also kept as "fresh".
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from freshrec.table.base import ChangeOp, EmbeddingStore, IdArray

__all__ = ["PopularityTracker"]


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
        self._store = store
        self._decay = math.log(2) / half_life_s
        self._max_items = max_items
        self._fresh_cap = fresh_items
        self._clock = clock
        self._cursor = "0"
        self._scores: dict[int, tuple[float, float]] = {}
        self._fresh: OrderedDict[int, None] = OrderedDict()
        self._top: IdArray = np.zeros(0, dtype=np.uint64)

    def poll_once(self, count: int = 500) -> int:
        """Apply new change-feed entries; returns how many were read."""
        changes = self._store.changes(self._cursor, count=count)
        now = self._clock()
        for change in changes:
            self._cursor = change.cursor
            ids = [int(i) for i in change.ids]
            if change.op is ChangeOp.DELETE:
                for item in ids:
                    self._scores.pop(item, None)
                    self._fresh.pop(item, None)
                continue
            for item in ids:
                score, at = self._scores.get(item, (0.0, now))
                if item not in self._scores:
                    self._fresh[item] = None
                    if len(self._fresh) > self._fresh_cap:
                        self._fresh.popitem(last=False)
                self._scores[item] = (score * math.exp(-self._decay * (now - at)) + 1.0, now)
        if changes:
            self._prune()
            self._top = self._rank()
        return len(changes)

    def _value(self, item: int, now: float) -> float:
        score, at = self._scores[item]
        return score * math.exp(-self._decay * (now - at))

    def _rank(self, keep: int = 1000) -> IdArray:
        if not self._scores:
            return np.zeros(0, dtype=np.uint64)
        now = self._clock()
        items = np.fromiter(self._scores.keys(), dtype=np.uint64, count=len(self._scores))
        values = np.fromiter((self._value(int(i), now) for i in items), dtype=np.float64)
        order = np.argsort(-values, kind="stable")[:keep]
        return items[order]

    def _prune(self) -> None:
        if len(self._scores) <= self._max_items:
            return
        keep = set(int(i) for i in self._rank(keep=self._max_items))
        self._scores = {k: v for k, v in self._scores.items() if k in keep}

    def candidates(self, n: int) -> IdArray:
        """Up to `n` fallback items: the freshest few first, then the most popular."""
        fresh = np.fromiter(reversed(self._fresh), dtype=np.uint64, count=len(self._fresh))
        fresh = fresh[: max(1, n // 5)]
        merged = np.concatenate([fresh, self._top])
        _, first = np.unique(merged, return_index=True)
        return merged[np.sort(first)][:n]
