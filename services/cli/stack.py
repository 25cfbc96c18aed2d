"""Start, stop and check the three freshrec services as local background processes.

Each service runs as `python -m services.<name>.main` in its own session, with its log and
pid file in the run directory (`FRESHREC_RUN_DIR`, default `~/.cache/freshrec/run`). `up`
waits until every service answers `/readyz` (with a deadline, naming the log to read when one
does not); `down` ends exactly the processes whose pid files `up` wrote.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["SERVICES", "Service", "run_dir", "service_status", "start_services", "stop_services"]


@dataclass(frozen=True)
class Service:
    """One freshrec process: its module, the env var of its port, and its default port."""

    name: str
    module: str
    port_env: str
    default_port: int

    def port(self, env: Mapping[str, str]) -> int:
        return int(env.get(self.port_env, self.default_port))

    def url(self, env: Mapping[str, str]) -> str:
        return f"http://127.0.0.1:{self.port(env)}"


_children: dict[str, subprocess.Popen[bytes]] = {}
"""Processes this interpreter started; kept so they are reaped, not left as zombies."""

SERVICES = (
    Service("ingest", "services.ingest.main", "FRESHREC_INGEST_PORT", 8001),
    Service("trainer", "services.trainer.main", "FRESHREC_TRAINER_PORT", 8002),
    Service("ranker", "services.ranker.main", "FRESHREC_RANKER_PORT", 8000),
)


def run_dir() -> Path:
    """Where logs and pid files live."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshrec" / "run"
    path = Path(os.environ.get("FRESHREC_RUN_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid(service: Service) -> int | None:
    child = _children.get(service.name)
    if child is not None and child.poll() is not None:
        return None
    pidfile = run_dir() / f"{service.name}.pid"
    try:
        pid = int(pidfile.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_services(
    timeout_s: float = 120.0, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Start every service not already running and wait until all are ready.

    Returns:
        Service name → base URL.

    Raises:
        RuntimeError: a service exited or was not ready in time (names its log).
    """
    environ = dict(os.environ if env is None else env)
    urls = {s.name: s.url(environ) for s in SERVICES}
    for service in SERVICES:
        if _pid(service) is not None:
            continue
        log = run_dir() / f"{service.name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", service.module],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environ,
                start_new_session=True,
            )
        _children[service.name] = proc
        (run_dir() / f"{service.name}.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    for service in SERVICES:
        while not _ready(urls[service.name]):
            log = run_dir() / f"{service.name}.log"
            if _pid(service) is None:
                raise RuntimeError(f"{service.name} exited during start; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} not ready after {timeout_s:.0f}s; see {log}")
            time.sleep(0.3)
    return urls


def stop_services(timeout_s: float = 30.0) -> list[str]:
    """SIGTERM every service `start_services` started (SIGKILL after `timeout_s`).

    Returns:
        Names of the services stopped.
    """
    stopped = []
    for service in reversed(SERVICES):
        pid = _pid(service)
        pidfile = run_dir() / f"{service.name}.pid"
        if pid is None:
            pidfile.unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid(service) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid(service) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child = _children.pop(service.name, None)
        if child is not None:
            child.wait(timeout=5)
        pidfile.unlink(missing_ok=True)
        stopped.append(service.name)
    return stopped


def service_status(env: Mapping[str, str] | None = None) -> dict[str, tuple[bool, str]]:
    """Service name → (ready, base URL)."""
    environ = dict(os.environ if env is None else env)
    return {s.name: (_ready(s.url(environ)), s.url(environ)) for s in SERVICES}
