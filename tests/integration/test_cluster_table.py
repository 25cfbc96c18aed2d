"""The Redis Cluster table backend on a real Redis Cluster (3 masters + 3 replicas).

It matches the in-memory reference bit for bit, keeps each shard in one slot, spreads the
shards over the masters, loses no update when several trainers write the same rows at once,
and replays a commit record cut short by a crash exactly once.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from redis.crc import key_slot

from freshrec.errors import ConfigError, InvalidInput, StoreUnavailable
from freshrec.table import InMemoryEmbeddingStore
from freshrec.table.config import AdagradConfig, TableConfig
from freshrec.table.redis_cluster import RedisClusterTableBackend
from freshrec.table.redis_cluster.backend import RECORD_KEY, decode_record
from tests.cluster_servers import ClusterServers
from tests.integration.test_table_parity import CONFIG, assert_matches_reference

ITEMS = TableConfig(name="item", dim=8, optimizer=AdagradConfig(lr=0.05))


@pytest.fixture(scope="module")
def cluster_nodes(cluster_servers: ClusterServers) -> str:
    return cluster_servers.redis_nodes


@pytest.fixture
def cluster(cluster_nodes: str) -> Iterator[RedisClusterTableBackend]:
    backend = RedisClusterTableBackend.from_nodes(
        cluster_nodes, namespace=f"t{uuid.uuid4().hex[:10]}"
    )
    try:
        yield backend
    finally:
        _wipe(backend)
        backend.close()


def _wipe(backend: RedisClusterTableBackend) -> None:
    for node in backend.router.masters():
        client = backend.router.node_client(node)
        keys = list(client.scan_iter(match=f"{backend.namespace}:*", count=10_000))
        for key in keys:
            client.unlink(key)


def _clock() -> float:
    return 1_700_000_000.0


def test_cluster_store_matches_reference_bit_for_bit(cluster: RedisClusterTableBackend) -> None:
    memory = InMemoryEmbeddingStore(CONFIG, clock=_clock)
    store = cluster.store(CONFIG, clock=_clock)
    probe = assert_matches_reference(memory, store)
    rows = store.read_rows(probe)
    np.testing.assert_array_equal(rows.ids, probe[:20])


def test_each_shard_lives_in_one_slot_and_shards_spread_over_masters(
    cluster: RedisClusterTableBackend,
) -> None:
    store = cluster.store(ITEMS)
    ids = np.arange(1, 5001, dtype=np.uint64)
    store.apply_gradients(ids, np.ones((ids.size, ITEMS.dim), np.float32), event_time=1.0)
    slots_by_tag: dict[bytes, set[int]] = {}
    for node in cluster.router.masters():
        for key in cluster.router.node_client(node).scan_iter(
            match=f"{cluster.namespace}:*", count=10_000
        ):
            tag = key[key.index(b"{") : key.index(b"}") + 1]
            slots_by_tag.setdefault(tag, set()).add(key_slot(key))
    assert len(slots_by_tag) == cluster.shards
    assert all(len(slots) == 1 for slots in slots_by_tag.values())
    masters = [cluster.router.master_of(key_slot(cluster.tag(s).encode())) for s in range(12)]
    per_master = {m: masters.count(m) for m in set(masters)}
    assert len(per_master) == 3
    assert sorted(per_master.values()) == [4, 4, 4]
    assert store.stats().rows == ids.size


def test_change_feed_is_sharded_and_resumable(cluster: RedisClusterTableBackend) -> None:
    store = cluster.store(ITEMS)
    for step in range(5):
        ids = np.arange(step * 100, step * 100 + 100, dtype=np.uint64)
        store.apply_gradients(ids, np.ones((100, ITEMS.dim), np.float32), event_time=1.0)
    changes = store.changes("0", count=10_000)
    assert len(changes) == 5 * cluster.shards
    assert np.array_equal(np.unique(np.concatenate([c.ids for c in changes])), np.arange(500))
    rest = store.changes(changes[20].cursor, count=10_000)
    assert len(rest) == len(changes) - 21
    assert store.changes(changes[-1].cursor) == []
    # a composite cursor names no time: each entry carries its shard's write time
    assert all(c.written_at is not None and abs(c.written_at - time.time()) < 60 for c in changes)
    with pytest.raises(InvalidInput):
        store.changes("1700000000000-0")


def _trainer(nodes: str, namespace: str, worker: int, batches: int, out: Any) -> None:
    backend = RedisClusterTableBackend.from_nodes(nodes, namespace=namespace)
    store = backend.store(ITEMS)
    rng = np.random.default_rng(worker)
    sent = np.zeros(200, dtype=np.int64)
    for step in range(batches):
        ids = rng.integers(0, 200, size=128).astype(np.uint64)
        unique, counts = np.unique(ids, return_counts=True)
        pulled = store.pull(unique)
        grads = rng.normal(size=(unique.size, ITEMS.dim)).astype(np.float32) * 0.01
        with backend.transaction(group=f"trainer-{worker}") as txn:
            txn.put_hash("offsets", {"events/0": step + 1})
            store.push(pulled, grads, counts.astype(np.int64), np.full(unique.size, 1.0), txn)
        np.add.at(sent, ids.astype(np.int64), 1)
    out.put(sent.tolist())
    backend.close()


def test_three_concurrent_trainers_lose_no_update(
    cluster: RedisClusterTableBackend, cluster_nodes: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_trainer, args=(cluster_nodes, cluster.namespace, w, 60, out))
        for w in range(3)
    ]
    for proc in procs:
        proc.start()
    sent = np.sum([np.array(out.get(timeout=120)) for _ in procs], axis=0)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    rows = cluster.store(ITEMS).read_rows(np.arange(200, dtype=np.uint64))
    counts = np.zeros(200, dtype=np.int64)
    counts[rows.ids.astype(np.int64)] = rows.count
    assert int(sent.sum()) == 3 * 60 * 128
    np.testing.assert_array_equal(counts, sent)
    for w in range(3):
        assert cluster.get_hash("offsets", group=f"trainer-{w}") == {"events/0": b"60"}


def test_a_record_cut_short_by_a_crash_is_replayed_exactly_once(
    cluster: RedisClusterTableBackend, cluster_nodes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = cluster.store(ITEMS)
    ids = np.arange(1000, dtype=np.uint64)
    grads = np.ones((ids.size, ITEMS.dim), np.float32)
    applied: list[int] = []
    original = cluster.apply_shards

    def crash_after_three(by_shard: dict[int, Any], **kw: Any) -> Any:
        # the record commits and three shards apply; the process dies before the others
        first = dict(sorted(by_shard.items())[:3])
        applied.extend(original(first, **kw))
        raise StoreUnavailable("killed mid-commit")

    monkeypatch.setattr(cluster, "apply_shards", crash_after_three)
    with pytest.raises(StoreUnavailable), cluster.transaction(group="g") as txn:
        txn.put_hash("offsets", {"events/0": 7})
        store.push(store.pull(ids), grads, np.ones(ids.size, np.int64), np.ones(ids.size), txn)
    # The record committed with the offsets; three shards have the step, nine do not yet.
    assert cluster.get_hash("offsets", group="g") == {"events/0": b"7"}
    assert len(applied) == 3
    partial = store.read_rows(ids)
    assert 0 < len(partial) < ids.size

    restarted = RedisClusterTableBackend.from_nodes(cluster_nodes, namespace=cluster.namespace)
    again = restarted.store(ITEMS)
    with restarted.transaction(group="g"):
        pass
    rows = again.read_rows(ids)
    np.testing.assert_array_equal(rows.ids, ids)
    np.testing.assert_array_equal(rows.count, np.ones(ids.size))
    batch, updates = decode_record(
        restarted.get_blob(RECORD_KEY, group="g") or b"", {"item": again}
    )
    assert sum(u.ids.size for u in updates) == ids.size
    assert restarted.recover("g") == 0
    np.testing.assert_array_equal(again.read_rows(ids).count, np.ones(ids.size))
    shard = int(restarted.shard_of(ids[:1])[0])
    field = restarted.router.slot_client(key_slot(restarted.tag(shard).encode())).get(
        restarted.applied_key(shard, "g")
    )
    assert field == batch.encode()
    restarted.close()


def test_metadata_lives_in_its_group_slot(cluster: RedisClusterTableBackend) -> None:
    with cluster.transaction(group="trainers") as txn:
        txn.put_hash("offsets", {"events/3": 42})
        txn.put_blob("checkpoint", b"state")
    key = f"{cluster.namespace}:meta:{{m.trainers}}:offsets"
    owner = cluster.router.master_of(key_slot(key.encode()))
    assert cluster.router.node_client(owner).hgetall(key) == {b"events/3": b"42"}
    assert cluster.get_blob("checkpoint", group="trainers") == b"state"
    assert cluster.get_hash("offsets", group="other") == {}
    with pytest.raises(InvalidInput):
        cluster.transaction(group="a{b}")


def test_unreachable_cluster_raises_store_unavailable() -> None:
    backend = RedisClusterTableBackend.from_nodes("127.0.0.1:1", socket_timeout_s=0.5)
    assert backend.ping() is False
    with pytest.raises(StoreUnavailable):
        backend.store(ITEMS).lookup(np.arange(3, dtype=np.uint64))
    backend.close()


def test_backend_refuses_braces_and_foreign_transactions(
    cluster: RedisClusterTableBackend, cluster_nodes: str
) -> None:
    other = RedisClusterTableBackend.from_nodes(cluster_nodes, namespace=cluster.namespace)
    store = cluster.store(ITEMS)
    ids = np.arange(3, dtype=np.uint64)
    with pytest.raises(TypeError), other.transaction() as txn:
        store.push(store.pull(ids), np.ones((3, 8), np.float32), np.ones(3, np.int64),
                   np.ones(3), txn)  # fmt: skip
    other.close()
    with pytest.raises(ConfigError):
        RedisClusterTableBackend.from_nodes(cluster_nodes, namespace="a{b}")
