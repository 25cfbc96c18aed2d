"""A careful producer's event stream through a running stack, and the exactly-once check after it.

`EventStream` posts uniquely identified events through ingest at a steady pace in a thread,
retrying every batch that got a 503, a 429 or no answer until it is acknowledged (202), and
posting some acknowledged batches a second time as a client does when an answer is lost. After
the stream, `assert_trained_exactly_once` reads the user rows from the table: each row's
occurrence count must equal the number of distinct events of that user, so a lost event and an
event trained twice both show.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import redis

from freshrec.models import entity_row_ids
from freshrec.settings import default_table_config_path
from freshrec.table import RedisTableBackend, load_tables, open_tables
from tests.e2e.conftest import Stack
from tests.waiting import wait_until

__all__ = ["EventStream", "assert_trained_exactly_once", "consumed", "ride_through"]

USERS = 300
FAULT_EVENTS = 10_000
RESEND_EVERY = 7  # every 7th batch's answer "is lost": the client posts it again


def consumed(stack: Stack) -> int:
    """Messages the trainer has committed (sum of its partitions' offsets); -1 when unreachable."""
    try:
        status = httpx.get(f"{stack.trainer}/v1/status", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return -1
    return sum(int(v) for v in status["offsets"].values())


def _event(k: int) -> dict[str, Any]:
    return {
        "event_id": f"stream-{k}", "type": "rating", "user_id": f"u{k % USERS}",
        "item_id": f"i{k % 97}", "timestamp": time.time() - 60, "value": float(1 + k % 5),
    }  # fmt: skip


class EventStream:
    """`events` events in batches of `batch`, one batch every `pause_s`, in a background thread."""

    def __init__(self, stack: Stack, events: int, batch: int, pause_s: float) -> None:
        self.stack = stack
        self.events = events
        self.batch = batch
        self.pause_s = pause_s
        self.messages = 0  # messages put on the topic by 202s, re-posts included
        self.retries = 0  # posts answered 429/503 or not at all
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="event-stream", daemon=True)

    def start(self) -> EventStream:
        self._thread.start()
        return self

    def join(self, timeout_s: float = 300) -> None:
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error

    def _post_until_accepted(self, events: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                response = httpx.post(
                    f"{self.stack.ingest}/v1/events",
                    json={"events": events},
                    headers={"Authorization": f"Bearer {self.stack.api_key}"},
                    timeout=10,
                )
                if response.status_code == 202:
                    self.messages += len(events)
                    return
                assert response.status_code in (429, 503), response.text
            except httpx.HTTPError:
                pass
            self.retries += 1
            assert time.monotonic() < deadline, "ingest never accepted the batch"
            time.sleep(0.5)

    def _run(self) -> None:
        try:
            for n, start in enumerate(range(0, self.events, self.batch)):
                batch = [_event(k) for k in range(start, min(start + self.batch, self.events))]
                self._post_until_accepted(batch)
                if n % RESEND_EVERY == 3:
                    self._post_until_accepted(batch)
                time.sleep(self.pause_s)
        except BaseException as exc:  # reported by join()
            self.error = exc


def assert_trained_exactly_once(stack: Stack, stream: EventStream, redis_url: str) -> None:
    """Wait until the trainer consumed every message, then check each user's occurrence count."""
    wait_until(
        lambda: consumed(stack) == stream.messages,
        180,
        f"all {stream.messages} messages consumed",
        detail=lambda: f"consumed {consumed(stack)}",
    )
    client = redis.Redis.from_url(redis_url)
    try:
        tables = open_tables(
            load_tables(default_table_config_path()), RedisTableBackend(client, stack.namespace)
        )
        users = [f"u{n}" for n in range(USERS)]
        ids = entity_row_ids("user", users)
        rows = tables.user.read_rows(ids)
        want = Counter(f"u{k % USERS}" for k in range(stream.events))
        got = dict(zip(rows.ids.tolist(), rows.count.tolist(), strict=True))
        expected = dict(zip(ids.tolist(), (want[u] for u in users), strict=True))
        assert got == expected, "every acknowledged event trained exactly once"
        assert int(np.sum(rows.count)) == stream.events
    finally:
        client.close()


def ride_through(stack: Stack, fault: Callable[[], None], what: str) -> float:
    """Stream `FAULT_EVENTS` events through `fault`; the seconds from its end to training again.

    `fault` runs once a fifth of the stream is trained, while the producer keeps posting; it
    returns when what it broke is back (a server restarted, a killed process restarted by the
    supervisor). Then the stream finishes and every event must be trained exactly once.
    """
    stream = EventStream(stack, FAULT_EVENTS, batch=100, pause_s=0.1).start()
    try:
        wait_until(lambda: consumed(stack) >= FAULT_EVENTS // 5, 120, "a fifth trained")
        fault()
        back = time.monotonic()
        at_return = consumed(stack)
        wait_until(lambda: consumed(stack) > at_return, 60, "training to resume")
        resumed_s = time.monotonic() - back
    finally:
        stream.join()
    assert_trained_exactly_once(stack, stream, stack.env["FRESHREC_REDIS_URL"])
    print(
        f"fault suite, {what}: training resumed {resumed_s:.1f} s after the return; "
        f"{stream.messages} messages for {FAULT_EVENTS} events, {stream.retries} retried posts"
    )
    return resumed_s
