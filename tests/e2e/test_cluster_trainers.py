"""Three trainers, six partitions, one Redis Cluster: every row's count exact.

The stack runs on the Redis Cluster and the 3-broker Kafka with the events topic in 6
partitions, and two more trainers join the stack's own: three members of one consumer group,
each with its own name (`FRESHREC_TRAINER__MEMBER`, static `group.instance.id`). A careful
producer streams 60,000 events over 300 users and 97 items, so every item is touched by users
on every partition and the three trainers update the same item rows all the time. Afterwards
every user's and every item's occurrence count equals its number of events, exactly, and no
batch is in any shard's applied log twice. Then the next 60,000 events stream on the same
stack while a random trainer is killed (SIGKILL) at five points and restarted; the counts
stay exact.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from kafka import KafkaProducer

from freshrec.models import entity_row_ids
from freshrec.settings import default_table_config_path
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event, event_key
from freshrec.table import load_tables, open_tables
from freshrec.table.redis_cluster import RedisClusterTableBackend
from services.cli.ports import free_port
from tests.cluster_servers import ClusterServers
from tests.conftest import Servers
from tests.e2e.cluster import cluster_stack_env, cluster_stack_servers, wipe_cluster_namespace
from tests.e2e.conftest import Stack, ready
from tests.e2e.streams import USERS
from tests.e2e.streams import stream_event as _event
from tests.waiting import wait_until

EVENTS = 60_000
ITEMS = 97  # the stream's items (tests/e2e/streams.py)
TRAINERS = 3
CHUNK = 500


@pytest.fixture
def stack_servers(servers: Servers, cluster_servers: ClusterServers) -> Servers:
    return cluster_stack_servers(servers, cluster_servers)


@pytest.fixture
def stack_env(cluster_servers: ClusterServers, namespace: str) -> Iterator[dict[str, str]]:
    yield cluster_stack_env(
        cluster_servers,
        FRESHREC_EVENTS_TOPIC_PARTITIONS="6",
        FRESHREC_TRAINER__MEMBER="trainer-0",
        FRESHREC_BATCH_SIZE="256",
    )
    wipe_cluster_namespace(cluster_servers, namespace)


class ExtraTrainers:
    """Trainers 1 and 2 of the group, started beside the stack's trainer-0."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.urls: dict[int, str] = {}

    def start(self, n: int) -> None:
        port = free_port()
        env = {
            **self.stack.env,
            "FRESHREC_TRAINER__MEMBER": f"trainer-{n}",
            "FRESHREC_CONSUMER__GROUP_INSTANCE_ID": f"trainer-{n}",
            "FRESHREC_TRAINER_PORT": str(port),
        }
        with (self.stack.run_dir / f"trainer-{n}.log").open("ab") as log:
            self.procs[n] = subprocess.Popen(
                [sys.executable, "-m", "services.trainer"], env=env, stdout=log, stderr=log
            )
        self.urls[n] = f"http://127.0.0.1:{port}"

    def pid(self, n: int) -> int:
        return self.stack.pid("trainer") if n == 0 else self.procs[n].pid

    def url(self, n: int) -> str:
        return self.stack.url("trainer") if n == 0 else self.urls[n]

    def kill_and_restart(self, n: int) -> None:
        killed = self.pid(n)
        os.kill(killed, signal.SIGKILL)
        if n == 0:  # the stack's supervisor restarts its own
            wait_until(lambda: self.stack.pid("trainer") != killed, 30, "trainer-0's restart")
        else:
            self.procs[n].wait(timeout=10)
            self.start(n)
        wait_until(lambda: ready(self.url(n)), 90, f"the restarted trainer-{n} to be ready")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def trainers(running_stack: Stack) -> Iterator[ExtraTrainers]:
    extra = ExtraTrainers(running_stack)
    try:
        for n in range(1, TRAINERS):
            extra.start(n)
        for n in range(1, TRAINERS):
            wait_until(lambda n=n: ready(extra.url(n)), 90, f"trainer-{n} to be ready")
        yield extra
    finally:
        extra.stop()


def _backend(stack: Stack) -> RedisClusterTableBackend:
    return RedisClusterTableBackend.from_nodes(
        stack.env["FRESHREC_REDIS_CLUSTER_NODES"], namespace=stack.namespace
    )


def _committed(backend: RedisClusterTableBackend, group: str) -> int:
    return sum(int(v) for v in backend.get_hash(f"offsets:{group}", group=group).values())


