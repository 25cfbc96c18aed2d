"""Request-body bounds enforced before a route runs: size (413) and arrival time (408).

A client that sends a body over the bound gets a readable 413: the body is read and thrown
away (up to `drain_bytes` more) before the answer goes out, because a server that answers and
closes while the client is still writing makes the client's socket see a reset instead of the
answer. A body that trickles in slower than `body_timeout_s` allows gets 408, and its
connection is closed, so a slow client holds a connection for a bounded time only.

The body is buffered here (it is at most `max_body_bytes`) and handed to the app whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from freshrec.api.errors import error_body
from freshrec.errors import BodyTimeout, FreshrecError, PayloadTooLarge

__all__ = ["BodyLimits", "BodyLimitsConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BodyLimitsConfig:
    """Bounds on request bodies.

    Attributes:
        max_body_bytes: largest body accepted; more is answered 413.
        body_timeout_s: the whole body must arrive within this long; else 408.
        drain_bytes: after a 413, read and discard at most this many more bytes (so the client
            finishes sending and reads the answer); a longer body is cut off.
        on_refused: called with each refusal (`PayloadTooLarge` or `BodyTimeout`).
    """

    max_body_bytes: int
    body_timeout_s: float
    drain_bytes: int = 64 * 1024 * 1024
    on_refused: Callable[[FreshrecError], None] | None = None


class BodyLimits:
    """Pure ASGI middleware bounding every HTTP request body in size and arrival time."""

    def __init__(self, app: ASGIApp, *, config: BodyLimitsConfig) -> None:
        self.app = app
        self.max_body_bytes = config.max_body_bytes
        self.body_timeout_s = config.body_timeout_s
        self.drain_bytes = config.drain_bytes
        self.on_refused = config.on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.body_timeout_s
        try:
            body = await self._read(scope, receive, deadline)
        except (PayloadTooLarge, BodyTimeout) as refused:
            if self.on_refused is not None:
                self.on_refused(refused)
            await _answer(send, refused)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only the disconnect can come

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive, deadline: float) -> bytes:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._drain(receive, deadline, declared)
            raise PayloadTooLarge(
                f"body of {declared} bytes; at most {self.max_body_bytes} allowed"
            )
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await _receive_before(receive, deadline)
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if size > self.max_body_bytes:
                if more:
                    await self._drain(receive, deadline, None)
                raise PayloadTooLarge(f"body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _drain(self, receive: Receive, deadline: float, declared: int | None) -> None:
        """Read and discard the rest of the body, within the bounds; give up quietly beyond."""
        if declared is not None and declared > self.drain_bytes:
            return  # too much to read: the connection is cut instead
        drained = 0
        try:
            while drained <= self.drain_bytes:
                message = await _receive_before(receive, deadline)
                drained += len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
        except BodyTimeout:
            return


async def _receive_before(receive: Receive, deadline: float) -> Message:
    try:
        return await asyncio.wait_for(receive(), timeout=max(deadline - time.monotonic(), 0.0))
    except TimeoutError as exc:
        raise BodyTimeout("the request body did not arrive in time") from exc


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the route reports it; the size is still checked while reading
    return None


async def _answer(send: Send, refused: FreshrecError) -> None:
    body = orjson.dumps(error_body(type(refused).__name__, refused.message))
    await send(
        {
            "type": "http.response.start",
            "status": refused.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
