"""The local servers are the real thing: Kafka consumer groups and a durable Redis."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.conftest import Servers


def _consume(consumer: KafkaConsumer, want: int, deadline_s: float = 30.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
    return got


def _group_consumer(servers: Servers, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=servers.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=10,
    )


def test_consumer_group_commits_and_second_member_resumes(
    servers: Servers, make_topic: Callable[..., str], namespace: str
) -> None:
    topic = make_topic(partitions=1)
    group = f"{namespace}-group"
    producer = KafkaProducer(
        bootstrap_servers=servers.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    for i in range(20):
        producer.send(topic, value=f"m{i}".encode())
    producer.flush(timeout=30)
    producer.close()

    first = _group_consumer(servers, topic, group)
    got = _consume(first, 10)[:10]
    assert got == [f"m{i}".encode() for i in range(10)]
    tp = TopicPartition(topic, 0)
    first.commit({tp: OffsetAndMetadata(10, "", -1)})
    assert first.committed(tp) == 10
    first.close()

    second = _group_consumer(servers, topic, group)
    resumed = _consume(second, 10)
    second.close()
    assert resumed == [f"m{i}".encode() for i in range(10, 20)]


def test_redis_round_trip_and_aof_on(redis_client: redis.Redis, namespace: str) -> None:
    key = f"{namespace}:probe"
    payload = bytes(range(256)) * 4
    redis_client.set(key, payload)
    assert redis_client.get(key) == payload
    assert redis_client.config_get("appendonly") == {"appendonly": "yes"}
    assert redis_client.info("persistence")["aof_enabled"] == 1
