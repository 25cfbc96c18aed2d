"""`FaissRetriever`: one of the FAISS structures behind a lock, rebuilt in the background.

Concurrency: one reader-writer lock per retriever. Searches share it; `upsert`, `remove`,
`replace` and the swap of a rebuilt index take it exclusively. A structural rebuild copies
the current contents (briefly exclusive), builds and trains a fresh index in a background
thread without any lock, then replays the upserts/removals that arrived meanwhile (from a
journal) and swaps the new index in with one reference assignment. Searches keep using the
old index until that assignment, so they never see a half-built one.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from freshrec.errors import InvalidInput, SnapshotError
from freshrec.retrieval.base import (
    Retriever,
    SearchResult,
    check_ids,
    check_queries,
    check_upsert,
    exclusion_width,
    filter_excluded,
)
from freshrec.retrieval.config import FlatConfig, HnswConfig, IvfConfig, SplitConfig
from freshrec.retrieval.faiss.drift import DriftCheck, DriftWatch
from freshrec.retrieval.faiss.flat import FlatIndex
from freshrec.retrieval.faiss.hnsw import HnswIndex
from freshrec.retrieval.faiss.ivf import IvfIndex
from freshrec.retrieval.faiss.locks import ReadWriteLock
from freshrec.retrieval.faiss.split import SplitIndex, split_rebuild_reason
from freshrec.retrieval.faiss.structure import IndexStructure, Labels, to_ids, to_labels
from freshrec.retrieval.metrics import INDEX_REBUILDS
from freshrec.table.base import FloatArray, IdArray

__all__ = ["FaissRetriever", "RebuildEvent"]

logger = logging.getLogger(__name__)

# Journal entries replayed while holding the write lock at the end of a rebuild; longer
# backlogs are first replayed without the lock so that searches are not held up.
_FINAL_REPLAY_OPS = 64
# After a failed rebuild, wait this long before trying again (the old index keeps serving).
_RETRY_AFTER_FAILURE_S = 30.0


@dataclass(frozen=True)
class RebuildEvent:
    """A background rebuild that was swapped in.

    Attributes:
        reason: why it ran (the `reason` label of `freshrec_index_rebuilds_total`).
        started_at: `time.time()` when it started; the old index served until `swapped_at`.
        swapped_at: `time.time()` of the swap.
        items: items the fresh index held at the swap.
    """

    reason: str
    started_at: float
    swapped_at: float
    items: int


@dataclass(frozen=True)
class _Op:
    """An upsert (vectors set) or removal recorded while a rebuild runs."""

    labels: Labels
    vectors: FloatArray | None

    def apply(self, structure: IndexStructure) -> None:
        if self.vectors is None:
            structure.remove(self.labels)
        else:
            structure.upsert(self.labels, self.vectors)


class FaissRetriever(Retriever):
    """FAISS maximum-inner-product search that follows upserts and removals live.

    Args:
        dim: vector dimension `D`.
        config: which index structure (`flat`, `ivf`, `hnsw`) and its parameters.
        name: names this index in logs and in the `index` label of its metrics.
    """

    def __init__(
        self,
        dim: int,
        config: FlatConfig | IvfConfig | HnswConfig | SplitConfig | None = None,
        name: str = "item",
    ) -> None:
        if dim < 1:
            raise InvalidInput(f"dim must be >= 1, got {dim}")
        self._dim = dim
        self._config: FlatConfig | IvfConfig | HnswConfig | SplitConfig = config or FlatConfig()
        self._name = name
        self._lock = ReadWriteLock()
        self._structure = self._build(
            np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32)
        )
        self._version = 0
        # Bumped by replace/load: a rebuild that started from older contents is dropped.
        self._epoch = 0
        self._journal: list[_Op] | None = None
        self._rebuild_thread: threading.Thread | None = None
        self._rebuilds = 0
        self._retry_rebuild_at = 0.0
        self._closed = False
        self._drift = (
            DriftWatch(self._config, name) if isinstance(self._config, IvfConfig) else None
        )
        self._drift_reason: str | None = None
        self._check_thread: threading.Thread | None = None
        self._drift_checks: collections.deque[DriftCheck] = collections.deque(maxlen=256)
        self._rebuild_events: collections.deque[RebuildEvent] = collections.deque(maxlen=256)

    # -- introspection -------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension `D`."""
        return self._dim

    @property
    def config(self) -> FlatConfig | IvfConfig | HnswConfig | SplitConfig:
        """The structure this retriever was configured with."""
        return self._config

    @property
    def kind(self) -> str:
        """The configured structure: "faiss-flat", "faiss-ivf", "faiss-hnsw" or "faiss-split"."""
        return f"faiss-{self._config.type}"

    @property
    def version(self) -> int:
        """Bumps with every content change (see `Retriever.version`)."""
        return self._version

    @property
    def structure(self) -> str:
        """The index structure serving now: "flat", "ivf", "hnsw" or "split"."""
        return self._structure.kind

    @property
    def rebuilds(self) -> int:
        """Background rebuilds swapped in since this retriever was created."""
        return self._rebuilds

    @property
    def drift_checks(self) -> list[DriftCheck]:
        """The latest drift checks (IVF only; at most 256), oldest first."""
        return list(self._drift_checks)

    @property
    def rebuild_events(self) -> list[RebuildEvent]:
        """The latest background rebuilds swapped in (at most 256), oldest first."""
        return list(self._rebuild_events)

    @property
    def rebuilding(self) -> bool:
        """Whether a background rebuild is running."""
        thread = self._rebuild_thread
        return thread is not None and thread.is_alive()

    def __len__(self) -> int:
        with self._lock.read():
            return self._structure.size()

    def ids(self) -> IdArray:
        """Every id held, `(N,)` uint64."""
        with self._lock.read():
            labels = self._structure.labels()
        return to_ids(labels)

    def tune(self, *, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change search-time parameters of the live index (recall against latency).

        Args:
            nprobe: IVF lists scanned per query (`ivf`; the tail's for `split`).
            ef_search: HNSW candidate list size per query (`hnsw` only).

        Raises:
            InvalidInput: a parameter the configured structure does not have, or < 1.
        """
        with self._lock.write():
            config = self._config
            if nprobe is not None:
                if not isinstance(config, IvfConfig | SplitConfig) or nprobe < 1:
                    raise InvalidInput(f"nprobe={nprobe} does not apply to a {config.type} index")
                config = config.model_copy(update={"nprobe": nprobe})
                if isinstance(self._structure, IvfIndex | SplitIndex):
                    self._structure.nprobe = nprobe
            if ef_search is not None:
                if not isinstance(config, HnswConfig) or ef_search < 1:
                    raise InvalidInput(
                        f"ef_search={ef_search} does not apply to a {config.type} index"
                    )
                config = config.model_copy(update={"ef_search": ef_search})
                if isinstance(self._structure, HnswIndex):
                    self._structure.ef_search = ef_search
            self._config = config

    # -- mutations -----------------------------------------------------------------------

    def upsert(self, ids: IdArray, vectors: FloatArray) -> None:
        """Insert or replace `(N,)` ids with `(N, D)` vectors (see `Retriever.upsert`)."""
        id_arr, vec = check_upsert(ids, vectors, self._dim)
        if id_arr.shape[0] == 0:
            return
        labels = to_labels(id_arr)
        with self._lock.write():
            self._structure.upsert(labels, vec)
            if self._journal is not None:
                self._journal.append(_Op(labels, vec))
            self._version += 1
            self._note_changes(labels.shape[0])
            self._maybe_start_rebuild()

    def remove(self, ids: IdArray) -> int:
        """Remove `(N,)` ids; returns how many were held."""
        id_arr = check_ids(ids)
        if id_arr.shape[0] == 0:
            return 0
        labels = to_labels(id_arr)
        with self._lock.write():
            removed = self._structure.remove(labels)
            if self._journal is not None:
                self._journal.append(_Op(labels, None))
            self._version += 1
            self._note_changes(labels.shape[0])
            self._maybe_start_rebuild()
        return removed

    def replace(self, ids: IdArray, vectors: FloatArray) -> None:
        """Build a fresh index from `(N,)` ids and `(N, D)` vectors in the calling thread
        and swap it in; a background rebuild running meanwhile is dropped."""
        id_arr, vec = check_upsert(ids, vectors, self._dim)
        started = time.monotonic()
        structure = self._build(to_labels(id_arr), vec)
        self._install(structure, build_s=time.monotonic() - started)
        logger.info("index %s replaced: %d items, %s", self._name, len(id_arr), structure.kind)

    def _install(self, structure: IndexStructure, build_s: float = 0.0) -> None:
        with self._lock.write():
            self._structure = structure
            self._epoch += 1
            self._journal = None
            self._version += 1
            self._drift_reason = None
            if self._drift is not None:
                self._drift.reset(build_s=build_s)
            self._maybe_start_rebuild()

    # -- search --------------------------------------------------------------------------

    def search(
        self, queries: FloatArray, k: int, exclude: list[IdArray] | None = None
    ) -> SearchResult:
        """Top-k by inner product; `(Q, k)` ids and scores (see `Retriever.search`)."""
        q, excl = check_queries(queries, k, exclude, self._dim)
        n_queries = q.shape[0]
        if self._drift is not None:
            self._drift.remember(q)
        with self._lock.read():
            fetch = min(k + exclusion_width(excl), self._structure.size())
            if fetch > 0 and n_queries > 0:
                labels, scores = self._structure.search(q, fetch)
            else:
                labels = np.zeros((n_queries, 0), dtype=np.int64)
                scores = np.zeros((n_queries, 0), dtype=np.float32)
        valid = labels != -1
        return filter_excluded(to_ids(labels), scores, valid, k, excl)

    # -- persistence ---------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """`faiss.write_index` of the serving index to `path` (`SplitIndex.write` for a
        split one)."""
        with self._lock.read():
            if isinstance(self._structure, SplitIndex):
                self._structure.write(path)
            else:
                faiss.write_index(self._structure.index, str(path))

    def load(self, path: Path) -> None:
        """Replace the contents with an index written by `save`.

        Raises:
            SnapshotError: unreadable file, other dimension or metric, or a structure this
                retriever's config cannot serve (a `flat`/`ivf` snapshot is accepted by an
                `ivf` retriever, a `flat`/`split` one by a `split` retriever; otherwise the
                structure must match the config).
        """
        config = self._config
        if isinstance(config, SplitConfig) and path.exists() and SplitIndex.is_file(path):
            structure: IndexStructure = SplitIndex.read(path, self._dim, config.nprobe)
        else:
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise SnapshotError(f"cannot read FAISS index {path}: {exc}") from exc
            structure = self._adopt(index, path)
        self._install(structure)
        logger.info(
            "index %s loaded from %s: %d items, %s",
            self._name,
            path,
            structure.size(),
            structure.kind,
        )

    def _adopt(self, index: Any, path: Path) -> IndexStructure:
        if int(index.d) != self._dim:
            raise SnapshotError(f"{path} holds {index.d}-dimensional vectors, expected {self._dim}")
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise SnapshotError(f"{path} is not an inner-product index")
        structure: IndexStructure
        if isinstance(index, faiss.IndexIVFFlat):
            nprobe = self._config.nprobe if isinstance(self._config, IvfConfig) else 1
            structure = IvfIndex(index, self._dim, nprobe)
        elif isinstance(index, faiss.IndexIDMap2):
            inner = faiss.downcast_index(index.index)
            if isinstance(inner, faiss.IndexHNSWFlat):
                ef = self._config.ef_search if isinstance(self._config, HnswConfig) else 16
                structure = HnswIndex(index, self._dim, ef)
            elif isinstance(inner, faiss.IndexFlat):
                structure = FlatIndex(index, self._dim)
            else:
                raise SnapshotError(f"{path} holds an unsupported index {type(inner).__name__}")
        else:
            raise SnapshotError(f"{path} holds an unsupported index {type(index).__name__}")
        allowed = {"flat": {"flat"}, "ivf": {"flat", "ivf"}, "hnsw": {"hnsw"}, "split": {"flat"}}[
            self._config.type
        ]
        if structure.kind not in allowed:
            raise SnapshotError(
                f"{path} holds a {structure.kind} index; this retriever is configured for "
                f"{self._config.type}"
            )
        return structure

    # -- structural rebuilds -------------------------------------------------------------

    def _build(self, labels: Labels, vectors: FloatArray) -> IndexStructure:
        """A fresh structure of the configured kind holding `(labels, vectors)`."""
        config = self._config
        structure: IndexStructure
        if isinstance(config, HnswConfig):
            structure = HnswIndex.empty(self._dim, config)
        elif isinstance(config, IvfConfig) and labels.shape[0] >= config.min_train_size:
            return IvfIndex.train(labels, vectors, self._dim, config)
        elif isinstance(config, SplitConfig) and labels.shape[0] >= config.min_train_size:
            return SplitIndex.train(labels, vectors, self._dim, config)
        else:
            structure = FlatIndex.empty(self._dim)
        if labels.shape[0]:
            structure.add_new(labels, vectors)
        return structure

    def _follow_config(self, structure: IndexStructure) -> None:
        """Give `structure` the search parameters of the current config."""
        config = self._config
        if isinstance(structure, IvfIndex | SplitIndex) and isinstance(
            config, IvfConfig | SplitConfig
        ):
            structure.nprobe = config.nprobe
        elif isinstance(structure, HnswIndex) and isinstance(config, HnswConfig):
            structure.ef_search = config.ef_search

    def _rebuild_reason(self) -> str | None:
        """Why the serving structure should be rebuilt now, or None."""
        config = self._config
        structure = self._structure
        if isinstance(config, IvfConfig):
            n = structure.size()
            if isinstance(structure, FlatIndex):
                return "train" if n >= config.min_train_size else None
            if isinstance(structure, IvfIndex):
                if self._drift_reason is not None:
                    return self._drift_reason
                if self._drift is not None and self._drift.churn_due(structure.trained_size):
                    return "churn"
                trained = max(structure.trained_size, 1)
                if n >= config.retrain_growth * trained:
                    return "grown"
                if n * config.retrain_growth <= trained:
                    return "shrunk"
        if isinstance(config, SplitConfig):
            return split_rebuild_reason(config, structure)
        if isinstance(config, HnswConfig) and isinstance(structure, HnswIndex):
            total = structure.size() + structure.dead
            if structure.dead > config.max_dead_fraction * total:
                return "tombstones"
        return None

    def _maybe_start_rebuild(self) -> None:
        """Start a background rebuild if one is due. Caller holds the write lock."""
        if self._closed or self.rebuilding or time.monotonic() < self._retry_rebuild_at:
            return
        reason = self._rebuild_reason()
        if reason is None:
            return
        epoch = self._epoch
        self._drift_reason = None
        thread = threading.Thread(
            target=self._rebuild,
            args=(reason, epoch),
            name=f"freshrec-index-rebuild-{self._name}",
            daemon=True,
        )
        self._rebuild_thread = thread
        thread.start()

    def _rebuild(self, reason: str, epoch: int) -> None:
        started, started_at = time.monotonic(), time.time()
        try:
            with self._lock.write():
                if self._epoch != epoch or self._closed:
                    return
                labels, vectors = self._structure.contents()
                self._journal = []
            logger.info(
                "index %s: rebuilding %d items in the background (%s)",
                self._name,
                labels.shape[0],
                reason,
            )
            fresh = self._build(labels, vectors)
            replayed = 0
            while True:
                with self._lock.write():
                    if self._epoch != epoch or self._journal is None:
                        logger.info("index %s: rebuild dropped, contents replaced", self._name)
                        # The new contents may need a rebuild of their own.
                        self._rebuild_thread = None
                        self._maybe_start_rebuild()
                        return
                    backlog = self._journal[replayed:]
                    if len(backlog) <= _FINAL_REPLAY_OPS or self._closed:
                        for op in backlog:
                            op.apply(fresh)
                        self._follow_config(fresh)  # `tune` may have run meanwhile
                        self._structure = fresh  # the atomic swap
                        self._journal = None
                        self._rebuilds += 1
                        self._rebuild_events.append(
                            RebuildEvent(reason, started_at, time.time(), fresh.size())
                        )
                        self._rebuild_thread = None
                        if self._drift is not None:
                            self._drift.reset(reason, build_s=time.monotonic() - started)
                            if isinstance(fresh, IvfIndex) and self._drift.has_queries():
                                self._start_check(fresh)  # the baseline: recall as trained
                        self._maybe_start_rebuild()
                        break
                for op in backlog:
                    op.apply(fresh)
                replayed += len(backlog)
            INDEX_REBUILDS.labels(index=self._name, reason=reason).inc()
            logger.info(
                "index %s: rebuilt as %s with %d items in %.2f s (%s)",
                self._name,
                fresh.kind,
                fresh.size(),
                time.monotonic() - started,
                reason,
            )
        except Exception:
            logger.exception("index %s: background rebuild failed (%s)", self._name, reason)
            with self._lock.write():
                if self._epoch == epoch:
                    self._journal = None
                self._retry_rebuild_at = time.monotonic() + _RETRY_AFTER_FAILURE_S

    def _note_changes(self, n: int) -> None:
        """Count changed ids; start a drift check in the background when one is due.
        Caller holds the write lock."""
        structure = self._structure
        if self._drift is None or self._closed or not isinstance(structure, IvfIndex):
            return
        if not self._drift.note_changes(n, structure.trained_size) or self.rebuilding:
            return
        self._start_check(structure)

    def _start_check(self, structure: IvfIndex) -> None:
        """Run a drift check of `structure` in the background unless one is running."""
        running = self._check_thread
        if self._closed or (running is not None and running.is_alive()):
            return
        thread = threading.Thread(
            target=self._check_drift,
            args=(structure, self._epoch),
            name=f"freshrec-index-drift-{self._name}",
            daemon=True,
        )
        self._check_thread = thread
        thread.start()

    def _check_drift(self, structure: IvfIndex, epoch: int) -> None:
        if self._drift is None:
            return
        try:
            check = self._drift.check(structure, self._lock.read)
            self._drift_checks.append(check)
            logger.info(
                "index %s: drift check: imbalance %.2fx trained, churn %.3f, probe recall %s "
                "(after training %s) -> %s",
                self._name,
                check.imbalance_growth,
                check.churn,
                "n/a" if check.recall is None else f"{check.recall:.3f}",
                "n/a" if check.baseline_recall is None else f"{check.baseline_recall:.3f}",
                check.reason or "keep",
            )
            if check.reason is None:
                return
            with self._lock.write():
                if self._epoch == epoch and self._structure is structure:
                    self._drift_reason = check.reason
                    self._maybe_start_rebuild()
        except Exception:
            logger.exception("index %s: drift check failed", self._name)

    def wait_for_drift_check(self, timeout_s: float | None = None) -> bool:
        """Block until no drift check runs; True when none is running."""
        thread = self._check_thread
        if thread is not None:
            thread.join(timeout_s)
            return not thread.is_alive()
        return True

    def wait_for_rebuild(self, timeout_s: float | None = None) -> bool:
        """Block until no background rebuild runs (including one the last swap started).

        Returns:
            True when none is running, False when `timeout_s` passed first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            thread = self._rebuild_thread
            if thread is None or not thread.is_alive():
                if thread is self._rebuild_thread:
                    return True
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            thread.join(remaining)

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Stop starting rebuilds and wait for a running one to finish or drop."""
        with self._lock.write():
            self._closed = True
        self.wait_for_drift_check(timeout_s)
        self.wait_for_rebuild(timeout_s)
