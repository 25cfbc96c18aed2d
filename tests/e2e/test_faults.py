"""Fault suite: the running stack rides through a Redis outage by itself, exactly once.

The stack runs on a Redis of its own (AOF on, as `deploy/local` runs it), so killing it
disturbs no other test. A producer posts 10,000 uniquely identified events through ingest,
posting some batches twice as a client does when an answer is lost; Redis is killed with
SIGKILL mid-stream, kept down for 5 s and restarted on the same data directory. Nothing is
done by hand: the trainer must resume within 10 s of Redis's return, and every
202-acknowledged event must be trained exactly once (row occurrence counts exact).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from freshrec.models import entity_row_ids
from freshrec.settings import default_table_config_path
from freshrec.table import RedisTableBackend, load_tables, open_tables
from tests.e2e.conftest import Stack
from tests.waiting import wait_until

EVENTS = 10_000
BATCH = 250
USERS = 300
OUTAGE_S = 5.0


@dataclass
class PrivateRedis:
    port: int
    data: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        wait_until(lambda: _pings(client), 30, f"redis on port {self.port}")
        client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = PrivateRedis(port, tmp_path / "redis")
    server.data.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def stack_redis_url(private_redis: PrivateRedis) -> str:
    return private_redis.url


def _event(k: int) -> dict[str, Any]:
    return {
        "event_id": f"fault-{k}", "type": "rating", "user_id": f"u{k % USERS}",
        "item_id": f"i{k % 97}", "timestamp": time.time() - 60, "value": float(1 + k % 5),
    }  # fmt: skip


def _post_until_accepted(stack: Stack, events: list[dict[str, Any]]) -> None:
    """What a careful producer does: retry on 503, 429 or no answer until a 202."""
    deadline = time.monotonic() + 120
    while True:
        try:
            response = httpx.post(
                f"{stack.ingest}/v1/events",
                json={"events": events},
                headers={"Authorization": f"Bearer {stack.api_key}"},
                timeout=10,
            )
            if response.status_code == 202:
                return
            assert response.status_code in (429, 503), response.text
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "ingest never accepted the batch"
        time.sleep(0.5)


def _produce(stack: Stack, posted: list[int]) -> None:
    for start in range(0, EVENTS, BATCH):
        batch = [_event(k) for k in range(start, start + BATCH)]
        _post_until_accepted(stack, batch)
        posted.append(len(batch))
        if (start // BATCH) % 7 == 3:  # the answer "was lost": the client sends it again
            _post_until_accepted(stack, batch)
            posted.append(len(batch))
        time.sleep(0.05)  # a steady stream, so the outage falls mid-stream


def _consumed(stack: Stack) -> int:
    try:
        status = httpx.get(f"{stack.trainer}/v1/status", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return -1
    return sum(int(v) for v in status["offsets"].values())


def test_a_redis_outage_mid_stream_loses_and_repeats_nothing(
    running_stack: Stack, private_redis: PrivateRedis
) -> None:
    posted: list[int] = []
    producer = threading.Thread(target=_produce, args=(running_stack, posted))
    producer.start()
    try:
        wait_until(lambda: _consumed(running_stack) >= EVENTS // 4, 120, "a quarter trained")
        private_redis.kill()
        time.sleep(OUTAGE_S)
        down_at = _consumed(running_stack)
        private_redis.start()
        back = time.monotonic()
        wait_until(lambda: _consumed(running_stack) > down_at, 30, "training to resume")
        resumed_s = time.monotonic() - back
    finally:
        producer.join(timeout=300)
    messages = sum(posted)
    wait_until(lambda: _consumed(running_stack) == messages, 180, f"all {messages} consumed")
    print(f"fault suite: resumed {resumed_s:.1f} s after Redis returned; {messages} messages")
    assert resumed_s <= 10.0

    client = redis.Redis.from_url(private_redis.url)
    try:
        tables = open_tables(
            load_tables(default_table_config_path()),
            RedisTableBackend(client, running_stack.namespace),
        )
        users = [f"u{n}" for n in range(USERS)]
        rows = tables.user.read_rows(entity_row_ids("user", users))
        want = Counter(f"u{k % USERS}" for k in range(EVENTS))
        got = dict(zip(rows.ids.tolist(), rows.count.tolist(), strict=True))
        expected = dict(
            zip(entity_row_ids("user", users).tolist(), (want[u] for u in users), strict=True)
        )
        assert got == expected, "every acknowledged event trained exactly once"
        assert int(np.sum(rows.count)) == EVENTS
    finally:
        client.close()
