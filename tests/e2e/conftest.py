"""The three services as real processes on free loopback ports, in a test's own namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli import stack
from tests.conftest import Servers
from tests.private_servers import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    namespace: str
    ingest: str
    trainer: str
    ranker: str
    api_key: str
    run_dir: Path
    env: dict[str, str]

    def url(self, service: str) -> str:
        return str(getattr(self, service))

    def pid(self, service: str) -> int:
        """The pid the supervisor wrote for `service`."""
        return int((self.run_dir / f"{service}.pid").read_text())


def ready(url: str) -> bool:
    """Whether the service at `url` answers /readyz with 200."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def post_events(stack: Stack, events: list[dict[str, Any]]) -> httpx.Response:
    """Post a batch to the stack's ingest; it must be accepted (202)."""
    response = httpx.post(
        f"{stack.ingest}/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {stack.api_key}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return response


@pytest.fixture
def stack_servers(servers: Servers) -> Servers:
    """The Redis and Kafka the stack uses (a fault test overrides them with ones it may stop)."""
    return servers


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Environment the stack's processes get on top of the defaults (a test overrides it)."""
    return {}


@pytest.fixture
def running_stack(
    stack_servers: Servers,
    stack_env: dict[str, str],
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    ports = {name: free_port() for name in ("INGEST", "TRAINER", "RANKER")}
    api_key = "test-key-" + namespace[-8:]
    env = {
        **os.environ,
        "FRESHREC_REDIS_URL": stack_servers.redis_url,
        "FRESHREC_KAFKA_BOOTSTRAP": stack_servers.kafka_bootstrap,
        "FRESHREC_NAMESPACE": namespace,
        "FRESHREC_TRAINER__GROUP": f"{namespace}-group",
        "FRESHREC_API_KEYS": api_key,
        "FRESHREC_TRAINER__PUBLISH_INTERVAL_S": "0.5",
        "FRESHREC_MAX_BATCH_WAIT_S": "0.05",
        "FRESHREC_CONSUMER__SESSION_TIMEOUT_MS": "6000",
        "FRESHREC_EVENTS_TOPIC_PARTITIONS": "2",
        "FRESHREC_TRAINER__EXPIRE_EVERY_BATCHES": "1",
        "FRESHREC_TRAINER_URL": f"http://127.0.0.1:{ports['TRAINER']}",
        "PYTHONPATH": f"{ROOT / 'libs'}:{ROOT}",
        **{f"FRESHREC_{name}_PORT": str(port) for name, port in ports.items()},
        **stack_env,
    }
    run_dir = tmp_path / "run"
    monkeypatch.setenv("FRESHREC_RUN_DIR", str(run_dir))
    try:
        urls = stack.start_services(timeout_s=120, env=env)
    except RuntimeError as exc:
        logs = "\n".join(
            f"--- {log.name}\n{log.read_text()[-2000:]}" for log in run_dir.glob("*.log")
        )
        stack.stop_services()
        pytest.fail(f"services did not start: {exc}\n{logs}", pytrace=False)
    try:
        yield Stack(
            namespace, urls["ingest"], urls["trainer"], urls["ranker"], api_key, run_dir, env
        )
    finally:
        stack.stop_services()
