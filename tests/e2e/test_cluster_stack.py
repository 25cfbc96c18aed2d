"""The stack on a real Redis Cluster and 3-broker Kafka: a killed trainer trains exactly once.

The services run with `FRESHREC_REDIS_CLUSTER_NODES` set and the 3-broker Kafka as
bootstrap, so the table, the offsets, the trainer's checkpoint and the published model live
on the cluster (layout version 2, commit records; `docs/scaling.md`). The trainer is killed
with SIGKILL while a careful producer streams; the supervisor restarts it, it completes its
last commit record, and every acknowledged event is trained exactly once. The ranker then
serves from the cluster.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster_servers import ClusterServers
from tests.conftest import Servers
from tests.e2e.cluster import cluster_stack_env, cluster_stack_servers, wipe_cluster_namespace
from tests.e2e.conftest import Stack, ready
from tests.e2e.streams import ride_through
from tests.waiting import wait_until


@pytest.fixture
def stack_servers(servers: Servers, cluster_servers: ClusterServers) -> Servers:
    return cluster_stack_servers(servers, cluster_servers)


@pytest.fixture
def stack_env(cluster_servers: ClusterServers, namespace: str) -> Iterator[dict[str, str]]:
    yield cluster_stack_env(cluster_servers)
    wipe_cluster_namespace(cluster_servers, namespace)


def test_a_killed_trainer_on_the_cluster_loses_and_repeats_nothing(
    running_stack: Stack,
) -> None:
    url = running_stack.url("trainer")
    killed = running_stack.pid("trainer")

    def kill_and_restart() -> None:
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: running_stack.pid("trainer") != killed, 30, "the trainer restart")
        wait_until(lambda: ready(url), 60, "the restarted trainer to be ready")

    started = time.monotonic()
    ride_through(running_stack, kill_and_restart, "trainer killed on the Redis Cluster")
    print(f"cluster stack: stream and kill took {time.monotonic() - started:.1f} s")
    headers = {"X-API-Key": running_stack.api_key}
    wait_until(lambda: ready(running_stack.url("ranker")), 60, "the ranker to be ready")
    response = httpx.post(
        running_stack.url("ranker") + "/v1/recommend",
        json={"user_id": "u1", "k": 10},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 10
