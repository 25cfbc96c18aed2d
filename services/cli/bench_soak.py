"""`freshrec bench soak`'s processes: a Redis and a Kafka of its own, the stack, the faults.

The soak kills and stops its servers, so it never uses the ones `make up` started: it starts a
Redis (AOF on) and a single-node Kafka with `deploy/local/servers.sh` on free ports in a
scratch run directory, and the three services under the stack's supervisor beside them. The
faults it draws from:

- `redis`: Redis killed with SIGKILL, down for 5 s, restarted on its data;
- `kafka`: the broker stopped, down for 10 s, restarted on its log directory;
- `ingest`, `trainer`, `ranker`: the service killed with SIGKILL; back when the supervisor
  has restarted it and it answers `/readyz`.

The producer retries every batch that got a 503 or no answer throughout. Everything is
stopped afterwards, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from freshrec.offline.bench.soak import Fault, SoakTargets, run_soak
from services.cli import stack
from services.cli.paths import checkout_dir
from services.cli.ports import free_port, free_port_pair

__all__ = ["soak_bench"]

REDIS_DOWN_S = 5.0
KAFKA_DOWN_S = 10.0
RESTART_TIMEOUT_S = 120.0


class _Servers:
    """Redis and Kafka of the soak's own, driven through `deploy/local/servers.sh`."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.redis_port = free_port()
        self.kafka_port = free_port_pair()
        self.env = {
            **os.environ,
            "FRESHREC_TOPOLOGY": "single",
            "FRESHREC_RUN_DIR": str(run),
            "FRESHREC_REDIS_PORT": str(self.redis_port),
            "FRESHREC_KAFKA_PORT": str(self.kafka_port),
        }

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def servers(self, action: str, *which: str) -> None:
        script = checkout_dir() / "deploy" / "local" / "servers.sh"
        subprocess.run(["bash", str(script), action, *which], env=self.env, check=True, timeout=300)

    def kill_redis(self) -> None:
        pid = int((self.run / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        while stack.alive(pid):
            time.sleep(0.05)


def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s:g} s")
        time.sleep(0.1)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _kill_service(name: str, url: str) -> Callable[[], None]:
    def inject() -> None:
        pid = stack.running_pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: stack.running_pid(name) not in (None, pid), RESTART_TIMEOUT_S,
              f"the supervisor restarted {name}")  # fmt: skip
        _wait(lambda: _ready(url), RESTART_TIMEOUT_S, f"{name} was ready again")

    return inject


def _faults(servers: _Servers, urls: dict[str, str]) -> list[Fault]:
    def redis_outage() -> None:
        servers.kill_redis()
        time.sleep(REDIS_DOWN_S)
        servers.servers("up", "redis")

    def kafka_outage() -> None:
        servers.servers("down", "kafka")
        time.sleep(KAFKA_DOWN_S)
        servers.servers("up", "kafka")

    return [
        Fault("redis", redis_outage),
        Fault("kafka", kafka_outage),
        *(Fault(name, _kill_service(name, url)) for name, url in urls.items()),
    ]


@contextmanager
def _soak_stack(workdir: Path) -> Iterator[tuple[_Servers, dict[str, str], str, str]]:
    servers = _Servers(workdir / "servers")
    namespace = f"soak-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    env = {
        **os.environ,
        "FRESHREC_REDIS_URL": servers.redis_url,
        "FRESHREC_KAFKA_BOOTSTRAP": servers.bootstrap,
        "FRESHREC_NAMESPACE": namespace,
        "FRESHREC_TRAINER__GROUP": f"{namespace}-group",
        "FRESHREC_API_KEYS": key,
        "FRESHREC_EVENTS_TOPIC_PARTITIONS": "4",
        **{f"FRESHREC_{name}_PORT": str(free_port()) for name in ("INGEST", "TRAINER", "RANKER")},
    }
    servers.servers("up")
    try:
        with stack.use_run_dir(workdir / "run"):
            try:
                yield servers, stack.start_services(timeout_s=180, env=env), key, namespace
            finally:
                stack.stop_services()
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            servers.servers("down")


def soak_bench(out: Path, minutes: float, seed: int) -> dict[str, Any]:
    """Start private servers and the stack, soak them for `minutes`, stop everything."""
    workdir = Path(tempfile.mkdtemp(prefix="freshrec-soak-"))
    with _soak_stack(workdir) as (servers, urls, key, namespace):
        targets = SoakTargets(
            ingest=urls["ingest"],
            trainer=urls["trainer"],
            ranker=urls["ranker"],
            api_key=key,
            redis_url=servers.redis_url,
            namespace=namespace,
        )
        result = run_soak(targets, _faults(servers, urls), out, duration_s=minutes * 60, seed=seed)
    result["logs"] = str(workdir)
    return result