def _members(trainers: ExtraTrainers) -> list[int]:
    """How many partitions each trainer owns (from its status page)."""
    owned = []
    for n in range(TRAINERS):
        status = httpx.get(f"{trainers.url(n)}/v1/status", timeout=5).json()
        owned.append(len(status["offsets"]))
    return owned


def _produce(stack: Stack, first: int) -> int:
    """Put events `first` .. `first + EVENTS` on the events topic (every seventh chunk twice);
    the messages sent."""
    producer = KafkaProducer(
        bootstrap_servers=stack.env["FRESHREC_KAFKA_BOOTSTRAP"],
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )
    topic = f"{stack.namespace}.events"
    sent = 0
    try:
        for chunk, start in enumerate(range(first, first + EVENTS, CHUNK)):
            events = [Event(**_event(k)) for k in range(start, start + CHUNK)]
            for _ in range(2 if chunk % 7 == 3 else 1):
                for event in events:
                    producer.send(
                        topic, key=event_key(event), value=encode_event(event, time.time())
                    )
                sent += len(events)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    return sent


def _stream_through(stack: Stack, trainers: ExtraTrainers, kills: int, first: int) -> None:
    """Stream events `first` .. `first + EVENTS` with `kills` trainers killed on the way;
    then every row's count is exact for all events so far."""
    group = stack.env["FRESHREC_TRAINER__GROUP"]
    backend = _backend(stack)
    rng = random.Random(7 + kills)
    try:
        before = _committed(backend, group)
        started = time.monotonic()
        sent = _produce(stack, first)
        messages = before + sent
        for point in sorted(rng.uniform(0.1, 0.8) for _ in range(kills)):
            wait_until(
                lambda point=point: _committed(backend, group) >= before + point * sent,
                300,
                f"{point:.0%} of the stream trained",
            )
            victim = rng.randrange(TRAINERS)
            trainers.kill_and_restart(victim)
            print(f"cluster trainers: killed trainer-{victim} at {point:.0%} of the stream")
        wait_until(
            lambda: _committed(backend, group) == messages,
            300,
            f"all {messages} messages committed",
            detail=lambda: f"committed {_committed(backend, group)}",
        )
        elapsed = time.monotonic() - started
        print(
            f"cluster trainers ({kills} kills): {sent} messages for {EVENTS} events "
            f"trained in {elapsed:.1f} s ({sent / elapsed:.0f}/s); partitions per trainer "
            f"{_members(trainers)}"
        )
        _assert_counts_exact(backend, first + EVENTS)
        _assert_each_batch_applied_once(backend)
    finally:
        backend.close()


def _assert_counts_exact(backend: RedisClusterTableBackend, events: int) -> None:
    tables = open_tables(load_tables(default_table_config_path()), backend)
    want = {
        "user": Counter(f"u{k % USERS}" for k in range(events)),
        "item": Counter(f"i{k % ITEMS}" for k in range(events)),
    }
    for table, counts in want.items():
        names = sorted(counts)
        rows = getattr(tables, table).read_rows(entity_row_ids(table, names))
        got = dict(zip(rows.ids.tolist(), rows.count.tolist(), strict=True))
        expected = dict(
            zip(entity_row_ids(table, names).tolist(), (counts[n] for n in names), strict=True)
        )
        wrong = sum(1 for key, value in expected.items() if got.get(key) != value)
        assert wrong == 0, (
            f"{wrong} of {len(expected)} {table} rows off: trained "
            f"{sum(got.values())} occurrences of {sum(expected.values())}"
        )


def _assert_each_batch_applied_once(backend: RedisClusterTableBackend) -> None:
    batches: set[str] = set()
    for shard in range(backend.shards):
        client = backend.shard_connection(shard).client
        log = [entry.decode() for entry in client.lrange(backend.applied_log_key(shard), 0, -1)]
        assert len(log) == len(set(log)), f"shard {shard}: a batch applied twice"
        batches.update(entry.rsplit(":", 1)[1] for entry in log)
    assert batches
    print(f"cluster trainers: {len(batches)} batches, each applied once per shard it touched")


@pytest.mark.timeout(900)
def test_three_trainers_on_six_partitions_count_every_event_exactly_once(
    running_stack: Stack, trainers: ExtraTrainers
) -> None:
    """The stream once with no fault, then the next 60,000 events with five kills, on the
    same stack (one start-up of the cluster stack and its trainers for both)."""
    _stream_through(running_stack, trainers, kills=0, first=0)
    _stream_through(running_stack, trainers, kills=5, first=EVENTS)
