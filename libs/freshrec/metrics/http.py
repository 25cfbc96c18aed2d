"""The request metrics every freshrec HTTP service exports, and the middleware recording them."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from freshrec.metrics.buckets import LATENCY_BUCKETS_S

__all__ = ["HTTP_IN_FLIGHT", "HTTP_LATENCY", "HTTP_REQUESTS", "RequestMetrics"]

HTTP_REQUESTS = Counter(
    "freshrec_http_requests_total",
    "HTTP requests answered, by service, route template, method and status code.",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "freshrec_http_request_duration_seconds",
    "Time from request received to response sent, by service and route template.",
    ["service", "route", "method"],
    buckets=LATENCY_BUCKETS_S,
)
HTTP_IN_FLIGHT = Gauge(
    "freshrec_http_requests_in_flight",
    "Requests being handled right now, by service.",
    ["service"],
)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (never the raw path: ids stay out of labels)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestMetrics:
    """Pure ASGI middleware: request count, latency and in-flight gauge per route template.

    (Starlette's `BaseHTTPMiddleware` runs each request in an extra task with memory streams,
    which costs more than a small route itself.)

    Args:
        app: the application to wrap.
        service: the value of the `service` label.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.in_flight = HTTP_IN_FLIGHT.labels(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.in_flight.dec()
            route = _route_template(scope)  # set by routing, so read after the handler
            method = str(scope.get("method", ""))
            HTTP_LATENCY.labels(self.service, route, method).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(self.service, route, method, str(status)).inc()
