"""Body bounds on a real uvicorn server: a readable 413 for a large body, 408 for a slow one."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI, Request

from freshrec.api.limits import BodyLimits, BodyLimitsConfig
from freshrec.errors import FreshrecError
from tests.waiting import wait_until

LIMIT = 1 << 20


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    refusals: list[str] = []

    def refused(error: FreshrecError) -> None:
        refusals.append(type(error).__name__)

    config = BodyLimitsConfig(max_body_bytes=LIMIT, body_timeout_s=1.0, on_refused=refused)
    wrapped = BodyLimits(app, config=config)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(wrapped, host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_until(lambda: running.started, timeout_s=10, what="uvicorn started")
    yield f"http://127.0.0.1:{port}", refusals
    running.should_exit = True
    thread.join(timeout=10)


def _post(url: str, data: object) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{url}/echo", data=data, headers={"content-type": "application/octet-stream"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_body_within_the_bound_reaches_the_route(server: tuple[str, list[str]]) -> None:
    url, refusals = server
    assert _post(url, b"x" * LIMIT) == (200, b'{"bytes":1048576}')
    assert refusals == []


def test_a_10_mb_body_sent_whole_gets_a_readable_413(server: tuple[str, list[str]]) -> None:
    url, refusals = server
    for _ in range(3):
        status, body = _post(url, b"x" * (10 * 1024 * 1024))
        assert status == 413
        assert b"PayloadTooLarge" in body
    assert refusals == ["PayloadTooLarge"] * 3
    assert _post(url, b"ok") == (200, b'{"bytes":2}'), "the server keeps serving"


def test_a_chunked_body_over_the_bound_gets_413(server: tuple[str, list[str]]) -> None:
    url, _ = server
    status, body = _post(url, iter([b"y" * 100_000] * 20))
    assert status == 413 and b"body over" in body


def test_a_trickling_body_is_cut_off_with_408(server: tuple[str, list[str]]) -> None:
    url, refusals = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nab")
        conn.settimeout(10)
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"connection: close" in answer.lower()
        assert conn.recv(4096) == b"", "the server closed the connection"
    assert refusals == ["BodyTimeout"]
    assert _post(url, b"ok") == (200, b'{"bytes":2}')
