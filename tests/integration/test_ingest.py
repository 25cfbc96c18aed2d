"""Ingest against real Kafka: events on the topic, refusals produce nothing, broker outages.

The outage test runs its own throwaway broker (`deploy/local/servers.sh` on a free port with
a temporary run directory) so stopping it disturbs nobody.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import FastAPI
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.consumer.fetcher import ConsumerRecord

from freshrec.settings import default_table_config_path
from freshrec.stream import DeadLetterWriter, decode_event, ensure_topics
from freshrec.stream.consumer import KafkaEventSource, KafkaSourceConfig
from freshrec.stream.deadletter import (
    HEADER_DETAIL,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)
from freshrec.table import RedisTableBackend, load_tables, open_tables
from freshrec.training import OnlineTrainer, TrainerConfig, TrainingLoop
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.conftest import Servers
from tests.private_servers import PrivateKafka, free_port_pair
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.servers,
    pytest.mark.anyio,
    # freshrec.api answers errors and /readyz with FastAPI's deprecated ORJSONResponse
]

KEY = "integration-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _event(i: int, user: str | int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e-{i}",
        "type": "click",
        "user_id": user,
        "item_id": f"i-{i % 7}",
        "request_id": f"r-{i // 3}",
        "timestamp": time.time() - 5,
        "context": {"device": "web", "slot": i % 4},
    }
    event.update(overrides)
    return event


@asynccontextmanager
async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=30) as client,
    ):
        yield client


def _read_topic(bootstrap: str, topic: str, deadline_s: float = 20.0) -> list[ConsumerRecord]:
    """Every message on `topic` now, partition by partition."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + deadline_s
        partitions = wait_until(
            lambda: consumer.partitions_for_topic(topic), deadline_s, f"partitions of {topic}"
        )
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _settings(servers: Servers, namespace: str, topic: str, **overrides: Any) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=servers.kafka_bootstrap,
        namespace=namespace,
        events_topic=topic,
        api_keys=KEY,
        **overrides,
    )


