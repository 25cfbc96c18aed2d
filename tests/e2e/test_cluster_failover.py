"""The stack rides through a Redis Cluster master failover: nothing done by hand.

The stack runs on a private Redis Cluster (3 masters + 3 replicas on free ports, node timeout
1 s), so killing a node disturbs no other test, with the session's 3-broker Kafka. While a
careful producer streams 10,000 uniquely identified events through ingest, the master that
serves the trainer's commit group (its offsets, checkpoint and commit record, and a third of
the row shards) is killed with SIGKILL; its replica is promoted; the killed node is restarted
and rejoins as a replica. The trainer, ingest and ranker are left alone.

- ``FRESHREC_REDIS_WAIT_REPLICAS=1``: every acknowledged event is trained exactly once.
- ``FRESHREC_REDIS_WAIT_REPLICAS=0``: what the failover loses is measured and printed; no
  event may be trained twice.

Both print how long training stalled and each setting's commit cost on the same stream before
the kill (docs/scaling.md, "Failures and what they cost").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from freshrec.models import entity_row_ids
from freshrec.settings import default_table_config_path
from freshrec.table import load_tables, open_backend, open_tables
from freshrec.table.backends import redis_backend_config
from freshrec.table.redis_cluster.backend import group_tag
from freshrec.table.redis_cluster.router import tag_slot
from tests.cluster_servers import REDIS_NODES, ClusterServers, free_port_run
from tests.conftest import Servers
from tests.e2e.conftest import Stack, ready
from tests.e2e.streams import USERS, consumed, event_stream
from tests.waiting import wait_until

EVENTS = 10_000
NODE_TIMEOUT_MS = 1000


@pytest.fixture(scope="module")
def private_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """A Redis Cluster of the module's own that its tests may kill nodes of."""
    base = free_port_run(2 * REDIS_NODES)  # node ports, then their bus ports
    cluster = ClusterServers(  # Redis only: its Kafka ports are never used
        tmp_path_factory.mktemp("failover") / "run",
        redis_port=base,
        redis_bus_port=base + REDIS_NODES,
        kafka_port=base,
    )
    cluster.env["FRESHREC_REDIS_CLUSTER_NODE_TIMEOUT"] = str(NODE_TIMEOUT_MS)
    try:
        cluster.up("redis")
        yield cluster
    finally:
        cluster.down("redis", check=False)


