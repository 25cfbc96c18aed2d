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
  restores what drift took, not what a small `nprobe` never had); and a recall under the
  absolute floor `min_probe_recall` retrains too (reason `recall_floor`), which catches a
  recall falling towards a target before the relative drop is reached. So does a recall
  that, on its trend since the baseline, will be under the floor one training time from
  now (`projected_recall`): the old index serves until the retrain is swapped in, so it
  has to start that much before the floor is crossed. A floor retrain whose first probe
  is still under the floor shows that `nprobe` cannot reach it on this data: the floor is
  suspended (with a warning) until a probe reaches it again.

Besides the checks, `churn_due` says when `retrain_churn_fraction` of the trained size has
been upserted or removed since the last training (reason `churn`): centroids trained on a
catalog that has since been rewritten are retrained whatever the probe, which only sees
recent queries, measures.

Both read the index under the shared lock, so searches go on meanwhile. Right after a
retrain is swapped in, the retriever runs one check on the fresh index (when there are
queries to probe), so the baseline is the recall of the index as trained.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

from freshrec.retrieval.config import IvfConfig
from freshrec.retrieval.faiss.ivf import IvfIndex
from freshrec.retrieval.metrics import (
    INDEX_CHURN_SINCE_TRAINING,
    INDEX_LIST_IMBALANCE,
    INDEX_PROBE_RECALL,
)
from freshrec.table.base import FloatArray

__all__ = ["DriftCheck", "DriftWatch", "projected_recall"]

logger = logging.getLogger(__name__)

# The reason of a retrain started by the absolute recall floor.
FLOOR = "recall_floor"

# Probe queries searched per hold of the shared lock (an exact pass over a million items
# costs about 5 ms per query on two cores).
_PROBE_CHUNK = 4


def projected_recall(recall: float, baseline: float, elapsed_s: float, lead_s: float) -> float:
    """The probe's recall `lead_s` from now if it keeps falling as it has since the baseline.

    Not extrapolated further ahead than observed (`elapsed_s < lead_s` gives `recall`),
    so that the noise of a short window is not magnified; a rising recall is not
    projected upwards.

    Args:
        recall: the probe's recall now.
        baseline: its first value after the last training, `elapsed_s` ago.
        elapsed_s: seconds since the baseline probe.
        lead_s: how far ahead (the last training's duration).

    Returns:
        The projected recall, at most `recall`.
    """
    if lead_s <= 0 or elapsed_s < lead_s or recall >= baseline:
        return recall
    return recall - (baseline - recall) * lead_s / elapsed_s


@dataclass(frozen=True)
class DriftCheck:
    """The outcome of one check.

    Attributes:
        at: `time.time()` when it finished.
        imbalance_growth: list imbalance factor over its value right after training.
        recall: the probe's recall@probe_k, None without recent queries.
        baseline_recall: the first probe's recall after the last training.
        churn: ids upserted or removed since the last training, over the trained size.
        reason: `imbalance`, `recall` or `recall_floor` when the index is to be retrained,
            else None.
        floor_suspended: whether the recall floor is suspended (a floor retrain did not
            reach it).
    """

    at: float
    imbalance_growth: float
    recall: float | None
    baseline_recall: float | None
    churn: float
    reason: str | None
    floor_suspended: bool


class DriftWatch:
    """Counts changes since the last check and keeps recent queries for the recall probe.

    Args:
        config: the IVF knobs (`drift_check_fraction`, `max_imbalance_growth`,
            `probe_queries`, `probe_k`, `max_recall_drop`, `min_probe_recall`,
            `retrain_churn_fraction`).
        name: the `index` label of the gauges.
    """

    def __init__(self, config: IvfConfig, name: str) -> None:
        self.config = config
        self._name = name
        self._changes = 0  # since the last check
        self._churn = 0  # since the last training
        self._trained_for: str | None = None
        self._floor_suspended = False
        self._lead_s = 0.0  # how long the last training took
        self._baseline_at = 0.0
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
        with self._lock:
            self._churn += n
            if fraction <= 0:
                return False
            self._changes += n
            if self._changes < fraction * max(trained_size, 1):
                return False
            self._changes = 0
            return True

    def churn_due(self, trained_size: int) -> bool:
        """Whether `retrain_churn_fraction` of `trained_size` changed since the last training."""
        fraction = self.config.retrain_churn_fraction
        return fraction > 0 and self._churn >= fraction * max(trained_size, 1)

    def has_queries(self) -> bool:
        """Whether checks are on and the probe has queries to search."""
        return self.config.drift_check_fraction > 0 and bool(self._queries)

    def reset(self, trained_for: str | None = None, build_s: float = 0.0) -> None:
        """Forget the changes counted and the recall baseline (a fresh index was swapped in).

        Args:
            trained_for: the reason of the retrain swapped in; None for new contents
                (`replace`, `load`), which also lifts a suspended floor.
            build_s: how long building the fresh index took (the floor's lead time).
        """
        with self._lock:
            self._lead_s = build_s
            self._changes = 0
            self._churn = 0
            self.baseline_recall = None
            self._trained_for = trained_for
            if trained_for is None:
                self._floor_suspended = False

    def check(
        self, structure: IvfIndex, reading: Callable[[], AbstractContextManager[None]]
    ) -> DriftCheck:
        """Measure `structure`, holding `reading()` (the retriever's shared lock) only for
        short steps so that a waiting writer, and the searches queued behind it, are not
        held up for a whole probe."""
        self.checks += 1
        with reading():
            growth = structure.imbalance() / max(structure.trained_imbalance, 1e-9)
        churn = self._churn / max(structure.trained_size, 1)
        INDEX_LIST_IMBALANCE.labels(index=self._name).set(growth)
        INDEX_CHURN_SINCE_TRAINING.labels(index=self._name).set(churn)
        recall = self._probe(structure, reading)
        first = recall is not None and self.baseline_recall is None
        if first:
            self.baseline_recall, self._baseline_at = recall, time.time()
        reason = self._verdict(growth, recall, first=first)
        return DriftCheck(
            time.time(),
            growth,
            recall,
            self.baseline_recall,
            churn,
            reason,
            self._floor_suspended,
        )

    def _verdict(self, growth: float, recall: float | None, *, first: bool) -> str | None:
        """The retrain reason of a check, or None; `first`: the first probe since training."""
        config = self.config
        if growth > config.max_imbalance_growth:
            return "imbalance"
        if recall is None or self.baseline_recall is None:
            return None
        if recall < self.baseline_recall - config.max_recall_drop:
            return "recall"
        floor = config.min_probe_recall
        if recall >= floor:
            self._floor_suspended = False
            elapsed = time.time() - self._baseline_at
            ahead = projected_recall(recall, self.baseline_recall, elapsed, self._lead_s)
            return FLOOR if floor > 0 and ahead < floor else None
        if first and self._trained_for == FLOOR:
            if not self._floor_suspended:
                logger.warning(
                    "index %s: recall probe %.3f right after a retrain is still under "
                    "min_probe_recall %.3f: the serving nprobe cannot reach it on this data; "
                    "the floor is suspended until a probe reaches it (raise nprobe)",
                    self._name,
                    recall,
                    config.min_probe_recall,
                )
            self._floor_suspended = True
        return None if self._floor_suspended else FLOOR

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
