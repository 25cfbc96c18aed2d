"""`IndexFollower` against the in-memory store (the same scenarios run on Redis in
tests/integration/test_retrieval_follower.py), plus what only a controllable store can show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from freshrec.errors import SnapshotError, StoreUnavailable
from freshrec.retrieval import ExactRetriever, FaissRetriever, FlatConfig, IndexFollower
from freshrec.table.base import ChangeOp, IdArray, LookupResult
from freshrec.table.memory import InMemoryEmbeddingStore
from tests.scenarios import retrieval_follower as sc
from tests.waiting import wait_until


class CountingStore(InMemoryEmbeddingStore):
    """The in-memory store, counting lookups and exports, able to fail feed reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookups: list[int] = []
        self.exports = 0
        self.failures_left = 0
        self.hidden: set[int] = set()
        self.nan_ids: set[int] = set()

    def lookup(self, ids: IdArray) -> LookupResult:
        self.lookups.append(int(ids.shape[0]))
        found = super().lookup(ids)
        hidden = np.isin(ids, np.array(sorted(self.hidden), dtype=np.uint64))
        vectors = found.vectors.copy()
        vectors[np.isin(ids, np.array(sorted(self.nan_ids), dtype=np.uint64))] = np.nan
        return LookupResult(vectors, found.exists & ~hidden)

    def export(self, batch_size: int = 4096) -> Any:
        self.exports += 1
        return super().export(batch_size)

    def changes(self, cursor: str, count: int = 100, block_ms: int | None = None) -> Any:
        if self.failures_left:
            self.failures_left -= 1
            raise StoreUnavailable("simulated outage")
        return super().changes(cursor, count, block_ms)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore(sc.item_table())


def test_new_item_is_searchable_after_poll_once(store: CountingStore) -> None:
    sc.new_item_is_searchable_after_poll_once(store)


def test_expired_item_is_never_returned(store: CountingStore) -> None:
    sc.expired_item_is_never_returned(store)


def test_background_thread_makes_new_items_searchable(store: CountingStore) -> None:
    sc.background_thread_makes_new_items_searchable(store)


def test_restart_from_snapshot_does_not_start_empty(
    store: CountingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sc.restart_from_snapshot_does_not_start_empty(store, tmp_path / "snap", monkeypatch)


def test_one_batched_lookup_per_poll_and_last_op_wins(store: CountingStore) -> None:
    follower = IndexFollower(store, ExactRetriever(sc.DIM))
    follower.bootstrap()
    sc.write(store, [1, 2, 3], np.eye(sc.DIM, dtype=np.float32)[:3], sc.T0)
    sc.write(store, [4], sc.axis(4), sc.T0)
    # An id deleted and then written again within one poll must end up indexed.
    store.expire(watermark=sc.T0 + sc.EXPIRE_AFTER_S + 1)
    sc.write(store, [2], sc.axis(7, 3.0), sc.T0 + sc.EXPIRE_AFTER_S + 1)
    entries = store.changes(follower.cursor, count=100)
    assert [c.op for c in entries] == [
        ChangeOp.UPSERT,
        ChangeOp.UPSERT,
        ChangeOp.DELETE,
        ChangeOp.UPSERT,
    ]
    store.lookups.clear()
    assert follower.poll_once() == 4
    assert store.lookups == [1]  # one lookup, for the ids whose last op is an upsert
    assert follower.retriever.ids().tolist() == [2]
    assert sc.top1(follower, 7) == 2


def test_upsert_of_a_row_that_is_gone_removes_it(store: CountingStore) -> None:
    follower = IndexFollower(store, ExactRetriever(sc.DIM))
    sc.write(store, [5, 6], np.eye(sc.DIM, dtype=np.float32)[:2], sc.T0)
    follower.bootstrap()
    sc.write(store, [5, 6], np.eye(sc.DIM, dtype=np.float32)[:2], sc.T0)
    # Row 5 vanishes between the feed read and the lookup (a wall-clock TTL ran out).
    store.hidden = {5}
    assert follower.poll_once() == 1
    assert follower.retriever.ids().tolist() == [6]


def test_rows_the_index_cannot_hold_are_left_out(store: CountingStore) -> None:
    sc.write(store, [2**64 - 1, 3], np.eye(sc.DIM, dtype=np.float32)[:2], sc.T0)
    follower = IndexFollower(store, ExactRetriever(sc.DIM))
    follower.bootstrap()
    assert follower.retriever.ids().tolist() == [3]
    sc.write(store, [2**64 - 1, 4], np.eye(sc.DIM, dtype=np.float32)[:2], sc.T0 + 1)
    store.nan_ids = {4}
    assert follower.poll_once() == 1
    assert follower.retriever.ids().tolist() == [3]


def test_bootstrap_follows_from_the_feed_end_read_before_the_export(store: CountingStore) -> None:
    sc.background(store, n=10)
    follower = IndexFollower(store, ExactRetriever(sc.DIM))
    follower.bootstrap()
    assert follower.cursor == store.changes("0", count=100)[-1].cursor
    assert follower.poll_once() == 0
    assert store.exports == 1


def test_cursor_off_the_trimmed_feed_rebuilds_from_export(tmp_path: Path) -> None:
    store = CountingStore(sc.item_table(), feed_maxlen=5)
    sc.background(store, n=50)
    follower = IndexFollower(store, ExactRetriever(sc.DIM), tmp_path, trim_check_interval_s=3600)
    follower.bootstrap()
    follower.snapshot()
    for i in range(10):  # ten entries: the snapshot's cursor falls off a five-entry feed
        sc.write(store, [1000 + i], sc.axis(i % sc.DIM, 2.0), sc.T0)
    restarted = IndexFollower(store, ExactRetriever(sc.DIM), tmp_path)
    assert restarted.bootstrap() == "export"
    assert store.exports == 2
    assert len(restarted.retriever) == 60
    # A follower that fell behind while running rebuilds too (checked every poll here).
    follower_behind = IndexFollower(store, ExactRetriever(sc.DIM), trim_check_interval_s=0)
    follower_behind.bootstrap()
    for i in range(10):
        sc.write(store, [2000 + i], sc.axis(0), sc.T0)
    assert follower_behind.poll_once() == 0  # rebuilt instead of applying a partial feed
    assert store.exports == 4
    assert len(follower_behind.retriever) == 70
    # Caught up exactly at the feed's oldest entry: no rebuild.
    assert follower_behind.poll_once() == 0
    assert store.exports == 4


def test_snapshot_files_and_invalid_snapshots(store: CountingStore, tmp_path: Path) -> None:
    sc.background(store, n=30)
    follower = IndexFollower(store, FaissRetriever(sc.DIM, FlatConfig()), tmp_path)
    follower.bootstrap()
    first = follower.snapshot()
    second = follower.snapshot()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["manifest.json", second.index_file])  # old index file removed
    assert first.index_file != second.index_file
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["table"] == "item" and manifest["retriever"] == "faiss-flat"
    assert manifest["items"] == 30 and manifest["cursor"] == follower.cursor

    def fresh_bootstrap() -> str:
        return IndexFollower(store, FaissRetriever(sc.DIM, FlatConfig()), tmp_path).bootstrap()

    index_file = tmp_path / second.index_file
    good = index_file.read_bytes()
    index_file.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert fresh_bootstrap() == "export"  # checksum mismatch
    index_file.write_bytes(good)
    assert fresh_bootstrap() == "snapshot"
    # A snapshot of another retriever kind is not used.
    other = IndexFollower(store, ExactRetriever(sc.DIM), tmp_path)
    assert other.bootstrap() == "export"
    (tmp_path / "manifest.json").write_text("{not json")
    assert fresh_bootstrap() == "export"
    with pytest.raises(SnapshotError):
        IndexFollower(store, ExactRetriever(sc.DIM)).snapshot()


