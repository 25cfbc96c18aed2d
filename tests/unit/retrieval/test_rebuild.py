"""Background rebuilds of `FaissRetriever`: swap, journal replay, and searches meanwhile."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from freshrec.retrieval import ExactRetriever, FaissRetriever, HnswConfig, IvfConfig
from freshrec.retrieval.config import SplitConfig
from tests.unit.retrieval.conftest import DIM

REBUILD_THREAD = "freshrec-index-rebuild"


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _ids(start: int, n: int) -> np.ndarray:
    # Spread over the whole uint64 range, top bit included.
    return (np.arange(start, start + n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | 1


class GatedRetriever(FaissRetriever):
    """Holds background builds at a gate so the test controls what happens meanwhile."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail = False
        super().__init__(*args, **kwargs)

    def _build(self, labels: Any, vectors: Any) -> Any:
        if threading.current_thread().name.startswith(REBUILD_THREAD):
            self.entered.set()
            assert self.gate.wait(30), "test never opened the gate"
            if self.fail:
                raise RuntimeError("simulated build failure")
        return super()._build(labels, vectors)


def _config(
    kind: str, *, min_train_size: int, nprobe: int, ef_search: int, max_dead_fraction: float
) -> IvfConfig | HnswConfig | SplitConfig:
    """An `ivf`, `hnsw` or `split` config that rebuilds after few changes."""
    if kind == "ivf":
        return IvfConfig(min_train_size=min_train_size, nprobe=nprobe)
    if kind == "split":
        return SplitConfig(min_train_size=min_train_size, nprobe=nprobe)
    return HnswConfig(ef_search=ef_search, max_dead_fraction=max_dead_fraction)


def _same_contents(retriever: FaissRetriever, reference: ExactRetriever) -> None:
    assert len(retriever) == len(reference)
    assert set(retriever.ids().tolist()) == set(reference.ids().tolist())
    queries = _vectors(20, seed=99)
    np.testing.assert_array_equal(
        retriever.search(queries, 10).ids, reference.search(queries, 10).ids
    )


def test_ivf_trains_in_the_background_then_retrains_when_grown() -> None:
    retriever = FaissRetriever(DIM, IvfConfig(min_train_size=500, nprobe=4096))
    reference = ExactRetriever(DIM)
    for r in (retriever, reference):
        r.upsert(_ids(0, 400), _vectors(400, seed=1))
    assert retriever.structure == "flat" and not retriever.rebuilding
    for r in (retriever, reference):
        r.upsert(_ids(400, 200), _vectors(200, seed=2))
    assert retriever.wait_for_rebuild(60)
    assert (retriever.structure, retriever.rebuilds) == ("ivf", 1)
    _same_contents(retriever, reference)
    for r in (retriever, reference):
        r.upsert(_ids(600, 700), _vectors(700, seed=3))
    assert retriever.wait_for_rebuild(60)
    assert (retriever.structure, retriever.rebuilds) == ("ivf", 2)
    _same_contents(retriever, reference)
    retriever.close()


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "split"])
def test_changes_during_a_rebuild_are_replayed_before_the_swap(kind: str) -> None:
    config = _config(kind, min_train_size=500, nprobe=4096, ef_search=1024, max_dead_fraction=0.2)
    retriever = GatedRetriever(DIM, config)
    reference = ExactRetriever(DIM)
    for r in (retriever, reference):
        r.upsert(_ids(0, 600), _vectors(600, seed=4))
        if kind == "hnsw":
            r.remove(_ids(0, 200))  # a third tombstones: compaction due
    assert retriever.entered.wait(30)
    # Meanwhile: new items, replaced vectors, removals (some of freshly added items too).
    for r in (retriever, reference):
        r.upsert(_ids(1000, 300), _vectors(300, seed=5))
        r.upsert(_ids(300, 100), -_vectors(100, seed=6))
        r.remove(_ids(400, 50))
        r.remove(_ids(1000, 20))
    for _ in range(100):  # more than the final, locked replay takes in one go
        for r in (retriever, reference):
            r.upsert(_ids(2000, 1), _vectors(1, seed=7))
    _same_contents(retriever, reference)  # the old index serves until the swap
    assert retriever.rebuilding and retriever.rebuilds == 0
    retriever.gate.set()
    assert retriever.wait_for_rebuild(60)
    # HNSW: the replayed upserts leave tombstones of their own, which may chain a compaction.
    assert retriever.rebuilds >= 1 and retriever.structure == kind
    _same_contents(retriever, reference)
    retriever.close()