async def test_posted_events_are_on_the_topic_keyed_by_user_with_accepted_at(
    servers: Servers, namespace: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("events", partitions=4)
    users: list[str | int] = ["alice", "bob", 7, 2**64 - 1, "carol", 12]
    batches = [
        [_event(i, users[i % len(users)]) for i in range(0, 30)],
        [_event(i, users[i % len(users)], type="rating", value=4.0) for i in range(30, 48)],
    ]
    before = time.time()
    async with _client(create_app(_settings(servers, namespace, topic))) as client:
        for batch in batches:
            response = await client.post("/v1/events", json={"events": batch}, headers=AUTH)
            assert response.status_code == 202, response.text
            assert response.json() == {"accepted": len(batch)}
        assert (await client.get("/readyz")).status_code == 200
    after = time.time()

    records = _read_topic(servers.kafka_bootstrap, topic)
    posted = {e["event_id"]: e for batch in batches for e in batch}
    assert sorted(decode_event(r.value).event_id for r in records) == sorted(posted)
    partition_of_user: dict[bytes, set[int]] = {}
    order_of_user: dict[bytes, list[int]] = {}
    for record in records:
        event = decode_event(record.value)
        sent = posted[event.event_id]
        assert record.key == str(sent["user_id"]).encode()
        assert event.user_id == sent["user_id"]
        assert event.item_id == sent["item_id"]
        assert event.context == sent["context"]
        assert event.timestamp == sent["timestamp"]
        assert before <= event.accepted_at <= after
        partition_of_user.setdefault(record.key, set()).add(record.partition)
        order_of_user.setdefault(record.key, []).append(int(event.event_id.removeprefix("e-")))
    assert all(len(p) == 1 for p in partition_of_user.values()), partition_of_user
    assert len(partition_of_user) == len(users)
    # one partition per user, read in offset order: the posting order is kept
    assert all(seq == sorted(seq) for seq in order_of_user.values())


async def test_refused_requests_produce_nothing(
    servers: Servers, namespace: str, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("events", partitions=2)
    settings = _settings(servers, namespace, topic, max_body_bytes=4096, max_batch_events=10)
    async with _client(create_app(settings)) as client:
        invalid = await client.post(
            "/v1/events",
            json={"events": [_event(0, "u"), _event(1, "u", user_id=None), _event(2, "u")]},
            headers=AUTH,
        )
        too_big = await client.post(
            "/v1/events", json={"events": [_event(0, "u", pad="x" * 5000)]}, headers=AUTH
        )
        too_many = await client.post(
            "/v1/events", json={"events": [_event(i, "u") for i in range(11)]}, headers=AUTH
        )
        no_key = await client.post("/v1/events", json={"events": [_event(0, "u")]})
        wrong_key = await client.post(
            "/v1/events",
            json={"events": [_event(0, "u")]},
            headers={"Authorization": "Bearer nope"},
        )
        assert _read_topic(servers.kafka_bootstrap, topic) == []
        accepted = await client.post("/v1/events", json={"events": [_event(9, "u")]}, headers=AUTH)

    assert invalid.status_code == 422
    details = invalid.json()["details"]
    assert [(d["index"], d["field"]) for d in details] == [(1, "user_id")]
    assert too_big.status_code == 413
    assert too_many.status_code == 413
    assert [no_key.status_code, wrong_key.status_code] == [401, 401]
    assert accepted.status_code == 202
    records = _read_topic(servers.kafka_bootstrap, topic)
    assert [decode_event(r.value).event_id for r in records] == ["e-9"]


@pytest.fixture
def topics_to_delete(servers: Servers) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    if names:
        admin = KafkaAdminClient(bootstrap_servers=servers.kafka_bootstrap)
        try:
            admin.delete_topics(names)
        finally:
            admin.close()


def test_ensure_topics_is_idempotent_and_dead_letters_keep_bytes_and_origin(
    servers: Servers, namespace: str, topics_to_delete: list[str]
) -> None:
    events, dlq = f"{namespace}.events", f"{namespace}.events.dlq"
    topics_to_delete.extend([events, dlq])
    assert ensure_topics(servers.kafka_bootstrap, {events: 3}) == [events]
    assert ensure_topics(servers.kafka_bootstrap, {events: 3}) == []

    writer = DeadLetterWriter(servers.kafka_bootstrap, dlq, partitions=1)
    try:
        assert writer.ready()
        writer.send(b"\xffnot json", "not_json", events, 2, 41, key=b"u-1", detail="bad byte")
        writer.send(b"", "schema", events, 0, 7)
    finally:
        writer.close()
    records = _read_topic(servers.kafka_bootstrap, dlq)
    assert [(r.key, r.value) for r in records] == [(b"u-1", b"\xffnot json"), (None, b"")]
    first = dict(records[0].headers)
    assert first == {
        HEADER_REASON: b"not_json",
        HEADER_DETAIL: b"bad byte",
        HEADER_SOURCE_TOPIC: events.encode(),
        HEADER_SOURCE_PARTITION: b"2",
        HEADER_SOURCE_OFFSET: b"41",
    }
    assert dict(records[1].headers)[HEADER_SOURCE_OFFSET] == b"7"
    consumer = KafkaConsumer(bootstrap_servers=servers.kafka_bootstrap)
    try:
        assert consumer.partitions_for_topic(events) == {0, 1, 2}
    finally:
        consumer.close()


@pytest.mark.parametrize("reader_process", [True, False])
def test_the_trainer_parks_poison_messages_byte_for_byte(
    servers: Servers,
    namespace: str,
    topics_to_delete: list[str],
    redis_client: redis.Redis,
    reader_process: bool,
) -> None:
    events, dlq = f"{namespace}.events", f"{namespace}.events.dlq"
    topics_to_delete.extend([events, dlq])
    ensure_topics(servers.kafka_bootstrap, {events: 1, dlq: 1})
    producer = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap)
    poison = [
        (b"u-1", b"\xffnot json", [("trace", b"\x00\xff"), ("trace", b"second")]),
        (b"u-2", None, [("x", b"1")]),
        (None, b"{}", []),
    ]
    for key, value, headers in poison:
        producer.send(events, key=key, value=value, headers=headers)
    producer.flush(timeout=30)
    producer.close()
    _read_topic(servers.kafka_bootstrap, events)  # metadata known: the group assigns at once
    writer = DeadLetterWriter(servers.kafka_bootstrap, dlq)
    tables = open_tables(
        load_tables(default_table_config_path()), RedisTableBackend(redis_client, namespace)
    )
    trainer = OnlineTrainer(tables, TrainerConfig(group=f"{namespace}-g"), dead_letters=writer.park)
    source = KafkaEventSource(
        servers.kafka_bootstrap,
        events,
        trainer.config.group,
        max_records=100,
        config=KafkaSourceConfig(reader_process=reader_process),
    )
    loop = TrainingLoop(trainer, source, batch_size=100, max_wait_s=0.05)
    stop = threading.Event()
    try:
        wait_until(
            lambda: loop.step(stop) is not None and trainer.offsets.get((events, 0)) == 3,
            120,
            "the three messages consumed",
        )
    finally:
        source.close()
        writer.close()
    records = _read_topic(servers.kafka_bootstrap, dlq)
    assert [(r.key, r.value) for r in records] == [(k, v) for k, v, _ in poison]
    for record, (_, _, headers) in zip(records, poison, strict=True):
        own = [(name, value) for name, value in record.headers if not name.startswith("freshrec")]
        assert own == headers, "the message's own headers, in order, byte for byte"
        assert dict(record.headers)[HEADER_SOURCE_TOPIC] == events.encode()


# ------------------------------------------------------------------ broker outage


async def _post(client: httpx.AsyncClient, first: int, n: int) -> tuple[httpx.Response, float]:
    events = [_event(i, f"user-{i % 5}") for i in range(first, first + n)]
    start = time.monotonic()
    response = await client.post("/v1/events", json={"events": events})
    return response, time.monotonic() - start


# kafka-python 3.0.12 drops the socket of a refused connection without closing it; the
# garbage collector closes it, with a ResourceWarning
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
async def test_broker_down_is_503_and_every_202_event_is_on_the_topic(
    private_kafka: PrivateKafka, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    # the client's connection errors during the outage are expected; captured log records
    # would also keep those errors (and the sockets their frames hold) alive past this test
    caplog.set_level(logging.CRITICAL, logger="kafka")
    settings = IngestSettings(
        kafka_bootstrap=private_kafka.bootstrap,
        namespace=namespace,
        api_keys=[],
        events_topic_partitions=2,
        produce_timeout_s=2.0,
        kafka_connect_timeout_s=1.0,
    )
    acknowledged: list[str] = []
    async with _client(create_app(settings)) as client:
        response, _ = await _post(client, 0, 10)
        assert response.status_code == 202, response.text
        acknowledged += [f"e-{i}" for i in range(0, 10)]

        private_kafka.down()
        for first in (10, 20):  # a producer with a live connection, then one that lost it
            response, elapsed = await _post(client, first, 10)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "BrokerUnavailable"
            assert int(response.headers["retry-after"]) > 0
            assert elapsed < 10, f"503 took {elapsed:.1f}s"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"kafka": False}

        private_kafka.up()
        deadline = time.monotonic() + 30
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "ingest not ready 30 s after Kafka came back"
            await anyio.sleep(0.2)
        # as a client would: the same batch again while the answer is 503 (a loaded machine
        # may need a moment after readiness to reconnect the producer), never anything else
        response, _ = await _post(client, 30, 10)
        while response.status_code == 503 and time.monotonic() < deadline:
            await anyio.sleep(0.2)
            response, _ = await _post(client, 30, 10)
        assert response.status_code == 202, response.text
        acknowledged += [f"e-{i}" for i in range(30, 40)]

    on_topic = [
        decode_event(r.value).event_id
        for r in _read_topic(private_kafka.bootstrap, settings.events_topic)
    ]
    assert set(acknowledged) <= set(on_topic)
    # a 503 batch may have partly landed (at least once), but nothing unposted appears
    assert set(on_topic) <= {f"e-{i}" for i in range(40)}


@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
async def test_service_starts_while_kafka_is_down_and_answers_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.CRITICAL, logger="kafka")
    port = free_port_pair()  # nothing listens there
    settings = IngestSettings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        namespace=f"t-ingest-down-{uuid.uuid4().hex[:8]}",
        api_keys=[],
        kafka_connect_timeout_s=0.5,
    )
    async with _client(create_app(settings)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        first, elapsed = await _post(client, 0, 3)
        second, _ = await _post(client, 3, 3)
    assert ready.status_code == 503
    assert [first.status_code, second.status_code] == [503, 503]
    assert "Retry-After" in first.headers
    assert elapsed < 10, f"503 took {elapsed:.1f}s"
    gc.collect()
