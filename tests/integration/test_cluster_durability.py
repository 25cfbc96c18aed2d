"""`FRESHREC_REDIS_WAIT_REPLICAS` on the real Redis Cluster: what it guarantees, what it costs.

With ``wait_replicas=1`` a commit returns only once a replica holds it: the commit record and
every shard's rows can be read from the replicas right after. Asking for more replicas than
the cluster has fails the commit (`StoreUnavailable`: the trainer retries it) instead of
counting it. The test prints the commit latency with 0 and 1 replicas, measured on the same
batches interleaved (docs/scaling.md, "Failures and what they cost").
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from freshrec.errors import StoreUnavailable
from freshrec.table.base import EmbeddingStore
from freshrec.table.config import AdagradConfig, TableConfig
from freshrec.table.redis_cluster import RedisClusterTableBackend
from freshrec.table.redis_cluster.backend import RECORD_KEY, group_tag
from freshrec.table.redis_cluster.router import SlotRouter, tag_slot
from tests.cluster_servers import ClusterServers
from tests.private_servers import free_port

ITEMS = TableConfig(name="item", dim=16, optimizer=AdagradConfig(lr=0.05))
GROUP = "g"
ROUNDS = 100
BATCH_IDS = 256


@pytest.fixture
def namespace_on_cluster(cluster_servers: ClusterServers) -> Iterator[str]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    yield namespace
    backend = RedisClusterTableBackend.from_nodes(cluster_servers.redis_nodes, namespace)
    try:
        for node in backend.router.masters():
            client = backend.router.node_client(node)
            for key in list(client.scan_iter(match=f"{namespace}:*", count=10_000)):
                client.unlink(key)
    finally:
        backend.close()


def _commit(
    backend: RedisClusterTableBackend, store: EmbeddingStore, ids: np.ndarray, step: int
) -> float:
    """One trainer-like commit (offsets + a gradient step of `ids` in `store`); its seconds."""
    grads = np.full((ids.size, ITEMS.dim), 0.01, np.float32)
    started = time.perf_counter()
    txn = backend.transaction(GROUP)
    txn.put_hash(f"offsets:{GROUP}", {"events:0": step})
    store.apply_gradients(ids, grads, event_time=1_700_000_000.0 + step, txn=txn)
    txn.commit()
    return time.perf_counter() - started


def _replica_client(cluster: ClusterServers, backend: RedisClusterTableBackend) -> redis.Redis:
    master = backend.router.master_of(tag_slot(group_tag(GROUP)))
    replicas = cluster.replicas_of(master[1])
    assert replicas, f"the group's master {master} has no replica"
    client = redis.Redis(port=replicas[0], socket_timeout=5)
    client.execute_command("READONLY")  # type: ignore[no-untyped-call]
    return client


def test_wait_1_commits_are_on_a_replica_when_they_return_and_what_it_costs(
    cluster_servers: ClusterServers, namespace_on_cluster: str
) -> None:
    nodes = cluster_servers.redis_nodes
    backends = {
        wait: RedisClusterTableBackend.from_nodes(
            nodes, f"{namespace_on_cluster}-w{wait}", wait_replicas=wait
        )
        for wait in (0, 1)
    }
    stores = {wait: backend.store(ITEMS) for wait, backend in backends.items()}
    rng = np.random.default_rng(7)
    seconds: dict[int, list[float]] = {0: [], 1: []}
    try:
        replica = _replica_client(cluster_servers, backends[1])
        record_key = f"{namespace_on_cluster}-w1:meta:{group_tag(GROUP)}:{RECORD_KEY}"
        for step in range(ROUNDS):
            ids = rng.integers(1, 2**63, size=BATCH_IDS, dtype=np.uint64)
            for wait in (0, 1) if step % 2 else (1, 0):
                seconds[wait].append(_commit(backends[wait], stores[wait], ids, step))
            if step % 10 == 0:  # WAIT 1 returned: the replica has this very record
                master = backends[1].router.slot_client(tag_slot(group_tag(GROUP)))
                assert replica.get(record_key) == master.get(record_key)
        # every WAIT 1 commit applied all of its rows
        assert stores[1].stats().rows == ROUNDS * BATCH_IDS
        replica.close()

        # more replicas than the cluster has: the commit fails instead of counting
        strict = RedisClusterTableBackend.from_nodes(
            nodes, f"{namespace_on_cluster}-w2", wait_replicas=2
        )
        try:
            with pytest.raises(StoreUnavailable, match="replicas of the 2 required"):
                _commit(strict, strict.store(ITEMS), np.arange(1, 9, dtype=np.uint64), 0)
        finally:
            strict.close()
    finally:
        for backend in backends.values():
            backend.close()
    p50 = {w: 1000 * statistics.median(s) for w, s in seconds.items()}
    p99 = {w: 1000 * float(np.percentile(s, 99)) for w, s in seconds.items()}
    print(
        f"commit of {BATCH_IDS} ids on the cluster ({ROUNDS} each, interleaved): "
        f"WAIT 0 p50 {p50[0]:.2f} ms p99 {p99[0]:.2f} ms; WAIT 1 p50 {p50[1]:.2f} ms "
        f"p99 {p99[1]:.2f} ms; ratio of p50 {p50[1] / p50[0]:.2f}"
    )


def test_the_router_asks_a_node_that_did_not_answer_last(cluster_servers: ClusterServers) -> None:
    gone = ("127.0.0.1", free_port())  # nothing listens: a killed master
    live = [("127.0.0.1", port) for port in cluster_servers.redis_ports]
    router = SlotRouter([gone, live[0]], socket_timeout_s=2.0)
    try:
        router.refresh()
        assert router.nodes[-1] == gone
        assert set(live) <= set(router.nodes[:-1]), "the slot map's nodes are known"
        assert len(router.masters()) == 3
    finally:
        router.close()
