"""Fault suite: the running stack rides through a Kafka outage by itself, exactly once.

The stack runs on a broker of its own, so stopping it disturbs no other test. While a careful
producer streams 10,000 uniquely identified events through ingest (retrying every batch that
got a 503 or no answer), the broker is stopped, kept down for 10 s and restarted on the same log
directory. Nothing is done by hand: ingest accepts again and training resumes within 10 s of the
broker's return, and every acknowledged event is trained exactly once.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import Servers
from tests.e2e.conftest import Stack
from tests.e2e.streams import ride_through
from tests.private_servers import PrivateKafka

OUTAGE_S = 10.0
RESUME_BUDGET_S = 10.0


@pytest.fixture
def stack_servers(servers: Servers, private_kafka: PrivateKafka) -> Servers:
    return Servers(redis_url=servers.redis_url, kafka_bootstrap=private_kafka.bootstrap)


def test_a_kafka_outage_mid_stream_loses_and_repeats_nothing(
    running_stack: Stack, private_kafka: PrivateKafka
) -> None:
    def outage() -> None:
        private_kafka.down()
        time.sleep(OUTAGE_S)
        private_kafka.up()

    resumed_s = ride_through(running_stack, outage, f"Kafka stopped for {OUTAGE_S:g} s")
    assert resumed_s <= RESUME_BUDGET_S