@pytest.fixture(params=[1, 0], ids=["wait-1", "wait-0"])
def wait_replicas(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def stack_servers(servers: Servers, cluster_servers: ClusterServers) -> Servers:
    return Servers(redis_url=servers.redis_url, kafka_bootstrap=cluster_servers.bootstrap)


@pytest.fixture
def stack_env(private_cluster: ClusterServers, wait_replicas: int) -> dict[str, str]:
    return {
        "FRESHREC_REDIS_CLUSTER_NODES": private_cluster.redis_nodes,
        "FRESHREC_REDIS_WAIT_REPLICAS": str(wait_replicas),
        "FRESHREC_EVENTS_TOPIC_PARTITIONS": "6",
    }


def metric_sums(url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the trainer's batch time and the table's commit and apply times."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out: dict[str, tuple[float, float]] = {}
    wanted = {
        "freshrec_trainer_batch_duration_seconds": "batch",
        "freshrec_table_op_duration_seconds": "",
    }
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        for sample in family.samples:
            name = wanted[family.name] or sample.labels.get("op", "")
            if name not in ("batch", "commit", "apply"):
                continue
            if family.name.endswith("op_duration_seconds") and sample.labels["table"] != "meta":
                continue
            total, count = out.get(name, (0.0, 0.0))
            if sample.name.endswith("_sum"):
                out[name] = (sample.value, count)
            elif sample.name.endswith("_count"):
                out[name] = (total, sample.value)
    return out


def trained_counts(stack: Stack) -> tuple[dict[str, int], int]:
    """Occurrence count of each stream user's row, and the rows' total."""
    backend = open_backend(
        redis_backend_config(
            stack.env["FRESHREC_REDIS_URL"],
            stack.namespace,
            cluster_nodes=stack.env["FRESHREC_REDIS_CLUSTER_NODES"],
        )
    )
    try:
        tables = open_tables(load_tables(default_table_config_path()), backend)
        users = [f"u{n}" for n in range(USERS)]
        rows = tables.user.read_rows(entity_row_ids("user", users))
        by_id = dict(zip(rows.ids.tolist(), rows.count.tolist(), strict=True))
        ids = entity_row_ids("user", users).tolist()
        return {u: int(by_id.get(i, 0)) for u, i in zip(users, ids, strict=True)}, int(
            np.sum(rows.count)
        )
    finally:
        backend.close()


def recommends(stack: Stack) -> bool:
    try:
        response = httpx.post(
            stack.url("ranker") + "/v1/recommend",
            json={"user_id": "u1", "k": 10},
            headers={"X-API-Key": stack.api_key},
            timeout=5,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and len(response.json()["items"]) == 10


def test_a_redis_master_failover_mid_stream(
    private_cluster: ClusterServers,
    wait_replicas: int,
    running_stack: Stack,
) -> None:
    stack = running_stack
    group = stack.env["FRESHREC_TRAINER__GROUP"]
    stream = event_stream(stack, EVENTS, batch=100, pause_s=0.1).start()
    try:
        wait_until(lambda: consumed(stack) >= EVENTS // 5, 120, "a fifth trained")
        cost = metric_sums(stack.url("trainer"))
        # the master of the commit group's slot: offsets, checkpoint, commit record
        slot = tag_slot(group_tag(group))
        victim = next(p for p in private_cluster.redis_masters() if _serves(p, slot))
        killed_at = time.monotonic()
        at_kill = consumed(stack)
        promoted = private_cluster.kill_redis_master(victim)
        promoted_s = time.monotonic() - killed_at
        # the killed node restarts while training and serving are timed: with WAIT 1 a
        # master with no replica cannot commit, so training waits for it
        with ThreadPoolExecutor(1) as pool:
            restart = pool.submit(private_cluster.restart_redis_node, victim)
            wait_until(lambda: consumed(stack) > at_kill, 90, "training to resume")
            resumed_s = time.monotonic() - killed_at
            wait_until(lambda: recommends(stack), 60, "the ranker to answer again")
            serving_s = time.monotonic() - killed_at
            restart.result(timeout=120)
            rejoined_s = time.monotonic() - killed_at
    finally:
        stream.join()
    assert sum(stream.acked.values()) == EVENTS, "every event acknowledged"
    wait_until(
        lambda: consumed(stack) == stream.messages,
        180,
        f"all {stream.messages} messages consumed",
        detail=lambda: f"consumed {consumed(stack)}",
    )
    counts, total = trained_counts(stack)
    acked = dict(stream.acked)
    missing = sum(max(acked[u] - counts[u], 0) for u in acked)
    doubled = {u: (counts[u], acked[u]) for u in acked if counts[u] > acked[u]}
    per_batch = {name: 1000 * s / c if c else float("nan") for name, (s, c) in sorted(cost.items())}
    print(
        f"redis failover, WAIT {wait_replicas}: killed master {victim} (commit group's slot "
        f"{slot}), replica {promoted} promoted after {promoted_s:.1f} s, killed node a synced "
        f"replica again after {rejoined_s:.1f} s; training resumed {resumed_s:.1f} s after "
        f"the kill, the ranker answered after {serving_s:.1f} s; trained {total} of "
        f"{sum(acked.values())} acknowledged events: {missing} missing, "
        f"{sum(c - a for c, a in doubled.values())} applied twice; before the kill, mean ms "
        + ", ".join(f"{k} {v:.1f}" for k, v in per_batch.items())
        + f"; {stream.messages} messages, {stream.retries} retried posts"
    )
    assert ready(stack.url("ingest"))
    assert not doubled, f"events trained twice (trained, acknowledged): {doubled}"
    if wait_replicas:
        assert missing == 0, f"{missing} acknowledged events lost with WAIT 1"
        assert counts == acked


def _serves(port: int, slot: int) -> bool:
    """Whether the master on `port` serves `slot` (from its own CLUSTER SLOTS)."""
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        reply = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    return any(
        int(start) <= slot <= int(end) and int(master[1]) == port
        for start, end, master, *_ in reply
    )
