"""Replay against the real ingest app (in-memory event sink, served on 127.0.0.1)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import uvicorn

from freshrec.offline.data import replay
from freshrec.offline.data.synthetic import SyntheticConfig, synthetic_events
from freshrec.stream import InMemoryEventSink
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.waiting import wait_until

KEY = "replay-test-key"


@dataclass
class Served:
    url: str
    sink: InMemoryEventSink


@pytest.fixture
def ingest() -> Iterator[Served]:
    sink = InMemoryEventSink()
    settings = IngestSettings(api_keys=KEY, max_batch_events=200)
    app = create_app(settings, sink=sink)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 15.0, "the ingest app to start", interval_s=0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", sink)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _ids(sink: InMemoryEventSink) -> list[str]:
    return [orjson.loads(value)["event_id"] for _, value in sink.messages]


def events(n: int) -> list[dict[str, Any]]:
    config = SyntheticConfig(n_users=1000, n_items=500, start_time=time.time() - 3600)
    return list(synthetic_events(n, seed=2, config=config))


def test_every_event_reaches_the_sink_once_in_order(ingest: Served) -> None:
    stream = events(1500)
    # batch_size over the server's max_batch_events: the 413s split the batches
    report = replay(stream, ingest.url, api_key=KEY, batch_size=500, progress=False, max_retry_s=5)
    assert report.sent == report.accepted == 1500 and report.rejected == 0
    assert _ids(ingest.sink) == [e["event_id"] for e in stream]


def test_invalid_events_are_reported_with_the_ingest_details(ingest: Served) -> None:
    stream = events(50)
    stream[7]["type"] = "teleport"
    stream[20]["timestamp"] = 12.0  # 1970: a unit mistake the ingest API refuses
    report = replay(stream, ingest.url, api_key=KEY, batch_size=50, progress=False, max_retry_s=5)
    assert report.rejected == 2 and report.sent == 48
    assert {(r.index, r.field) for r in report.rejections} == {(7, "type"), (20, "timestamp")}
    expected = [e["event_id"] for i, e in enumerate(stream) if i not in (7, 20)]
    assert _ids(ingest.sink) == expected


def test_a_broker_outage_is_waited_out(ingest: Served) -> None:
    ingest.sink.available = False
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        ingest.sink.available = True  # the broker comes back while the replay waits

    stream = events(20)
    report = replay(stream, ingest.url, api_key=KEY, progress=False, sleep=sleep, max_retry_s=5)
    assert report.sent == 20 and report.retries == 1
    assert waits == [2.0]  # the 503's Retry-After
    assert _ids(ingest.sink) == [e["event_id"] for e in stream]
