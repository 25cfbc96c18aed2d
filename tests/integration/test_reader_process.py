"""The record reader process on the real broker: positions and epochs come from the parent."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Any

import redis
from kafka import KafkaProducer

from freshrec.settings import default_table_config_path
from freshrec.stream.consumer import KafkaEventSource
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event, event_key
from freshrec.stream.reader import ReaderConfig, run_reader
from freshrec.stream.topics import ensure_topics
from freshrec.table import RedisTableBackend, load_tables, open_tables
from freshrec.training import OnlineTrainer, TrainerConfig, TrainingLoop
from tests.conftest import Servers

T0 = 1_700_000_000.0

N = 300


def _runs(out: Any, epoch: int, want: int, deadline_s: float = 30.0) -> list[tuple[int, bytes]]:
    """(offset, value) pairs of runs tagged `epoch`, until `want` arrived; other epochs dropped."""
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} records arrived"
        try:
            tagged, runs, highwaters = out.get(timeout=1.0)
        except queue.Empty:
            continue
        if tagged != epoch:
            continue
        for _topic, _partition, offsets, values, _keys, _headers, _ts in runs:
            got.extend(zip(offsets, values, strict=True))
        assert list(highwaters.values()) == [N]
    return got


def test_reader_follows_the_parents_positions_and_epochs(servers: Servers, namespace: str) -> None:
    topic = f"{namespace}.events"
    ensure_topics(servers.kafka_bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap, acks="all")
    for n in range(N):
        producer.send(topic, value=f"m{n}".encode())
    producer.flush()
    producer.close()

    context = multiprocessing.get_context("spawn")
    receive, commands = context.Pipe(duplex=False)
    out = context.Queue(maxsize=2)
    config = ReaderConfig(bootstrap=servers.kafka_bootstrap, client_id=namespace, max_records=64)
    reader = context.Process(target=run_reader, args=(config, receive, out, os.getpid()))
    reader.start()
    try:
        commands.send(("assign", 1, {(topic, 0): 250}))
        first = _runs(out, 1, N - 250)
        assert [o for o, _ in first] == list(range(250, N))
        assert first[0][1] == b"m250"
        # a new assignment: runs of epoch 1 still queued are the parent's to drop
        commands.send(("assign", 2, {(topic, 0): None}))  # no stored offset: from the start
        second = _runs(out, 2, N)
        assert [o for o, _ in second] == list(range(N))
        commands.send(("stop",))
        reader.join(timeout=15)
        assert reader.exitcode == 0
    finally:
        if reader.is_alive():
            reader.terminate()
            reader.join(timeout=5)


def test_a_killed_reader_is_replaced_and_no_event_is_lost_or_repeated(
    servers: Servers, redis_client: redis.Redis, namespace: str
) -> None:
    total = 3000
    topic = f"{namespace}.events"
    ensure_topics(servers.kafka_bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=servers.kafka_bootstrap, acks="all", linger_ms=5)
    for n in range(total):
        event = Event(
            event_id=f"e{n}", type="rating", user_id=f"u{n % 97}", item_id=f"i{n % 89}",
            timestamp=T0 + n, value=float(1 + n % 5),
        )  # fmt: skip
        producer.send(topic, key=event_key(event), value=encode_event(event, T0 + total))
    producer.flush()
    producer.close()

    tables = load_tables(default_table_config_path())
    stores = open_tables(tables, RedisTableBackend(redis_client, namespace))
    trainer = OnlineTrainer(stores, TrainerConfig(group=f"{namespace}-group"))
    source = KafkaEventSource(servers.kafka_bootstrap, topic, trainer.config.group, max_records=200)
    loop = TrainingLoop(trainer, source, batch_size=200, max_wait_s=0.1)
    stop = threading.Event()
    examples = 0
    killed = False
    deadline = time.monotonic() + 120
    try:
        while trainer.offsets.get((topic, 0), 0) < total:
            assert time.monotonic() < deadline, f"stuck at {trainer.offsets}"
            report = loop.step(stop)
            examples += 0 if report is None else report.examples
            if not killed and trainer.offsets.get((topic, 0), 0) >= 1000:
                os.kill(source._reader.pid, signal.SIGKILL)
                source._reader.join(timeout=10)
                killed = True
    finally:
        source.close()
    assert killed
    assert examples == total  # every rating trained exactly once across the reader's death
    assert trainer.batches * 200 >= total
