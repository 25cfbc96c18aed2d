"""A private `redis-server` a benchmark starts for itself: large sizes never touch a shared one."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

__all__ = ["LISTPACK_SETTINGS", "scratch_redis"]

# What the benchmark's server allows a hash to hold as a listpack: rows of the packed layout up
# to 1,024 bytes (dim 64 with Adagrad is 536) and 512 rows per hash.
LISTPACK_SETTINGS = {"hash-max-listpack-value": "1024", "hash-max-listpack-entries": "512"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scratch_redis(settings: dict[str, str] | None = None, timeout_s: float = 30.0) -> Iterator[str]:
    """Run a `redis-server` without persistence on a free port; yields its URL.

    Args:
        settings: extra server settings (``name: value``, as in redis.conf).
        timeout_s: how long the server may take to answer.

    Raises:
        RuntimeError: `redis-server` is not installed or did not answer in time.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="freshrec-bench-redis-")
    extra = [x for name, value in (settings or {}).items() for x in (f"--{name}", value)]
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir,
         "--save", "", "--appendonly", "no", *extra],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
