"""The stack rides through the loss of one of three Kafka brokers: nothing done by hand (#16).

The stack runs on a private 3-broker Kafka (KRaft, each node broker and controller, on free
ports; the events topic 6 partitions, RF 3, min ISR 2) and the session's Redis Cluster. While a
careful producer streams 10,000 uniquely identified events through ingest, the broker leading
partition 0 of the events topic is killed with SIGKILL, kept down after the others fenced it,
and restarted on its log directory. Ingest must acknowledge (202) while it is down, no
acknowledged event may be lost, and training goes on: every acknowledged event is trained
exactly once. The answers other than 202 are counted and printed.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from freshrec.client import FreshrecClient, RetryNotice
from freshrec.offline.bench.soak import SteadyProducer
from tests.cluster_servers import KAFKA_NODE_IDS, ClusterServers, free_port_run
from tests.conftest import Servers
from tests.e2e.cluster import cluster_stack_env, wipe_cluster_namespace
from tests.e2e.conftest import Stack
from tests.e2e.streams import assert_trained_exactly_once, consumed
from tests.e2e.streams import stream_event as _event
from tests.waiting import wait_until

EVENTS = 10_000
DOWN_S = 5.0  # the broker stays down this long after it was fenced


class CountingProducer(SteadyProducer):
    """`SteadyProducer` that also counts every answer by status (``None``: no answer)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: Counter[int | None] = Counter()

    def _count_retry(self, notice: RetryNotice) -> None:
        super()._count_retry(notice)
        self.answers[notice.status] += 1

    def post_until_accepted(self, client: FreshrecClient, events: list[dict[str, Any]]) -> None:
        super().post_until_accepted(client, events)
        self.answers[202] += 1


@pytest.fixture(scope="module")
def private_kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """A 3-broker Kafka of the module's own that its test may kill a broker of."""
    base = free_port_run(2 * len(KAFKA_NODE_IDS))  # broker and controller port per node
    cluster = ClusterServers(  # Kafka only: its Redis ports are never used
        tmp_path_factory.mktemp("broker-loss") / "run", redis_port=base, kafka_port=base
    )
    try:
        cluster.up("kafka")
        yield cluster
    finally:
        cluster.down("kafka", check=False)
        gc.collect()  # kafka-python's refused sockets, while the warning filters apply


@pytest.fixture
def stack_servers(servers: Servers, private_kafka_cluster: ClusterServers) -> Servers:
    return Servers(redis_url=servers.redis_url, kafka_bootstrap=private_kafka_cluster.bootstrap)


@pytest.fixture
def stack_env(cluster_servers: ClusterServers, namespace: str) -> Iterator[dict[str, str]]:
    yield cluster_stack_env(cluster_servers, FRESHREC_EVENTS_TOPIC_PARTITIONS="6")
    wipe_cluster_namespace(cluster_servers, namespace)


def _leader_of_partition_0(bootstrap: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests")
    try:
        (described,) = admin.describe_topics([topic])
    finally:
        admin.close()
    partitions = described["partitions"]
    assert len(partitions) == 6, f"{topic} has {len(partitions)} partitions, not 6"
    assert all(len(p["replica_nodes"]) == 3 for p in partitions), "the events topic is RF 3"
    return int(next(p["leader_id"] for p in partitions if p["partition_index"] == 0))


def _end_offsets(bootstrap: str, topic: str) -> int:
    """Messages on `topic` (the sum of its partitions' end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, client_id="tests")
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return int(sum(consumer.end_offsets(partitions).values()))
    finally:
        consumer.close()


def test_a_broker_killed_mid_stream_loses_and_repeats_nothing(
    private_kafka_cluster: ClusterServers, running_stack: Stack
) -> None:
    stack = running_stack
    kafka = private_kafka_cluster
    batches = [
        [_event(k) for k in range(start, min(start + 100, EVENTS))]
        for start in range(0, EVENTS, 100)
    ]
    stream = CountingProducer(stack.ingest, stack.api_key, batches, 0.1)
    stream.start()
    try:
        wait_until(lambda: consumed(stack) >= EVENTS // 5, 120, "a fifth trained")
        victim = _leader_of_partition_0(kafka.bootstrap, f"{stack.namespace}.events")
        killed_at = time.monotonic()
        before = dict(stream.answers)
        kafka.kill_broker(victim)
        fenced_s = time.monotonic() - killed_at
        at_fenced, trained_at_fenced = stream.messages, consumed(stack)
        time.sleep(DOWN_S)
        acked_down = stream.messages - at_fenced
        trained_down = consumed(stack) - trained_at_fenced
        during: Counter[int | None] = Counter(stream.answers)
        during.subtract(before)
        kafka.restart_broker(victim)
        back_s = time.monotonic() - killed_at
    finally:
        stream.join()
    assert sum(stream.acked.values()) == EVENTS, "every event acknowledged"
    on_topic = _end_offsets(kafka.bootstrap, f"{stack.namespace}.events")
    assert on_topic >= stream.messages, "no acknowledged message lost from the topic"
    assert_trained_exactly_once(stack, stream, stack.env["FRESHREC_REDIS_URL"], on_topic)
    not_202 = {str(k): v for k, v in stream.answers.items() if k != 202}
    print(
        f"kafka broker loss: killed broker {victim} (leader of events partition 0), fenced "
        f"after {fenced_s:.1f} s, restarted and 3 brokers live after {back_s:.1f} s; answers "
        f"from the kill to the restart {dict(+during)}; over the whole stream "
        f"{dict(stream.answers)} (non-202: {not_202 or 'none'}); with the broker down "
        f"{DOWN_S:g} s: {acked_down} messages acknowledged, {trained_down} trained; "
        f"{stream.messages} messages acknowledged, {on_topic} on the topic, for {EVENTS} "
        "events, trained exactly once"
    )
    assert acked_down > 0, "ingest acknowledged nothing while one broker of three was down"
    assert trained_down > 0, "training stopped while one broker of three was down"
