"""Servers of a test's own, on free loopback ports, that the test may kill and restart.

The session's Redis and Kafka (tests/conftest.py) are shared by every test; a test that stops a
server starts a private one here, so the outage disturbs nobody else. Both keep their data
across a restart, as `deploy/local` runs them: Redis with AOF, Kafka on the same log directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import redis

from services.cli.ports import free_port, free_port_pair
from tests.waiting import wait_until

__all__ = ["PrivateKafka", "PrivateRedis", "free_port", "free_port_pair"]

ROOT = Path(__file__).resolve().parents[1]
SERVERS_SH = ROOT / "deploy" / "local" / "servers.sh"


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class PrivateRedis:
    """A `redis-server` with AOF on a free port; `kill` is SIGKILL, `start` reopens its data."""

    def __init__(self, data: Path) -> None:
        self.port = free_port()
        self.data = data
        self.data.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--dir", str(self.data), "--appendonly", "yes", "--appendfsync", "everysec",
             "--save", "", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        try:
            wait_until(lambda: _pings(client), 30, f"redis on port {self.port}")
        finally:
            client.close()

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None


class PrivateKafka:
    """A KRaft broker of its own, started and stopped with `deploy/local/servers.sh`."""

    def __init__(self, run_dir: Path) -> None:
        self.port = free_port_pair()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.run_dir = run_dir
        self.env = {
            **os.environ,
            "FRESHREC_TOPOLOGY": "single",
            "FRESHREC_KAFKA_PORT": str(self.port),
            "FRESHREC_RUN_DIR": str(run_dir),
            "FRESHREC_START_TIMEOUT": "90",
        }

    def _servers(self, action: str) -> None:
        proc = subprocess.run(
            ["bash", str(SERVERS_SH), action, "kafka"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )
        if proc.returncode != 0:
            pytest.fail(f"servers.sh {action} kafka failed:\n{proc.stderr}", pytrace=False)

    def up(self) -> None:
        """Start the broker (on the data of its last run, if any) and wait until it serves."""
        self._servers("up")

    def down(self) -> None:
        """Stop the broker and wait until its process is gone and its port is closed."""
        pidfile = self.run_dir / "kafka.pid"
        pids: list[int] = []
        if pidfile.exists():
            launcher = int(pidfile.read_text())
            pids = [launcher, *_children(launcher)]
        self._servers("down")
        # the pid file may name the shell that launched the JVM; stop the JVM as well
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        try:
            wait_until(
                lambda: not any(_alive(pid) for pid in pids) and not port_answers(self.port),
                30.0,
                f"private Kafka on {self.bootstrap} to stop",
            )
        finally:
            for pid in pids:  # never leave a broker behind, even when the wait failed
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
