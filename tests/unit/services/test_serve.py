"""`serve` runs an app like `uvicorn.run` and freezes the heap once the app has started."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import httpx

from tests.waiting import wait_until

_SERVER = textwrap.dedent(
    """
    import gc, sys
    from contextlib import asynccontextmanager
    from fastapi import FastAPI
    from freshrec.api import serve

    @asynccontextmanager
    async def lifespan(app):
        app.state.started_with = gc.get_freeze_count()
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/frozen")
    async def frozen() -> dict[str, int]:
        return {"at_startup": app.state.started_with, "now": gc.get_freeze_count()}

    serve(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_heap_is_frozen_after_the_lifespan_started() -> None:
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)])
    answer: dict[str, int] = {}

    def answered() -> bool:
        try:
            answer.update(httpx.get(f"http://127.0.0.1:{port}/frozen", timeout=1).json())
        except httpx.HTTPError:
            return False
        return True

    try:
        wait_until(answered, timeout_s=30, what="the served app answers")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert answer["at_startup"] == 0  # the lifespan ran before the freeze
    assert answer["now"] > 0


def test_a_server_that_cannot_start_exits_with_uvicorns_failure_status() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", _SERVER, str(port)], check=False, capture_output=True, timeout=60
        )
    assert done.returncode == 3