def _ivf_training_at_the_gate(seed: int, *, fail: bool = False) -> GatedRetriever:
    """An `ivf` retriever whose first training is held at the gate."""
    retriever = GatedRetriever(DIM, IvfConfig(min_train_size=500, nprobe=4096))
    retriever.fail = fail
    retriever.upsert(_ids(0, 600), _vectors(600, seed=seed))
    assert retriever.entered.wait(30)
    return retriever


def _open_gate_and_expect_no_swap(retriever: GatedRetriever) -> None:
    retriever.gate.set()
    assert retriever.wait_for_rebuild(60)
    assert retriever.rebuilds == 0 and retriever.structure == "flat"


def test_replace_during_a_rebuild_drops_the_rebuild() -> None:
    retriever = _ivf_training_at_the_gate(seed=8)
    retriever.replace(_ids(5000, 50), _vectors(50, seed=9))
    _open_gate_and_expect_no_swap(retriever)
    assert set(retriever.ids().tolist()) == set(_ids(5000, 50).tolist())
    retriever.close()


def test_a_failed_rebuild_keeps_the_old_index_serving() -> None:
    retriever = _ivf_training_at_the_gate(seed=10, fail=True)
    retriever.upsert(_ids(600, 10), _vectors(10, seed=11))
    _open_gate_and_expect_no_swap(retriever)
    assert len(retriever) == 610
    retriever.remove(_ids(0, 5))
    found, _ = retriever.search(_vectors(3, seed=12), 5)
    assert not np.isin(found, _ids(0, 5)).any()
    retriever.close()


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "split"])
def test_searches_during_rebuilds_never_fail_nor_return_removed_ids(kind: str) -> None:
    config = _config(kind, min_train_size=300, nprobe=8, ef_search=64, max_dead_fraction=0.1)
    retriever = FaissRetriever(DIM, config)
    rng = np.random.default_rng(13)
    vectors: dict[int, np.ndarray] = {}
    removed: list[int] = []
    removed_lock = threading.Lock()
    errors: list[BaseException] = []
    violations: list[set[int]] = []
    searches = [0]
    stop = threading.Event()

    def search_loop(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            with removed_lock:
                gone = set(removed)
                # Aim queries at removed items: if they were still indexed they would rank first.
                pool = removed[-32:] if removed else list(vectors)[:32]
                queries = np.stack([vectors[i] for i in pool]) if pool else None
            if queries is None:
                continue
            try:
                exclude = [np.array(pool[:3], dtype=np.uint64)] * queries.shape[0]
                found, _ = retriever.search(queries, int(local.integers(1, 20)), exclude)
            except BaseException as exc:
                errors.append(exc)
                return
            hit = gone.intersection(found.ravel().tolist())
            if hit:
                violations.append(hit)
            searches[0] += 1

    threads = [threading.Thread(target=search_loop, args=(s,)) for s in (1, 2)]
    for thread in threads:
        thread.start()
    try:
        next_id = 0
        deadline = time.monotonic() + 20
        while (retriever.rebuilds < 3 or searches[0] < 200) and time.monotonic() < deadline:
            batch = _ids(next_id, 60)
            next_id += 60
            batch_vectors = rng.standard_normal((60, DIM)).astype(np.float32)
            retriever.upsert(batch, batch_vectors)
            with removed_lock:
                vectors.update(zip(batch.tolist(), batch_vectors, strict=True))
            live = [i for i in vectors if i not in set(removed)]
            doomed = rng.choice(np.array(live, dtype=np.uint64), size=25, replace=False)
            retriever.remove(doomed)
            with removed_lock:
                removed.extend(doomed.tolist())
            keep = rng.choice(np.array(live, dtype=np.uint64), size=10, replace=False)
            keep = keep[~np.isin(keep, doomed)]
            retriever.upsert(keep, rng.standard_normal((keep.shape[0], DIM)).astype(np.float32))
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        retriever.close()
    assert not errors, errors[0]
    assert not violations, f"removed ids returned: {violations[:3]}"
    assert retriever.rebuilds >= 3, f"only {retriever.rebuilds} rebuilds happened"
    assert searches[0] >= 200
    assert set(retriever.ids().tolist()) == set(vectors) - set(removed)
