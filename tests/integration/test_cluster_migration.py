"""Moving from one Redis to the Redis Cluster: a snapshot restore carries every row.

A user on the single-node layout (version 1) takes a table snapshot and restores it into the
cluster layout (version 2, shards by hash tag); every row of every table comes back bit for
bit: vector, optimizer state, event time, wall time and occurrence count (docs/scaling.md,
"Moving from one node to the cluster").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from freshrec.table import restore_snapshot, save_snapshot
from freshrec.table.base import EmbeddingStore
from freshrec.table.config import AdagradConfig, AdamConfig, TableConfig
from freshrec.table.redis import RedisTableBackend
from freshrec.table.redis_cluster import RedisClusterTableBackend
from tests.cluster_servers import ClusterServers

USER = TableConfig(name="user", dim=8, optimizer=AdagradConfig(initial_accumulator=0.1))
ITEM = TableConfig(name="item", dim=4, optimizer=AdamConfig())
ROWS = 3000


@pytest.fixture
def cluster(cluster_servers: ClusterServers) -> Iterator[RedisClusterTableBackend]:
    backend = RedisClusterTableBackend.from_nodes(
        cluster_servers.redis_nodes, namespace=f"t{uuid.uuid4().hex[:10]}"
    )
    try:
        yield backend
    finally:
        for node in backend.router.masters():
            client = backend.router.node_client(node)
            for key in list(client.scan_iter(match=f"{backend.namespace}:*", count=10_000)):
                client.unlink(key)
        backend.close()


def _trained(store: EmbeddingStore, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**64 - 1, size=ROWS, dtype=np.uint64, endpoint=True)
    for t in range(3):
        grads = rng.normal(size=(ids.shape[0], store.config.dim)).astype(np.float32)
        store.apply_gradients(ids, grads, event_time=100.0 + t)


def _all_rows(store: EmbeddingStore) -> dict[int, tuple[Any, ...]]:
    out: dict[int, tuple[Any, ...]] = {}
    for rows in store.export(batch_size=1000):
        for k in range(len(rows)):
            out[int(rows.ids[k])] = (
                rows.vectors[k].tobytes(),
                rows.state[k].tobytes(),
                float(rows.event_time[k]),
                int(rows.count[k]),
            )
    return out


def test_a_single_node_snapshot_restored_into_the_cluster_gives_the_same_rows(
    redis_client: redis.Redis,
    namespace: str,
    cluster: RedisClusterTableBackend,
    tmp_path: Path,
) -> None:
    single = RedisTableBackend(redis_client, namespace)
    users, items = single.store(USER), single.store(ITEM)
    _trained(users, 1)
    _trained(items, 2)
    want = {"user": _all_rows(users), "item": _all_rows(items)}
    assert {name: len(rows) for name, rows in want.items()} == {"user": ROWS, "item": ROWS}

    manifest = save_snapshot([users, items], tmp_path / "snap")
    assert {t["name"]: t["rows"] for t in manifest["tables"]} == {"user": ROWS, "item": ROWS}

    restored_at = time.time()
    on_cluster = {"user": cluster.store(USER), "item": cluster.store(ITEM)}
    assert restore_snapshot(on_cluster, tmp_path / "snap") == {"user": ROWS, "item": ROWS}
    for name, store in on_cluster.items():
        assert _all_rows(store) == want[name], f"table {name} differs after the restore"
        assert store.stats().rows == ROWS
        assert float(np.min(store.read_rows(np.fromiter(want[name], np.uint64)).wall_time)) >= (
            restored_at - 1.0
        )
        # the rows are spread over the shards (layout version 2), not left in one slot
        shards = np.unique(cluster.shard_of(np.fromiter(want[name], np.uint64)))
        assert shards.size == cluster.shards
        # a restore announces its rows on the change feed, so every ranker rebuilds
        assert sum(c.ids.shape[0] for c in store.changes("0", count=10_000)) == ROWS

    # and the cluster trains on from the restored rows like the single node would
    probe = np.fromiter(list(want["user"])[:50], np.uint64)
    grads = np.ones((probe.size, USER.dim), np.float32)
    users.apply_gradients(probe, grads, event_time=200.0)
    on_cluster["user"].apply_gradients(probe, grads, event_time=200.0)
    a, b = users.read_rows(probe), on_cluster["user"].read_rows(probe)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.count, b.count)
