"""Adds `/healthz`, `/readyz`, `/metrics`, request metrics and error handling to an app."""

from __future__ import annotations

import gc
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException

from freshrec.api.errors import error_body
from freshrec.api.limits import BodyLimits, BodyLimitsConfig
from freshrec.errors import FreshrecError
from freshrec.metrics import RequestMetrics
from freshrec.settings import CommonSettings

__all__ = [
    "ReadinessCheck",
    "freeze_startup_heap",
    "install_common",
    "run_service",
    "serve",
]

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]
"""Returns each dependency's name and whether it answers."""

SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def freeze_startup_heap() -> None:
    """Take what exists when serving starts out of the garbage collector's full collections.

    A full (generation 2) collection walks every tracked object; a ranker holds about 250,000
    at start (torch, FastAPI, pydantic, its own state), about 100 ms of walking on this class
    of machine during which the event loop answers nothing, a latency spike for every
    request in flight. Those objects live until the process ends anyway: collect once, then
    `gc.freeze` them, so later collections walk only what was allocated since. Call at the
    end of a process's startup (`serve` does, once the app's lifespan has started).
    """
    gc.collect()
    gc.freeze()


class _HeapFreezingServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        freeze_startup_heap()


def serve(app: FastAPI, **config: Any) -> None:
    """Serve `app` in this process as `uvicorn.run(app, **config)` would, and freeze the heap
    (`freeze_startup_heap`) once its lifespan has started and it listens.

    Exits with uvicorn's startup-failure status (3) when the server could not start.
    """
    server = _HeapFreezingServer(uvicorn.Config(app, **config))
    server.run()
    if not server.started:
        sys.exit(3)


def run_service(
    create_app: Callable[[SettingsT], FastAPI],
    settings: SettingsT,
    *,
    host: str,
    port: int,
    **config: Any,
) -> None:
    """A service process's main: log at `settings.log_level`, then `serve` its app until
    interrupted, without uvicorn's access log (the request metrics count every request).

    Args:
        create_app: the service's app factory.
        settings: the process settings, passed to `create_app`.
        host: bind address.
        port: HTTP port.
        **config: further `uvicorn.Config` options (e.g. `timeout_graceful_shutdown`).
    """
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(
        create_app(settings),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        **config,
    )


def install_common(
    app: FastAPI,
    service: str,
    readiness: ReadinessCheck,
    *,
    limits: BodyLimitsConfig | None = None,
) -> None:
    """Install health, readiness, metrics, request metrics and error handlers on `app`.

    Args:
        app: the service's FastAPI application.
        service: the value of the `service` label on the HTTP metrics.
        readiness: checks run by `/readyz`; the service is ready when all return True.
        limits: bounds on request bodies (`BodyLimits`); None: unbounded here.
    """
    if limits is not None:  # inside the request metrics: refusals are counted like answers
        app.add_middleware(BodyLimits, config=limits)
    app.add_middleware(RequestMetrics, service=service)

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

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        # the framework's own refusals (unknown path, method not allowed, a body it could
        # not decode) answer in the same shape as ours, keeping their headers (`Allow`)
        return JSONResponse(
            error_body(_error_name(exc.status_code), str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
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


def _error_name(status_code: int) -> str:
    """`NotFound` for 404, `MethodNotAllowed` for 405: the status phrase as a class-like name."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        return "HTTPError"
    return "".join(word.capitalize() for word in phrase.replace("-", " ").split())
