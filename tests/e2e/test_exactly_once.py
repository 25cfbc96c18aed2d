"""Exactly-once training: kill -9 the trainer at random points; the result must not change.

A fixed stream (ratings, impressions and clicks joined by request id, and a few poison
messages) is produced once. Run A trains it without interruption; run B trains the same topic
in another namespace while being killed with SIGKILL at several random offsets and restarted.
Both must end with the same rows, the same occurrence counts (a batch applied twice would
inflate them), the same number of batches, and the same dense parameters and optimizer state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from freshrec.models import decode_tensors
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.table import RedisTableBackend, TableBackend, Tables, load_tables, open_tables
from freshrec.table.base import EmbeddingStore, Rows
from freshrec.training import checkpoint_key
from tests.conftest import Servers
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = 50_000
POISON = [b"not json at all", b'{"v": 1, "event_id": 5}', b"{" + b"x" * 70_000 + b"}"]
KILLS = 5


def _event(event_id: str, kind: str, user: int, item: int, ts: float, **extra: Any) -> Event:
    ids = {"user_id": f"u{user}", "item_id": f"i{item}"}
    return Event(event_id=event_id, type=kind, timestamp=ts, **ids, **extra)


def _stream(seed: int = 7) -> Iterator[Event]:
    rng = np.random.default_rng(seed)
    users = rng.zipf(1.3, size=N_EVENTS) % 3000
    items = rng.zipf(1.2, size=N_EVENTS) % 800
    kinds = rng.random(N_EVENTS)
    t0 = 1_700_000_000.0
    last_impression: tuple[str, int, int] | None = None
    for n in range(N_EVENTS):
        ts = t0 + n * 0.5
        user, item = int(users[n]), int(items[n])
        if kinds[n] < 0.55:
            context = {"device": ["ios", "web"][n % 2]}
            yield _event(f"r{n}", "rating", user, item, ts, value=float(1 + n % 5), context=context)
        elif kinds[n] < 0.85 or last_impression is None:
            last_impression = (f"q{n}", user, item)
            context = {"hour": n % 24}
            yield _event(f"m{n}", "impression", user, item, ts, request_id=f"q{n}", context=context)
        else:
            request, imp_user, imp_item = last_impression
            yield _event(f"c{n}", "click", imp_user, imp_item, ts, request_id=request)


def _produce(servers: Servers, topic: str) -> int:
    producer = KafkaProducer(
        bootstrap_servers=servers.kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    sent = 0
    for n, event in enumerate(_stream()):
        producer.send(
            topic, key=str(event.user_id).encode(), value=encode_event(event, event.timestamp + 1.0)
        )
        sent += 1
        if n % 10_000 == 5_000:
            producer.send(topic, key=b"poison", value=POISON[(n // 10_000) % len(POISON)])
            sent += 1
    producer.flush(timeout=60)
    producer.close()
    return sent


def _trainer(servers: Servers, namespace: str, topic: str, run: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FRESHREC_REDIS_URL": servers.redis_url,
        "FRESHREC_KAFKA_BOOTSTRAP": servers.kafka_bootstrap,
        "FRESHREC_NAMESPACE": namespace,
        "FRESHREC_EVENTS_TOPIC": topic,
        "FRESHREC_TRAINER__GROUP": f"{namespace}-group",
        "FRESHREC_TRAINER_PORT": "0",
        "FRESHREC_BATCH_SIZE": "500",
        "FRESHREC_MAX_BATCH_WAIT_S": "3",
        "FRESHREC_TRAINER__PUBLISH_INTERVAL_S": "0.3",
        "FRESHREC_TRAINER__EXPIRE_EVERY_BATCHES": "20",
        "FRESHREC_CONSUMER__SESSION_TIMEOUT_MS": "6000",
        "PYTHONPATH": f"{ROOT / 'libs'}:{ROOT}",
    }
    with (run / f"{namespace}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.trainer"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def _committed(backend: TableBackend, group: str, topic: str) -> int:
    return int(backend.get_hash(f"offsets:{group}", group=group).get(f"{topic}:0", b"0"))


def _wait_offset(
    proc: subprocess.Popen[bytes], offset: Callable[[], int], target: int, log: Path
) -> None:
    def reached() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"trainer exited with {proc.returncode}; log:\n{log.read_text()[-3000:]}")
        return offset() >= target

    wait_until(
        reached,
        180.0,
        f"the trainer to commit offset {target}",
        detail=lambda: f"log:\n{log.read_text()[-3000:]}",
    )


def _all_rows(store: EmbeddingStore) -> Rows:
    parts = list(store.export())
    ids = np.concatenate([p.ids for p in parts])
    order = np.argsort(ids)
    return Rows(
        ids=ids[order],
        vectors=np.concatenate([p.vectors for p in parts])[order],
        state=np.concatenate([p.state for p in parts])[order],
        event_time=np.concatenate([p.event_time for p in parts])[order],
        wall_time=np.concatenate([p.wall_time for p in parts])[order],
        count=np.concatenate([p.count for p in parts])[order],
    )


def test_killed_trainer_ends_where_an_uninterrupted_one_does(
    servers: Servers,
    make_topic: Callable[..., str],
    namespace: str,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    topic = make_topic("events", partitions=1)
    total = _produce(servers, topic)
    tables = load_tables(ROOT / "libs" / "freshrec" / "tables.yaml")
    runs = {name: f"{namespace}-{name}" for name in ("a", "b")}
    stores: dict[str, Tables] = {
        run: open_tables(tables, RedisTableBackend(redis_client, ns)) for run, ns in runs.items()
    }

    def offset_of(run: str) -> Callable[[], int]:
        return lambda: _committed(stores[run].backend, f"{runs[run]}-group", topic)

    started: list[subprocess.Popen[bytes]] = []

    def run_until(run: str, offset: int, stop: signal.Signals) -> subprocess.Popen[bytes]:
        """Start run `run`'s trainer, wait until it committed `offset`, then send `stop`."""
        proc = _trainer(servers, runs[run], topic, tmp_path)
        started.append(proc)
        _wait_offset(proc, offset_of(run), offset, tmp_path / f"{runs[run]}.log")
        proc.send_signal(stop)
        return proc

    try:
        # run A: no interruption, then a graceful stop
        proc = run_until("a", total, signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "SIGTERM must finish the batch and exit 0"

        # run B: SIGKILL at random committed offsets, restart each time
        rng = np.random.default_rng(int(time.time()))
        points = np.sort(rng.choice(np.arange(1_000, total - 2_000), size=KILLS, replace=False))
        for point in points:
            run_until("b", int(point), signal.SIGKILL).wait(timeout=10)
        assert run_until("b", total, signal.SIGTERM).wait(timeout=30) == 0
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()

    for store_a, store_b in zip(stores["a"], stores["b"], strict=True):
        name = store_a.config.name
        a, b = _all_rows(store_a), _all_rows(store_b)
        assert len(a) > 0, f"run A wrote no {name} rows"
        np.testing.assert_array_equal(a.ids, b.ids, err_msg=f"{name}: different row sets")
        np.testing.assert_array_equal(a.count, b.count, err_msg=f"{name}: a batch applied twice")
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_allclose(a.state, b.state, atol=1e-6, rtol=0, err_msg=name)
        np.testing.assert_array_equal(a.event_time, b.event_time, err_msg=name)

    blobs = {
        run: stores[run].backend.get_blob(checkpoint_key(f"{ns}-group"), group=f"{ns}-group")
        for run, ns in runs.items()
    }
    assert blobs["a"] is not None and blobs["b"] is not None
    (dense_a, meta_a), (dense_b, meta_b) = decode_tensors(blobs["a"]), decode_tensors(blobs["b"])
    assert meta_a["batches"] == meta_b["batches"], "run B applied a different number of batches"
    assert meta_a["builder"] == meta_b["builder"], "join state differs"
    assert dense_a.keys() == dense_b.keys()
    for key in dense_a:
        np.testing.assert_allclose(
            dense_a[key].numpy(), dense_b[key].numpy(), atol=1e-6, rtol=0, err_msg=key
        )
    # the poison messages went to run A's dead-letter topic, each with a reason
    dead = _read_all(servers, f"{runs['a']}.events.dlq", want=total - N_EVENTS)
    assert len(dead) == total - N_EVENTS
    assert all(dict(r.headers).get("freshrec-reason") for r in dead)


def _read_all(servers: Servers, topic: str, want: int) -> list[ConsumerRecord]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=servers.kafka_bootstrap, auto_offset_reset="earliest"
    )
    got: list[ConsumerRecord] = []
    deadline = time.monotonic() + 30
    while len(got) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(records)
    consumer.close()
    return got
