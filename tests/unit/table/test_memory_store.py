"""The in-memory store on its own: fake clocks, validation, bookkeeping (no servers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from freshrec.errors import ConfigError, InvalidInput
from freshrec.settings import default_table_config_path
from freshrec.table import (
    ChangeOp,
    InMemoryEmbeddingStore,
    InMemoryTableBackend,
    load_tables,
    open_tables,
    restore_snapshot,
    save_snapshot,
)
from freshrec.table.config import (
    CountingAdmission,
    ExpiryConfig,
    SgdConfig,
    TableConfig,
    ZerosInit,
)


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


def test_wall_clock_deadline_is_bucket_aligned() -> None:
    clock = FakeClock(1000.0)
    config = TableConfig(
        name="w", dim=2, expiry=ExpiryConfig(clock="wall", expire_after_s=16.0, buckets=16)
    )
    store = InMemoryEmbeddingStore(config, clock=clock)
    g = np.zeros((1, 2), dtype=np.float32)
    store.apply_gradients(_ids(1), g, 0.0)  # written at 1000.0: bucket [1000, 1001)
    clock.now = 1016.9
    assert store.lookup(_ids(1)).exists[0]
    assert store.expire(0.0).size == 0
    clock.now = 1017.0  # end of its bucket + expire_after
    assert not store.lookup(_ids(1)).exists[0]
    assert store.expire(0.0).tolist() == [1]
    assert store.expire(0.0).size == 0
    assert store.stats().expired_total == 1 and store.stats().rows == 0


def test_counting_pending_counts_follow_wall_generations() -> None:
    clock = FakeClock(0.0)
    config = TableConfig(
        name="c",
        dim=2,
        admission=CountingAdmission(min_count=3),
        expiry=ExpiryConfig(clock="wall", expire_after_s=10.0),
    )
    store = InMemoryEmbeddingStore(config, clock=clock)
    g = np.zeros((1, 2), dtype=np.float32)
    store.apply_gradients(_ids(5), g, 0.0)
    clock.now = 15.0  # next generation: the count is still read
    store.apply_gradients(_ids(5), g, 0.0)
    assert store.pull(_ids(5)).count[0] == 2
    clock.now = 36.0  # two generations later: forgotten
    assert store.pull(_ids(5)).count[0] == 0


def test_inputs_are_validated() -> None:
    store = InMemoryEmbeddingStore(TableConfig(name="v", dim=2))
    with pytest.raises(InvalidInput, match="uint64"):
        store.lookup(np.array([1, 2]))
    with pytest.raises(InvalidInput, match="unique"):
        store.pull(_ids(1, 1))
    pulled = store.pull(_ids(1, 2))
    with pytest.raises(InvalidInput, match="grads must be"):
        store.push(pulled, np.zeros((2, 3), np.float32), np.ones(2, np.int64), np.zeros(2))
    with pytest.raises(InvalidInput, match="cursor"):
        store.changes("not-a-cursor")
    other = InMemoryEmbeddingStore(TableConfig(name="v", dim=2))
    with pytest.raises(TypeError, match="same backend"):
        store.push(
            pulled,
            np.zeros((2, 2), np.float32),
            np.ones(2, np.int64),
            np.zeros(2),
            txn=other.backend.transaction(),
        )
    backend = InMemoryTableBackend()
    InMemoryEmbeddingStore(TableConfig(name="v", dim=2), backend)
    with pytest.raises(ConfigError, match="dim 2"):
        InMemoryEmbeddingStore(TableConfig(name="v", dim=3), backend)


def test_feed_is_bounded_and_clear_keeps_cursors_monotonic() -> None:
    config = TableConfig(name="f", dim=2, optimizer=SgdConfig(), initializer=ZerosInit())
    store = InMemoryEmbeddingStore(config, feed_maxlen=3)
    g = np.zeros((1, 2), dtype=np.float32)
    for i in range(5):
        store.apply_gradients(_ids(i), g, 0.0)
    entries = store.changes("0", count=10)
    assert [c.ids.tolist() for c in entries] == [[2], [3], [4]]
    store.clear()
    assert store.stats().rows == 0 and store.changes("0") == []
    store.apply_gradients(_ids(9), g, 0.0)
    (after,) = store.changes(entries[-1].cursor)
    assert after.op is ChangeOp.UPSERT and after.ids.tolist() == [9]


def test_open_tables_share_one_backend(tmp_path: Path) -> None:
    tables = load_tables(default_table_config_path())
    stores = open_tables(tables, InMemoryTableBackend())
    assert set(stores.names()) == {t.name for t in tables.tables}
    user, item = stores.user, stores.item
    assert user.backend is item.backend is stores.backend
    with stores.backend.transaction() as txn:
        user.apply_gradients(_ids(1), np.ones((1, 32), np.float32), 1.0, txn=txn)
        item.apply_gradients(_ids(2), np.ones((1, 32), np.float32), 1.0, txn=txn)
    assert user.lookup(_ids(1)).exists[0] and item.lookup(_ids(2)).exists[0]
    save_snapshot(stores, tmp_path / "snap")
    fresh = open_tables(tables, InMemoryTableBackend())
    assert restore_snapshot(fresh, tmp_path / "snap") == {"user": 1, "item": 1, "context": 0}
    np.testing.assert_array_equal(fresh.user.lookup(_ids(1)).vectors, user.lookup(_ids(1)).vectors)
    assert isinstance(InMemoryTableBackend().store(tables["user"]), InMemoryEmbeddingStore)
