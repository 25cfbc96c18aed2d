"""Index-follower scenarios run against every store: in memory (unit) and Redis (integration).

Each scenario takes a fresh, empty store of `item_table()`. Item vectors are written the way
the trainer writes them, through `apply_gradients`: with zero initialisation and SGD at
lr=1, a row's vector is minus the sum of its gradients.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from freshrec.retrieval import FaissRetriever, IndexFollower, IvfConfig, RowMirror
from freshrec.retrieval.config import SplitConfig
from freshrec.table.base import EmbeddingStore
from freshrec.table.config import ExpiryConfig, SgdConfig, TableConfig, ZerosInit
from tests.waiting import wait_until

DIM = 8
EXPIRE_AFTER_S = 3600.0
T0 = 1_700_000_000.0


def item_table() -> TableConfig:
    return TableConfig(
        name="item",
        dim=DIM,
        initializer=ZerosInit(),
        optimizer=SgdConfig(lr=1.0),
        expiry=ExpiryConfig(clock="event", expire_after_s=EXPIRE_AFTER_S),
    )


def write(store: EmbeddingStore, ids: list[int], vectors: np.ndarray, event_time: float) -> None:
    """Make the rows of `ids` hold exactly `vectors` (each id's first write)."""
    store.apply_gradients(np.array(ids, dtype=np.uint64), -vectors.astype(np.float32), event_time)


def axis(j: int, scale: float = 1.0) -> np.ndarray:
    v = np.zeros((1, DIM), dtype=np.float32)
    v[0, j] = scale
    return v


def background(store: EmbeddingStore, n: int = 200, seed: int = 0) -> list[int]:
    """`n` ordinary items with small random vectors; returns their ids."""
    rng = np.random.default_rng(seed)
    ids = [int(i) for i in rng.integers(1, 2**63, size=n, dtype=np.uint64)]
    write(store, ids, rng.standard_normal((n, DIM)).astype(np.float32), T0)
    return ids


def top1(follower: IndexFollower, direction: int) -> int:
    found, scores = follower.retriever.search(axis(direction), 1)
    return int(found[0, 0]) if np.isfinite(scores[0, 0]) else -1


def new_retriever() -> FaissRetriever:
    return FaissRetriever(DIM, IvfConfig(min_train_size=1000))


# -- scenarios ------------------------------------------------------------------------------


def new_item_is_searchable_after_poll_once(store: EmbeddingStore) -> None:
    background(store)
    follower = IndexFollower(store, new_retriever())
    assert follower.bootstrap() == "export"
    assert len(follower.retriever) == 200
    fresh = 2**63 + 12345  # ids >= 2**63 survive the FAISS int64 labels
    write(store, [fresh], axis(3, 1000.0), T0 + 10)
    assert top1(follower, 3) != fresh
    assert follower.poll_once() >= 1
    assert top1(follower, 3) == fresh
    assert len(follower.retriever) == 201
    assert follower.poll_once() == 0


def expired_item_is_never_returned(store: EmbeddingStore) -> None:
    background(store)  # written at T0
    follower = IndexFollower(store, new_retriever())
    follower.bootstrap()
    old, recent = 2**64 - 2, 77
    write(store, [old], axis(1, 1000.0), T0 - EXPIRE_AFTER_S)
    write(store, [recent], axis(2, 1000.0), T0)
    follower.poll_once()
    assert (top1(follower, 1), top1(follower, 2)) == (old, recent)
    removed = store.expire(watermark=T0 + 1)
    assert old in removed.tolist() and recent not in removed.tolist()
    follower.poll_once()
    assert old not in follower.retriever.ids().tolist()
    found, _ = follower.retriever.search(axis(1), 500)
    assert old not in found.ravel().tolist()
    # Later unrelated writes do not bring it back.
    write(store, [78], axis(4, 5.0), T0 + 20)
    follower.poll_once()
    found, _ = follower.retriever.search(np.eye(DIM, dtype=np.float32), 500)
    assert old not in found.ravel().tolist()
    assert top1(follower, 2) == recent


def background_thread_makes_new_items_searchable(store: EmbeddingStore) -> None:
    background(store)
    follower = IndexFollower(store, new_retriever(), block_ms=100)
    follower.start()
    try:
        assert follower.running
        fresh = 2**63 + 99
        write(store, [fresh], axis(5, 1000.0), T0 + 30)
        wait_until(lambda: top1(follower, 5) == fresh, 5.0, "the new item to be searchable")
        store.expire(watermark=T0 + EXPIRE_AFTER_S + 31)  # everything expires
        wait_until(lambda: len(follower.retriever) == 0, 5.0, "expired items to leave")
    finally:
        started = time.monotonic()
        follower.stop()
        stopped_in = time.monotonic() - started
    assert not follower.running
    assert stopped_in < 2.0, f"stop() took {stopped_in:.2f} s"


def restart_from_snapshot_does_not_start_empty(
    store: EmbeddingStore, snapshot_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = background(store, n=1500)  # over min_train_size: the snapshot holds an IVF index
    retriever = new_retriever()
    first = IndexFollower(store, retriever, snapshot_dir)
    assert first.bootstrap() == "export"
    assert retriever.structure == "ivf"
    write(store, [2**63 + 1], axis(6, 1000.0), T0 + 40)
    first.poll_once()
    manifest = first.snapshot()
    assert manifest.items == 1501 and manifest.cursor == first.cursor
    write(store, [2**63 + 2], axis(7, 1000.0), T0 + 50)  # after the snapshot

    def no_export(batch_size: int = 4096) -> None:
        raise AssertionError("restart from a valid snapshot must not export the table")

    monkeypatch.setattr(store, "export", no_export)
    second = IndexFollower(store, new_retriever(), snapshot_dir)
    assert second.bootstrap() == "snapshot"
    assert len(second.retriever) == 1501
    assert top1(second, 6) == 2**63 + 1
    assert isinstance(second.retriever, FaissRetriever) and second.retriever.structure == "ivf"
    second.poll_once()  # catches up from the snapshot's cursor
    assert top1(second, 7) == 2**63 + 2
    assert set(second.retriever.ids().tolist()) == {*ids, 2**63 + 1, 2**63 + 2}


def _assert_mirror_matches(
    store: EmbeddingStore, follower: IndexFollower, mirror: RowMirror
) -> None:
    held = follower.retriever.ids()
    assert len(mirror) == held.shape[0]
    rows, table = mirror.read_rows(held), store.read_rows(held)
    np.testing.assert_array_equal(rows.ids, table.ids)
    np.testing.assert_array_equal(rows.vectors, table.vectors)
    np.testing.assert_array_equal(rows.wall_time, table.wall_time)
    np.testing.assert_array_equal(rows.event_time, table.event_time)
    np.testing.assert_array_equal(rows.count, table.count)


def mirror_holds_what_the_index_holds(store: EmbeddingStore, snapshot_dir: Path) -> None:
    """Bootstrap, updates, new rows, expiry and a restart from a snapshot."""
    ids = background(store, n=1500)
    mirror = RowMirror(DIM)
    follower = IndexFollower(store, new_retriever(), snapshot_dir, mirror=mirror)
    follower.bootstrap()
    _assert_mirror_matches(store, follower, mirror)
    old, fresh = 2**64 - 2, 2**63 + 5
    write(store, [old], axis(1, 1000.0), T0 - EXPIRE_AFTER_S)
    write(store, [fresh], axis(2, 3.0), T0 + 10)
    updated = np.array(ids[:50], dtype=np.uint64)
    store.apply_gradients(updated, np.ones((50, DIM), np.float32), T0 + 20)
    follower.poll_once()
    _assert_mirror_matches(store, follower, mirror)
    assert mirror.read_rows(np.array([fresh], dtype=np.uint64)).vectors[0, 2] == 3.0
    store.expire(watermark=T0 + 1)
    follower.poll_once()
    assert len(mirror.read_rows(np.array([old, fresh], dtype=np.uint64))) == 1  # old is gone
    _assert_mirror_matches(store, follower, mirror)
    follower.snapshot()
    restarted_mirror = RowMirror(DIM)
    restarted = IndexFollower(store, new_retriever(), snapshot_dir, mirror=restarted_mirror)
    assert restarted.bootstrap() == "snapshot"
    _assert_mirror_matches(store, restarted, restarted_mirror)


def split_index_follows_the_table(store: EmbeddingStore, snapshot_dir: Path) -> None:
    """A `split` index bootstrapped from the table takes upserts (an item grown into the
    head), expiry-driven removals and a restart from its snapshot."""
    ids = background(store, n=1500)

    def split_retriever() -> FaissRetriever:
        return FaissRetriever(DIM, SplitConfig(min_train_size=1000, head_fraction=0.05))

    follower = IndexFollower(store, split_retriever(), snapshot_dir)
    assert follower.bootstrap() == "export"
    retriever = follower.retriever
    assert isinstance(retriever, FaissRetriever) and retriever.structure == "split"
    fresh, old = 2**63 + 7, 2**64 - 2
    write(store, [fresh], axis(3, 1000.0), T0 + 10)
    write(store, [old], axis(1, 1000.0), T0 - EXPIRE_AFTER_S)
    # an ordinary (tail) item grows far past the head's threshold
    store.apply_gradients(np.array([ids[0]], dtype=np.uint64), -axis(4, 500.0), T0 + 20)
    follower.poll_once()
    assert (top1(follower, 3), top1(follower, 1), top1(follower, 4)) == (fresh, old, ids[0])
    assert len(retriever) == 1502
    store.expire(watermark=T0 + 1)
    follower.poll_once()
    assert old not in retriever.ids().tolist()
    found, _ = retriever.search(np.eye(DIM, dtype=np.float32), 500)
    assert old not in found.ravel().tolist()
    follower.snapshot()
    second = IndexFollower(store, split_retriever(), snapshot_dir)
    assert second.bootstrap() == "snapshot"
    restarted = second.retriever
    assert isinstance(restarted, FaissRetriever) and restarted.structure == "split"
    assert set(restarted.ids().tolist()) == {*ids, fresh}
    assert (top1(second, 3), top1(second, 4)) == (fresh, ids[0])
