"""Fault suite: the running stack rides through a Redis outage by itself, exactly once.

The stack runs on a Redis of its own (AOF on, as `deploy/local` runs it), so killing it
disturbs no other test. While a careful producer streams 10,000 uniquely identified events
through ingest, Redis is killed with SIGKILL, kept down for 5 s and restarted on the same data
directory. Nothing is done by hand: training must resume within 10 s of Redis's return, and
every acknowledged event must be trained exactly once (row occurrence counts exact).
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import Servers
from tests.e2e.conftest import Stack
from tests.e2e.streams import ride_through
from tests.private_servers import PrivateRedis

OUTAGE_S = 5.0
RESUME_BUDGET_S = 10.0


@pytest.fixture
def stack_servers(servers: Servers, private_redis: PrivateRedis) -> Servers:
    return Servers(redis_url=private_redis.url, kafka_bootstrap=servers.kafka_bootstrap)


def test_a_redis_outage_mid_stream_loses_and_repeats_nothing(
    running_stack: Stack, private_redis: PrivateRedis
) -> None:
    def outage() -> None:
        private_redis.kill()
        time.sleep(OUTAGE_S)
        private_redis.start()

    resumed_s = ride_through(running_stack, outage, f"Redis killed for {OUTAGE_S:g} s")
    assert resumed_s <= RESUME_BUDGET_S
