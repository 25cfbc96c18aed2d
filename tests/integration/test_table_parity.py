"""The Redis store behaves exactly like the in-memory reference, and fails loudly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from freshrec.errors import ConfigError, StoreUnavailable
from freshrec.offline.bench.table import run_table_bench
from freshrec.table import EmbeddingStore, InMemoryEmbeddingStore, RedisTableBackend
from freshrec.table.config import (
    AdamConfig,
    CountingAdmission,
    ExpiryConfig,
    NormalInit,
    TableConfig,
)
from tests.conftest import Servers

CONFIG = TableConfig(
    name="par",
    dim=6,
    initializer=NormalInit(std=0.1, seed=2),
    optimizer=AdamConfig(lr=0.01),
    expiry=ExpiryConfig(clock="event", expire_after_s=50.0),
    admission=CountingAdmission(min_count=2),
)


def _replay(store: EmbeddingStore) -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    vocab = rng.integers(0, 2**64 - 1, size=300, dtype=np.uint64, endpoint=True)
    removed = []
    for step in range(60):
        ids = vocab[rng.zipf(1.3, size=64) % 300]
        grads = rng.normal(size=(64, CONFIG.dim)).astype(np.float32)
        store.apply_gradients(ids, grads, event_time=float(step * 3))
        if step % 10 == 9:
            removed.append(np.sort(store.expire(float(step * 3))))
    return removed


def _rows(store: EmbeddingStore) -> dict[int, bytes]:
    out = {}
    for rows in store.export():
        for k in range(len(rows)):
            out[int(rows.ids[k])] = b"".join(
                [
                    rows.vectors[k].tobytes(),
                    rows.state[k].tobytes(),
                    rows.event_time[k].tobytes(),
                    rows.wall_time[k].tobytes(),
                    rows.count[k].tobytes(),
                ]
            )
    return out


def assert_matches_reference(memory: EmbeddingStore, store: EmbeddingStore) -> np.ndarray:
    """Replay the same stream into both; rows, expiries, lookups, pulls and counters agree.

    Returns:
        The probe ids: 20 with rows, then 3 without.
    """
    removed_memory, removed_store = _replay(memory), _replay(store)
    assert sum(r.size for r in removed_memory) > 0
    for a, b in zip(removed_memory, removed_store, strict=True):
        np.testing.assert_array_equal(a, b)
    want = _rows(memory)
    assert len(want) > 50
    assert _rows(store) == want
    probe = np.array([*list(want)[:20], 1, 2, 3], dtype=np.uint64)
    a, b = memory.lookup(probe), store.lookup(probe)
    np.testing.assert_array_equal(a.exists, b.exists)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    pa, pb = memory.pull(probe), store.pull(probe)
    np.testing.assert_array_equal(pa.count, pb.count)
    sa, sb = memory.stats(), store.stats()
    assert (sa.rows, sa.created_total, sa.filtered_total, sa.expired_total) == (
        sb.rows,
        sb.created_total,
        sb.filtered_total,
        sb.expired_total,
    )
    return probe


def test_redis_store_matches_reference_bit_for_bit(
    redis_client: redis.Redis, namespace: str
) -> None:
    def clock() -> float:
        return 1_700_000_000.0

    memory = InMemoryEmbeddingStore(CONFIG, clock=clock)
    store = RedisTableBackend(redis_client, namespace).store(CONFIG, clock=clock)
    assert_matches_reference(memory, store)
    feed_a = [(c.op, c.ids.tolist()) for c in memory.changes("0", count=1000)]
    feed_b = [(c.op, c.ids.tolist()) for c in store.changes("0", count=1000)]
    flat = lambda feed, op: sorted(i for o, ids in feed if o == op for i in ids)  # noqa: E731
    assert [f for f in feed_a if f[0] == "upsert"] == [f for f in feed_b if f[0] == "upsert"]
    assert flat(feed_a, "delete") == flat(feed_b, "delete")


def test_expiring_many_rows_in_one_bucket(redis_client: redis.Redis, namespace: str) -> None:
    config = TableConfig(
        name="bulk", dim=2, expiry=ExpiryConfig(clock="event", expire_after_s=10.0)
    )
    store = RedisTableBackend(redis_client, namespace).store(config)
    ids = np.arange(1, 10_001, dtype=np.uint64) * np.uint64(2**44 + 1)
    store.apply_gradients(ids, np.zeros((ids.shape[0], 2), np.float32), event_time=0.0)
    store.apply_gradients(ids[:10], np.zeros((10, 2), np.float32), event_time=20.0)
    removed = store.expire(20.0)
    np.testing.assert_array_equal(np.sort(removed), np.sort(ids[10:]))
    assert store.stats().rows == 10
    deleted = [i for c in store.changes("0", count=100) if c.op == "delete" for i in c.ids]
    assert len(deleted) == len(set(deleted)) == 9990


def test_unreachable_redis_raises_store_unavailable() -> None:
    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = RedisTableBackend(client, "nowhere").store(CONFIG)
    ids = np.array([1, 2], dtype=np.uint64)
    with pytest.raises(StoreUnavailable, match="Redis failed during lookup"):
        store.lookup(ids)
    with pytest.raises(StoreUnavailable):
        store.apply_gradients(ids, np.zeros((2, CONFIG.dim), np.float32), 0.0)
    txn = store.backend.transaction()
    txn.put_hash("offsets", {"p0": 1})
    with pytest.raises(StoreUnavailable, match="transaction"):
        txn.commit()
    with pytest.raises(StoreUnavailable):
        store.expire(100.0)
    with pytest.raises(StoreUnavailable):
        store.stats()
    assert StoreUnavailable.status_code == 503


def test_store_refuses_text_clients_and_foreign_transactions(
    servers: Servers, redis_client: redis.Redis, namespace: str
) -> None:
    text = redis.Redis.from_url(servers.redis_url, decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisTableBackend(text, namespace)
    text.close()
    store = RedisTableBackend(redis_client, namespace).store(CONFIG)
    memory = InMemoryEmbeddingStore(CONFIG)
    pulled = store.pull(np.array([1], dtype=np.uint64))
    with pytest.raises(TypeError, match="same Redis client"):
        store.push(
            pulled,
            np.zeros((1, CONFIG.dim), np.float32),
            np.ones(1, np.int64),
            np.zeros(1),
            txn=memory.backend.transaction(),
        )


def test_table_bench_writes_its_figures(tmp_path: Path) -> None:
    report = run_table_bench(
        tmp_path, rows=6000, small_rows=3000, batch=256, seconds=0.05, dims=(4,)
    )
    assert (tmp_path / "table.json").exists() and (tmp_path / "table.png").stat().st_size > 0
    assert [(c["dim"], c["rows"]) for c in report["cells"]] == [(4, 3000), (4, 6000)]
    for cell in report["cells"]:
        assert cell["payload_bytes"] == 4 * (4 + 4)
        assert cell["raw_payload_bytes_per_row"] > 0
        for layout in ("key", "packed"):
            figures = cell["layouts"][layout]
            for key in (
                "lookup_rows_per_s",
                "raw_mget_rows_per_s",
                "update_rows_per_s",
                "raw_set_rows_per_s",
                "bytes_per_row",
                "row_bytes_sampled",
            ):
                assert figures[key] > 0, (layout, key)
        # A hash of about 32 rows costs less per row than a key per row.
        assert (
            cell["layouts"]["packed"]["row_bytes_sampled"]
            < cell["layouts"]["key"]["row_bytes_sampled"]
        )
    scaling = report["scaling"]["dim4"]
    assert scaling["key"]["rows"] == [3000, 6000] and scaling["packed"]["lookup_large_vs_small"] > 0
