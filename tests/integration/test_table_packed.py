"""The packed layout (rows in small Redis hashes) behaves like the in-memory reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis

from freshrec.errors import ConfigError
from freshrec.table import InMemoryEmbeddingStore, RedisTableBackend
from freshrec.table.config import AdagradConfig, ExpiryConfig, TableConfig
from freshrec.table.redis import PackedRedisEmbeddingStore, RedisEmbeddingStore
from freshrec.table.redis_cluster.backend import RedisClusterTableBackend
from freshrec.table.snapshot import restore_snapshot, save_snapshot
from tests.cluster_servers import ClusterServers
from tests.integration.test_table_parity import CONFIG, assert_matches_reference
from tests.private_servers import PrivateRedis

PACKED = CONFIG.model_copy(update={"layout": "packed", "packed_buckets": 16})


@pytest.fixture
def listpack_redis(private_redis: PrivateRedis) -> redis.Redis:
    """A private Redis that keeps hashes with values up to 512 bytes as listpacks."""
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("hash-max-listpack-value", 512)
    return client


def _clock() -> float:
    return 1_700_000_000.0


def test_packed_store_matches_reference_bit_for_bit(listpack_redis: redis.Redis) -> None:
    memory = InMemoryEmbeddingStore(PACKED, clock=_clock)
    store = RedisTableBackend(listpack_redis, "pk").store(PACKED, clock=_clock)
    assert isinstance(store, PackedRedisEmbeddingStore)
    assert_matches_reference(memory, store)
    feed_a = [(c.op, c.ids.tolist()) for c in memory.changes("0", count=1000)]
    feed_b = [(c.op, c.ids.tolist()) for c in store.changes("0", count=1000)]
    assert [f for f in feed_a if f[0] == "upsert"] == [f for f in feed_b if f[0] == "upsert"]
    deletes = lambda feed: sorted(i for o, ids in feed if o == "delete" for i in ids)  # noqa: E731
    assert deletes(feed_a) == deletes(feed_b)
    # The rows live in at most `packed_buckets` hashes, each a listpack, and nowhere else.
    buckets = list(listpack_redis.scan_iter(match=b"pk:t:par:b:*", count=1000))
    assert 1 < len(buckets) <= 16
    assert {listpack_redis.object("encoding", k) for k in buckets} == {b"listpack"}
    assert not list(listpack_redis.scan_iter(match=b"pk:t:par:r:*", count=1000))
    rows = sum(int(listpack_redis.hlen(k)) for k in buckets)
    assert rows == store.stats().rows


def test_packed_rows_commit_with_the_transaction(listpack_redis: redis.Redis) -> None:
    backend = RedisTableBackend(listpack_redis, "pk")
    store = backend.store(TableConfig(name="txn", dim=4, layout="packed", packed_buckets=2))
    ids = np.array([5, 6, 7], dtype=np.uint64)
    grads = np.ones((3, 4), np.float32)
    with pytest.raises(RuntimeError), backend.transaction() as txn:
        store.apply_gradients(ids, grads, 1.0, txn=txn)
        raise RuntimeError("crash before commit")
    assert not store.lookup(ids).exists.any()
    with backend.transaction() as txn:
        store.apply_gradients(ids, grads, 1.0, txn=txn)
        txn.put_hash("offsets", {"p0": 3})
    assert store.lookup(ids).exists.all() and backend.get_hash("offsets") == {"p0": b"3"}


def test_packed_snapshot_round_trips_with_the_key_layout(
    listpack_redis: redis.Redis, tmp_path: Path
) -> None:
    config = TableConfig(
        name="user", dim=8, optimizer=AdagradConfig(initial_accumulator=0.1), layout="packed"
    )
    packed = RedisTableBackend(listpack_redis, "pk").store(config)
    rng = np.random.default_rng(4)
    ids = rng.integers(0, 2**64 - 1, size=5000, dtype=np.uint64, endpoint=True)
    packed.apply_gradients(ids, rng.normal(size=(5000, 8)).astype(np.float32), 10.0)
    save_snapshot([packed], tmp_path / "snap")
    keyed = RedisTableBackend(listpack_redis, "kk").store(
        config.model_copy(update={"layout": "key"})
    )
    assert restore_snapshot([keyed], tmp_path / "snap") == {"user": 5000}
    a, b = packed.read_rows(np.sort(ids)), keyed.read_rows(np.sort(ids))
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.state, b.state)
    assert sum(len(r) for r in packed.export(batch_size=777)) == 5000


def test_packed_layout_refuses_servers_that_would_not_pack(private_redis: PrivateRedis) -> None:
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("hash-max-listpack-value", 64)
    with pytest.raises(ConfigError, match="hash-max-listpack-value 100"):
        RedisTableBackend(client, "pk").store(PACKED)
    assert not list(client.scan_iter(match=b"pk:*"))


def test_packed_layout_refuses_wall_clock_and_the_one_key_store() -> None:
    with pytest.raises(ValueError, match="event-time expiry only"):
        TableConfig(
            name="w", dim=4, layout="packed", expiry=ExpiryConfig(clock="wall", expire_after_s=5)
        )
    client = redis.Redis(port=1)
    with pytest.raises(ConfigError, match="stores layout 'key', not 'packed'"):
        RedisEmbeddingStore(RedisTableBackend(client, "pk"), PACKED)


def test_cluster_backend_refuses_a_packed_table(cluster_servers: ClusterServers) -> None:
    backend = RedisClusterTableBackend.from_nodes(cluster_servers.redis_nodes, "pk")
    try:
        with pytest.raises(ConfigError, match="not 'packed'"):
            backend.store(TableConfig(name="x", dim=4, layout="packed"))
    finally:
        backend.close()
