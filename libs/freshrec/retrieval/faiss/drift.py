"""Drift checks of a live IVF index: list imbalance and a sampled recall probe.

Upserts are assigned to the centroids the index was trained with. When the catalog moves
(items re-trained towards new tastes, new items in a new region), those centroids describe
it poorly: items crowd into a few lists (searches slow down) and a query's nearest
centroids no longer hold its best items (recall falls). Each time `drift_check_fraction`
of the trained size has changed, the retriever runs a check in a background thread:

- **imbalance**: FAISS's imbalance factor of the list sizes (1 when every list is equally
  full) against the value right after training; above `max_imbalance_growth` times it the
  index is retrained;
- **recall probe**: the last `probe_queries` real queries (one kept per search call) are
  searched with the serving `nprobe` and with every list (exact); a recall@`probe_k` more
  than `max_recall_drop` below the first probe after the last training retrains the index
  (relative, because the recall a given `nprobe` reaches depends on the data: a retrain
  restores what drift took, not what a small `nprobe` never had).

Both read the index under the shared lock, so searches go on meanwhile.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from freshrec.retrieval.config import IvfConfig
from freshrec.retrieval.faiss.ivf import IvfIndex
from freshrec.retrieval.metrics import INDEX_LIST_IMBALANCE, INDEX_PROBE_RECALL
from freshrec.table.base import FloatArray

__all__ = ["DriftCheck", "DriftWatch"]

# Probe queries searched per hold of the shared lock (an exact pass over a million items
# costs about 5 ms per query on two cores).
_PROBE_CHUNK = 4


@dataclass(frozen=True)
class DriftCheck:
    """The outcome of one check.

    Attributes:
        at: `time.time()` when it finished.
        imbalance_growth: list imbalance factor over its value right after training.
        recall: the probe's recall@probe_k, None without recent queries.
        baseline_recall: the first probe's recall after the last training.
        reason: `imbalance` or `recall` when the index is to be retrained, else None.
    """

    at: float
    imbalance_growth: float
    recall: float | None
    baseline_recall: float | None
    reason: str | None


class DriftWatch:
    """Counts changes since the last check and keeps recent queries for the recall probe.

    Args:
        config: the IVF knobs (`drift_check_fraction`, `max_imbalance_growth`,
            `probe_queries`, `probe_k`, `max_recall_drop`).
        name: the `index` label of the gauges.
    """

    def __init__(self, config: IvfConfig, name: str) -> None:
        self.config = config
        self._name = name
        self._changes = 0
        self._queries: collections.deque[FloatArray] = collections.deque(
            maxlen=max(config.probe_queries, 1)
        )
        self._lock = threading.Lock()
        self.checks = 0
        self.baseline_recall: float | None = None
        """The first probe's recall after the last training (None until it ran)."""

    def remember(self, queries: FloatArray) -> None:
        """Keep the first of `(Q, D)` queries for the probe (a copy; cheap per call)."""
        if self.config.probe_queries > 0 and queries.shape[0]:
            self._queries.append(queries[0].copy())

    def note_changes(self, n: int, trained_size: int) -> bool:
        """Count `n` changed ids; True when a check is due (the counter restarts)."""
        fraction = self.config.drift_check_fraction
        if fraction <= 0:
            return False
        with self._lock:
            self._changes += n
            if self._changes < fraction * max(trained_size, 1):
                return False
            self._changes = 0
            return True

    def reset(self) -> None:
        """Forget the changes counted and the recall baseline (a fresh index was swapped in)."""
        with self._lock:
            self._changes = 0
            self.baseline_recall = None

    def check(
        self, structure: IvfIndex, reading: Callable[[], AbstractContextManager[None]]
    ) -> DriftCheck:
        """Measure `structure`, holding `reading()` (the retriever's shared lock) only for
        short steps so that a waiting writer, and the searches queued behind it, are not
        held up for a whole probe."""
        self.checks += 1
        with reading():
            growth = structure.imbalance() / max(structure.trained_imbalance, 1e-9)
        INDEX_LIST_IMBALANCE.labels(index=self._name).set(growth)
        recall = self._probe(structure, reading)
        reason = None
        if recall is not None and self.baseline_recall is None:
            self.baseline_recall = recall
        if growth > self.config.max_imbalance_growth:
            reason = "imbalance"
        elif (
            recall is not None
            and self.baseline_recall is not None
            and recall < self.baseline_recall - self.config.max_recall_drop
        ):
            reason = "recall"
        return DriftCheck(time.time(), growth, recall, self.baseline_recall, reason)

    def _probe(
        self, structure: IvfIndex, reading: Callable[[], AbstractContextManager[None]]
    ) -> float | None:
        queries = list(self._queries)
        k = min(self.config.probe_k, structure.size())
        if not queries or k < 1:
            return None
        hits: list[int] = []
        for start in range(0, len(queries), _PROBE_CHUNK):
            batch = np.ascontiguousarray(
                np.stack(queries[start : start + _PROBE_CHUNK]), dtype=np.float32
            )
            with reading():  # both searches see the same contents
                found, _ = structure.search(batch, k)
                exact, _ = structure.search(batch, k, nprobe=int(structure.index.nlist))
            hits.extend(
                np.intersect1d(f[f != -1], e[e != -1]).shape[0]
                for f, e in zip(found, exact, strict=True)
            )
        recall = float(np.mean(hits)) / k
        INDEX_PROBE_RECALL.labels(index=self._name).set(recall)
        return recall
