"""Adds `/healthz`, `/readyz`, `/metrics`, request metrics and error handling to an app."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from freshrec.errors import FreshrecError
from freshrec.metrics import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS

__all__ = ["ReadinessCheck", "error_body", "install_common"]

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns each dependency's name and whether it answers."""


def error_body(error: str, message: str, details: object = None) -> dict[str, object]:
    """The JSON shape of every error freshrec answers with."""
    body: dict[str, object] = {"error": error, "message": message}
    if details is not None:
        body["details"] = details
    return body


def _route_template(request: Request) -> str:
    """The matched route's path template (never the raw path: ids stay out of labels)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def install_common(app: FastAPI, service: str, readiness: ReadinessCheck) -> None:
    """Install health, readiness, metrics, request metrics and error handlers on `app`.

    Args:
        app: the service's FastAPI application.
        service: the value of the `service` label on the HTTP metrics.
        readiness: checks run by `/readyz`; the service is ready when all return True.
    """

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        HTTP_IN_FLIGHT.labels(service).inc()
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            HTTP_IN_FLIGHT.labels(service).dec()
            route = _route_template(request)  # set by routing, so read after the handler
            HTTP_LATENCY.labels(service, route, request.method).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(service, route, request.method, str(status)).inc()

    @app.exception_handler(FreshrecError)
    async def _freshrec_error(_: Request, exc: FreshrecError) -> JSONResponse:
        headers = {}
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(exc.retry_after_s)
        if exc.status_code >= 500:
            logger.warning("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(
            error_body(type(exc).__name__, exc.message),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                "reason": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        return JSONResponse(
            error_body("InvalidInput", "request failed validation", details),
            status_code=422,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process is up."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: every dependency answers."""
        try:
            checks = dict(await readiness())
        except Exception as exc:  # a failing probe means not ready, never a crash
            logger.warning("readiness check failed: %s", exc)
            checks = {"probe": False}
        ready = all(checks.values())
        return JSONResponse(
            {"ready": ready, "checks": checks},
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "2"},
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)