def test_background_thread_survives_store_errors(store: CountingStore) -> None:
    follower = IndexFollower(store, ExactRetriever(sc.DIM), block_ms=50, name="item_errors")
    follower.bootstrap()
    errors_before = (
        REGISTRY.get_sample_value("freshrec_index_follow_errors_total", {"index": "item_errors"})
        or 0.0
    )
    store.failures_left = 3
    follower.start()
    try:
        sc.write(store, [9], sc.axis(2, 100.0), sc.T0)
        wait_until(lambda: sc.top1(follower, 2) == 9, 10.0, "the item after the outage")
    finally:
        follower.stop()
    errors = REGISTRY.get_sample_value(
        "freshrec_index_follow_errors_total", {"index": "item_errors"}
    )
    assert errors == errors_before + 3


def test_metrics(store: CountingStore) -> None:
    follower = IndexFollower(store, ExactRetriever(sc.DIM), name="item_metrics", poll_entries=2)
    follower.bootstrap()
    labels = {"index": "item_metrics"}

    def sample(name: str, **extra: str) -> float | None:
        return REGISTRY.get_sample_value(name, {**labels, **extra})

    sc.background(store, n=25, seed=1)
    sc.background(store, n=5, seed=2)
    sc.background(store, n=5, seed=3)
    assert follower.poll_once() == 2  # a full batch: the follower is behind the feed
    lag = sample("freshrec_index_feed_lag_seconds")
    assert lag is not None and lag > 0
    assert follower.poll_once() == 1
    assert sample("freshrec_index_feed_lag_seconds") == 0
    assert sample("freshrec_index_items") == 35
    assert sample("freshrec_index_version") == follower.retriever.version
    age = sample("freshrec_index_age_seconds")
    assert age is not None and 0 <= age < 5
    assert sample("freshrec_index_rebuilds_total", reason="bootstrap") == 1
    assert sample("freshrec_index_changes_total", op="upsert") == 35
    assert sample("freshrec_index_changes_total", op="remove") == 0
    assert sample("freshrec_index_rebuilding") == 0


def test_dimension_mismatch_is_refused(store: CountingStore) -> None:
    with pytest.raises(ValueError, match="dim"):
        IndexFollower(store, ExactRetriever(sc.DIM + 1))


def test_mirror_holds_what_the_index_holds(store: CountingStore, tmp_path: Path) -> None:
    sc.mirror_holds_what_the_index_holds(store, tmp_path / "snap")


def test_rebuilding_gauge_follows_the_retriever(store: CountingStore) -> None:
    class Rebuilding(ExactRetriever):
        rebuilding = True

    retriever = Rebuilding(sc.DIM)
    IndexFollower(store, retriever, name="item_rebuilding")
    labels = {"index": "item_rebuilding"}
    assert REGISTRY.get_sample_value("freshrec_index_rebuilding", labels) == 1
    retriever.rebuilding = False
    assert REGISTRY.get_sample_value("freshrec_index_rebuilding", labels) == 0


def test_split_index_follows_the_table(store: CountingStore, tmp_path: Path) -> None:
    sc.split_index_follows_the_table(store, tmp_path / "snap")
