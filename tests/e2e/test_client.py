"""`freshrec.client` against the real services: batches, typed answers, and a Kafka outage.

The stack runs on a broker of its own. The client sends 2,500 events in batches of the
server's limit and reads recommendations and rows back; then the broker is stopped, and the
client retries the refused batch and gives up with a clear `DependencyUnavailable`; once the
broker is back, the same call succeeds.
"""

from __future__ import annotations

import time

import pytest

from freshrec import errors
from freshrec.client import FreshrecClient, RetryPolicy
from tests.conftest import Servers
from tests.e2e.conftest import Stack
from tests.e2e.streams import consumed
from tests.private_servers import PrivateKafka
from tests.waiting import wait_until

EVENTS = 2_500


@pytest.fixture
def stack_servers(servers: Servers, private_kafka: PrivateKafka) -> Servers:
    return Servers(redis_url=servers.redis_url, kafka_bootstrap=private_kafka.bootstrap)


def _events(first: int, n: int) -> list[dict[str, object]]:
    return [
        {"event_id": f"client-{k}", "type": "rating", "user_id": f"u{k % 50}",
         "item_id": f"i{k % 40}", "timestamp": time.time(), "value": float(1 + k % 5)}
        for k in range(first, first + n)
    ]  # fmt: skip


def test_the_client_sends_reads_and_rides_out_a_kafka_outage(
    running_stack: Stack, private_kafka: PrivateKafka
) -> None:
    stack = running_stack
    patient = RetryPolicy(retries=3, backoff_s=0.5, max_backoff_s=2.0)
    with FreshrecClient(
        stack.ingest, stack.ranker, api_key=stack.api_key, max_batch_events=1000, retry=patient
    ) as client:
        assert client.send_events(_events(0, EVENTS)) == EVENTS
        wait_until(lambda: consumed(stack) >= EVENTS, 60, "the events trained")
        answer = client.recommend("u1", k=5)
        assert 0 < len(answer.items) <= 5
        row = client.row("user", "u1")
        assert row.count == EVENTS // 50
        with pytest.raises(errors.NotFound):
            client.row("user", "nobody-at-all")

        private_kafka.down()
        started = time.monotonic()
        with pytest.raises(errors.DependencyUnavailable, match="refused 4 times"):
            client.send_events(_events(EVENTS, 10))
        print(f"client: gave up after {time.monotonic() - started:.1f} s with Kafka down")
        private_kafka.up()
        wait_until(lambda: _sends(client, _events(EVENTS, 10)), 60, "the same batch accepted again")


def _sends(client: FreshrecClient, events: list[dict[str, object]]) -> bool:
    try:
        return client.send_events(events) == len(events)
    except errors.DependencyUnavailable:
        return False
