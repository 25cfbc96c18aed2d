"""A careful producer's event stream through a running stack, and the exactly-once check after it.

`event_stream` posts uniquely identified events through ingest at a steady pace in a thread
(the soak's `SteadyProducer`), retrying every batch that got a 503, a 429 or no answer until it
is acknowledged (202), and posting some acknowledged batches a second time as a client does
when an answer is lost. After
the stream, `assert_trained_exactly_once` reads the user rows from the table: each row's
occurrence count must equal the number of distinct events of that user, so a lost event and an
event trained twice both show.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from freshrec.models import entity_row_ids
from freshrec.offline.bench.soak import SteadyProducer
from freshrec.offline.bench.soak import consumed as trainer_consumed
from freshrec.settings import default_table_config_path
from freshrec.table import load_tables, open_backend, open_tables
from freshrec.table.backends import redis_backend_config
from tests.e2e.conftest import Stack
from tests.waiting import wait_until

__all__ = [
    "assert_trained_exactly_once",
    "consumed",
    "event_stream",
    "ride_through",
    "stream_event",
]

USERS = 300
FAULT_EVENTS = 10_000


def consumed(stack: Stack) -> int:
    """Messages the trainer has committed (sum of its partitions' offsets); -1 when unreachable."""
    return trainer_consumed(stack.trainer)


def stream_event(k: int) -> dict[str, Any]:
    """Event `k` of the test streams: user `k % USERS`, item `k % 97`."""
    return {
        "event_id": f"stream-{k}", "type": "rating", "user_id": f"u{k % USERS}",
        "item_id": f"i{k % 97}", "timestamp": time.time() - 60, "value": float(1 + k % 5),
    }  # fmt: skip


def event_stream(stack: Stack, events: int, batch: int, pause_s: float) -> SteadyProducer:
    """`events` events in batches of `batch`, one batch every `pause_s`, not yet started."""
    batches = [
        [stream_event(k) for k in range(start, min(start + batch, events))]
        for start in range(0, events, batch)
    ]
    return SteadyProducer(stack.ingest, stack.api_key, batches, pause_s)


def topic_messages(stack: Stack) -> int:
    """Messages on the stack's events topic (the sum of its partitions' end offsets)."""
    topic = f"{stack.namespace}.events"
    consumer = KafkaConsumer(bootstrap_servers=stack.env["FRESHREC_KAFKA_BOOTSTRAP"])
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return int(sum(consumer.end_offsets(partitions).values()))
    finally:
        consumer.close()


def assert_trained_exactly_once(
    stack: Stack, stream: SteadyProducer, redis_url: str, messages: int | None = None
) -> None:
    """Wait until the trainer consumed every message, then check each user's occurrence count.

    Args:
        messages: the messages on the topic, when more than the producer's 202s put there (a
            post that got no answer may have landed: its retry is a duplicate the trainer
            drops by event id).
    """
    # a post cut off after ingest produced it (ingest killed, a broker lost) is on the topic
    # although unacknowledged; its retry is a copy the trainer drops by event id
    total = messages if messages is not None else topic_messages(stack)
    assert total >= stream.messages, "every acknowledged message is on the topic"
    wait_until(
        lambda: consumed(stack) == total,
        180,
        f"all {total} messages consumed",
        detail=lambda: f"consumed {consumed(stack)}",
    )
    backend = open_backend(
        redis_backend_config(
            redis_url,
            stack.namespace,
            cluster_nodes=stack.env.get("FRESHREC_REDIS_CLUSTER_NODES", ""),
        )
    )
    try:
        tables = open_tables(load_tables(default_table_config_path()), backend)
        users = [f"u{n}" for n in range(USERS)]
        ids = entity_row_ids("user", users)
        rows = tables.user.read_rows(ids)
        want = stream.acked
        got = dict(zip(rows.ids.tolist(), rows.count.tolist(), strict=True))
        expected = dict(zip(ids.tolist(), (want[u] for u in users), strict=True))
        diff = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
        assert got == expected, (
            f"every acknowledged event trained exactly once: {len(diff)} users differ, "
            f"trained {sum(got.values())} of {sum(expected.values())}, e.g. "
            f"{list(diff.values())[:5]} (trained, acknowledged)"
        )
        assert int(np.sum(rows.count)) == sum(want.values())
    finally:
        backend.close()


def ride_through(stack: Stack, fault: Callable[[], None], what: str) -> float:
    """Stream `FAULT_EVENTS` events through `fault`; the seconds from its end to training again.

    `fault` runs once a fifth of the stream is trained, while the producer keeps posting; it
    returns when what it broke is back (a server restarted, a killed process restarted by the
    supervisor). Then the stream finishes and every event must be trained exactly once.
    """
    stream = event_stream(stack, FAULT_EVENTS, batch=100, pause_s=0.1).start()
    try:
        wait_until(lambda: consumed(stack) >= FAULT_EVENTS // 5, 120, "a fifth trained")
        fault()
        back = time.monotonic()
        at_return = consumed(stack)
        wait_until(lambda: consumed(stack) > at_return, 60, "training to resume")
        resumed_s = time.monotonic() - back
    finally:
        stream.join()
    assert sum(stream.acked.values()) == FAULT_EVENTS, "every event acknowledged"
    assert_trained_exactly_once(stack, stream, stack.env["FRESHREC_REDIS_URL"])
    print(
        f"fault suite, {what}: training resumed {resumed_s:.1f} s after the return; "
        f"{stream.messages} messages for {FAULT_EVENTS} events, {stream.retries} retried posts"
    )
    return resumed_s
