"""Item rows written into the table while the ranker bench measures: the catalog's own rows,
and a steady stream of rewrites from a thread (`ItemUpdates`), as a trainer's pushes."""

from __future__ import annotations

import threading
import time

import numpy as np

from freshrec.offline.bench.catalog import Catalog
from freshrec.offline.bench.retrieval import SEED
from freshrec.table.base import EmbeddingStore, Rows

__all__ = ["ItemUpdates", "item_rows"]

# Writes a second: each rewrites `rows_per_s / _WRITES_PER_S` rows in one push.
_WRITES_PER_S = 10


def item_rows(catalog: Catalog, picked: np.ndarray, vectors: np.ndarray, event_time: float) -> Rows:
    """Item rows for the catalog's items at positions `picked`, with `vectors` `(N, D)`, last
    seen at `event_time`, written now."""
    n = picked.shape[0]
    return Rows(
        ids=catalog.ids[picked],
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        state=np.full((n, vectors.shape[1]), 0.1, dtype=np.float32),
        event_time=np.full(n, event_time, dtype=np.float64),
        wall_time=np.full(n, time.time(), dtype=np.float64),
        count=np.ones(n, dtype=np.int64),
    )


class ItemUpdates:
    """Rewrites random catalog items' rows at a steady rate from a thread, as a trainer does.

    Every row keeps its item's direction with a little noise, so the index's answers stay
    those of the same catalog; the ranker's follower applies each write (index, row mirror,
    popularity) while it serves.
    """

    def __init__(
        self, store: EmbeddingStore, catalog: Catalog, rows_per_s: int, event_time: float
    ) -> None:
        """Rewrite `rows_per_s` rows a second of `catalog`'s items into `store` (as of
        `event_time`) while the `with` block runs; `rows` counts them."""
        self._store, self._catalog, self._event_time = store, catalog, event_time
        self._batch = max(1, rows_per_s // _WRITES_PER_S)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-item-updates", daemon=True)
        self.rows = 0

    def __enter__(self) -> ItemUpdates:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        rng = np.random.default_rng(SEED)
        items = self._catalog.items
        period = 1.0 / _WRITES_PER_S
        due = time.monotonic()
        while not self._stop.is_set():
            picked = rng.choice(items.shape[0], size=self._batch, replace=False)
            noise = rng.normal(0.0, 0.01, size=(self._batch, items.shape[1]))
            self._store.import_rows(
                item_rows(self._catalog, picked, items[picked] + noise, self._event_time)
            )
            self.rows += self._batch
            due += period
            self._stop.wait(max(0.0, due - time.monotonic()))
