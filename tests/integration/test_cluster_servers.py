"""The cluster topology is the real thing: a Redis Cluster that fails over, a 3-broker Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from redis.cluster import RedisCluster

from freshrec.stream.topics import ensure_topics
from tests.cluster_servers import (
    CLUSTER_EVENTS_PARTITIONS,
    KAFKA_NODE_IDS,
    REDIS_NODES,
    REDIS_SLOTS,
    ClusterServers,
    free_port_run,
    pid_alive,
)
from tests.private_servers import port_answers
from tests.waiting import wait_until


@pytest.fixture
def admin(cluster_servers: ClusterServers) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=cluster_servers.bootstrap, client_id="tests")
    yield client
    client.close()


def _owner(client: RedisCluster, key: str) -> int:
    """The port of the master serving `key`'s slot."""
    return int(client.get_node_from_key(key).port)  # type: ignore[no-untyped-call]


def _covered_slots(port: int) -> list[int]:
    """How many times each slot is served, from `CLUSTER SLOTS` of the node on `port`."""
    client = redis.Redis(port=port)
    try:
        ranges = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    counts = [0] * REDIS_SLOTS
    for first, last, *_ in ranges:
        for slot in range(int(first), int(last) + 1):
            counts[slot] += 1
    return counts


def test_redis_cluster_ok_with_3_masters_3_replicas_and_every_slot(
    cluster_servers: ClusterServers,
) -> None:
    for port in cluster_servers.redis_ports:
        info = cluster_servers.cluster_info(port)
        assert info["cluster_state"] == "ok", (port, info)
        assert info["cluster_slots_assigned"] == str(REDIS_SLOTS)
        assert info["cluster_slots_ok"] == str(REDIS_SLOTS)
        assert info["cluster_known_nodes"] == str(REDIS_NODES)
    nodes = cluster_servers.cluster_nodes(cluster_servers.redis_ports[0])
    masters = {n.node_id: n for n in nodes if n.role == "master"}
    replicas = [n for n in nodes if n.role == "replica"]
    assert len(masters) == 3 and len(replicas) == 3
    assert sorted(r.master_id or "" for r in replicas) == sorted(masters)
    assert sum(m.slots for m in masters.values()) == REDIS_SLOTS
    assert not any(n.failed for n in nodes)
    assert _covered_slots(cluster_servers.redis_ports[0]) == [1] * REDIS_SLOTS


def test_redis_cluster_client_writes_and_reads_back_across_masters(
    cluster_servers: ClusterServers,
) -> None:
    client = RedisCluster(startup_nodes=cluster_servers.startup_nodes)
    keys = [f"t-cluster-{uuid.uuid4().hex[:8]}:{i}" for i in range(60)]
    try:
        for i, key in enumerate(keys):
            client.set(key, f"v{i}".encode())
        assert [client.get(key) for key in keys] == [f"v{i}".encode() for i in range(60)]
        owners = {_owner(client, key) for key in keys}
        assert owners == set(cluster_servers.redis_masters())
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        for key in keys:
            client.delete(key)
        client.close()


def test_kafka_cluster_has_3_brokers(
    cluster_servers: ClusterServers, admin: KafkaAdminClient
) -> None:
    brokers = admin.describe_cluster()["brokers"]
    assert sorted(b["broker_id"] for b in brokers) == list(KAFKA_NODE_IDS)
    assert {b["port"] for b in brokers} == set(cluster_servers.kafka_ports.values())
    for node_id in KAFKA_NODE_IDS:
        assert cluster_servers.live_brokers(node_id) == list(KAFKA_NODE_IDS)


def test_ensure_topics_creates_the_events_topic_replicated_3_with_min_isr_2(
    cluster_servers: ClusterServers, admin: KafkaAdminClient
) -> None:
    topic = f"t-cluster-{uuid.uuid4().hex[:8]}.events"
    try:
        assert ensure_topics(cluster_servers.bootstrap, {topic: CLUSTER_EVENTS_PARTITIONS}) == [
            topic
        ]

        def replicated() -> bool:
            # a loaded broker may answer metadata before every replica has registered
            (described,) = admin.describe_topics([topic])
            found = described["partitions"]
            return len(found) >= 6 and all(
                sorted(p["replica_nodes"]) == list(KAFKA_NODE_IDS) for p in found
            )

        wait_until(replicated, 30, "every partition on the 3 brokers")
        (described,) = admin.describe_topics([topic])
        partitions = described["partitions"]
        # leaders spread over the brokers, so losing one moves only a third of them
        assert {p["leader_id"] for p in partitions} == set(KAFKA_NODE_IDS)
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )["topic"][topic]
        assert configs["min.insync.replicas"]["value"] == "2"
        assert configs["unclean.leader.election.enable"]["value"] == "false"
    finally:
        admin.delete_topics([topic])


def test_up_again_on_the_running_cluster_starts_nothing(cluster_servers: ClusterServers) -> None:
    before = cluster_servers.pids()
    log = cluster_servers.up()
    assert "redis cluster already healthy" in log
    assert "kafka cluster already serving" in log
    assert "started" not in log
    assert cluster_servers.pids() == before


def test_private_redis_cluster_fails_over_a_killed_master_and_it_rejoins_as_replica(
    tmp_path: Path, cluster_servers: ClusterServers
) -> None:
    base = free_port_run(2 * REDIS_NODES)  # node ports, then their bus ports
    private = ClusterServers(  # Redis only: its Kafka ports are never used
        tmp_path / "run", redis_port=base, redis_bus_port=base + REDIS_NODES, kafka_port=base
    )
    session_pids = cluster_servers.pids()
    try:
        private.up("redis")
        started = private.pids()
        assert sorted(started) == sorted(f"redis-{p}" for p in private.redis_ports)
        assert "already healthy" in private.up("redis")
        assert private.pids() == started

        victim = private.redis_masters()[0]
        client = RedisCluster(startup_nodes=private.startup_nodes)
        try:
            key = next(
                k for k in (f"k{i}" for i in range(1000))
                if _owner(client, k) == victim
            )  # fmt: skip
            client.set(key, b"before")
            # replication is asynchronous: wait for the replica before the master dies
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            waited = client.execute_command("WAIT", 1, 5000, target_nodes=node)  # type: ignore[no-untyped-call]
            assert waited == 1
            replicas = private.replicas_of(victim)

            promoted = private.kill_redis_master(victim)
            assert promoted in replicas
            assert private.cluster_ok([p for p in private.redis_ports if p != victim])

            def reads_back() -> bool:
                try:
                    return client.get(key) == b"before"
                except redis.RedisError:
                    return False

            wait_until(reads_back, 15, f"{key} readable from the promoted master {promoted}")
        finally:
            client.close()

        private.restart_redis_node(victim)
        assert private.role(victim) == "replica"
        assert victim in private.replicas_of(promoted)
        assert private.cluster_ok()
    finally:
        pids = private.pids()
        private.down("redis")
    assert len(pids) == REDIS_NODES
    wait_until(
        lambda: (
            not any(pid_alive(pid) for pid in pids.values())
            and not any(port_answers(p) for p in private.redis_ports)
        ),
        10,
        "the private cluster's processes to end and its ports to close",
    )
    assert private.pids() == {}
    # `down` ended exactly its own processes: the session's cluster is as it was
    assert cluster_servers.pids() == session_pids
    assert cluster_servers.cluster_ok()
