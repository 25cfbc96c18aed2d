"""Session fixtures: real Redis and real Kafka on 127.0.0.1, and per-test names.

Servers already answering are used as they are; otherwise the session starts them with
`deploy/local/servers.sh` and stops them at the end. A server that cannot be started fails
the tests that need it with the reason, never a skip. `cluster_servers` does the same for the
cluster topology (a Redis Cluster and a 3-node Kafka, `FRESHREC_TOPOLOGY=cluster`).
"""

from __future__ import annotations

import gc
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from kafka.admin import KafkaAdminClient, NewTopic

from tests.cluster_servers import ClusterServers
from tests.private_servers import PrivateKafka, PrivateRedis

ROOT = Path(__file__).resolve().parents[1]
SERVERS = ROOT / "deploy" / "local" / "servers.sh"


@dataclass(frozen=True)
class Servers:
    redis_url: str
    kafka_bootstrap: str


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    redis_port = int(os.environ.get("FRESHREC_REDIS_PORT", "6379"))
    kafka_port = int(os.environ.get("FRESHREC_KAFKA_PORT", "9092"))
    started = not (_port_open(redis_port) and _port_open(kafka_port))
    env = {**os.environ, "FRESHREC_TOPOLOGY": "single"}
    if started:
        proc = subprocess.run(
            ["bash", str(SERVERS), "up"], env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            pytest.fail(
                f"could not start Redis/Kafka with {SERVERS} up:\n{proc.stderr}", pytrace=False
            )
    try:
        yield Servers(
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        )
    finally:
        if started:
            subprocess.run(
                ["bash", str(SERVERS), "down"], env=env, capture_output=True, check=False
            )


@pytest.fixture(scope="session")
def cluster_servers() -> Iterator[ClusterServers]:
    """The cluster topology on the ports of the `FRESHREC_*_CLUSTER_PORT` knobs.

    `servers.sh up` runs either way: it starts nothing when every node answers, and returns
    once the Redis Cluster is ok and every broker is live. Only a session that found a node
    not answering stops the topology (`servers.sh down`: the processes of its pid files) at
    the end, or at once when `up` failed.
    """
    cluster = ClusterServers.from_env()
    started = not cluster.answering()
    try:
        cluster.up()
    except BaseException:
        if started:  # nodes started before the failure must not outlive the session
            cluster.down(check=False)
        raise
    try:
        yield cluster
    finally:
        if started:
            cluster.down()


@pytest.fixture
def redis_client(servers: Servers) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(servers.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {servers.redis_url} does not answer: {exc}", pytrace=False)
    yield client
    client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, servers: Servers) -> Iterator[str]:
    """A key/topic prefix no other test uses; the test's Redis keys are deleted afterwards."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")
    ns = f"t-{name}-{uuid.uuid4().hex[:8]}"
    yield ns
    client = redis.Redis.from_url(servers.redis_url)
    try:
        batch = list(client.scan_iter(match=f"{ns}:*", count=1000))
        for start in range(0, len(batch), 1000):
            client.delete(*batch[start : start + 1000])
    finally:
        client.close()


@pytest.fixture
def make_topic(servers: Servers, namespace: str) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics for one test and deletes them afterwards."""
    admin = KafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap, client_id="tests")
    created: list[str] = []

    def make(suffix: str = "events", partitions: int = 1) -> str:
        topic = f"{namespace}.{suffix}"
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        created.append(topic)
        return topic

    yield make
    if created:
        admin.delete_topics(created)
    admin.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of the test's own (AOF on) that it may kill and restart."""
    server = PrivateRedis(tmp_path / "private-redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """A broker of the test's own that it may stop and restart."""
    broker = PrivateKafka(tmp_path / "private-kafka")
    broker.up()
    try:
        yield broker
    finally:
        broker.down()
        # kafka-python leaves refused connections' sockets to the garbage collector: collect
        # them while the test's warning filters still apply
        gc.collect()
