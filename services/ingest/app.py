"""Ingest HTTP app: the route bounds and reads the body, calls the `EventIngestor`, and
shapes the reply.

`POST /v1/events` answers:

- 202 `{"accepted": n}` once Kafka acknowledged all n events;
- 401 without a valid API key (when `FRESHREC_API_KEYS` is set);
- 408 when the body does not arrive within `body_timeout_s` (the connection is closed);
- 413 when the body is over `max_body_bytes` (from Content-Length, or while reading) or
  holds more than `max_batch_events` events;
- 422 when the body or any event is invalid: nothing is produced, and `details` lists
  every problem as `{"index", "field", "reason", "type"}`;
- 429 when `max_in_flight_batches` batches are already in progress;
- 503 with `Retry-After` when Kafka does not acknowledge in time.

The OpenAPI document gives the batch schema as this server checks it when the document is
served (`event_batch_json_schema`): its timestamp bound moves with the clock, so the document
is computed per request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from freshrec import __version__
from freshrec.api import api_key_guard, install_common
from freshrec.api.errors import error_body, error_response
from freshrec.api.limits import BodyLimitsConfig
from freshrec.errors import FreshrecError, PayloadTooLarge
from freshrec.stream import (
    EventIngestor,
    EventProducer,
    EventSink,
    InvalidEvents,
    event_batch_json_schema,
)
from freshrec.stream.metrics import BATCHES_REJECTED
from services.ingest.settings import IngestSettings

__all__ = ["Accepted", "IngestState", "create_app"]

logger = logging.getLogger(__name__)


class Accepted(BaseModel):
    """The answer to an accepted batch."""

    accepted: int = Field(description="Events the broker acknowledged: all that were posted.")


@dataclass
class IngestState:
    """What the app holds between requests; built in the lifespan."""

    settings: IngestSettings
    ingestor: EventIngestor


async def _state(request: Request) -> IngestState:  # async: no thread-pool hop
    return cast(IngestState, request.app.state.ingest)


State = Annotated[IngestState, Depends(_state)]


_EVENTS_PATH = "/v1/events"

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: error_response("Missing or wrong API key (when FRESHREC_API_KEYS is set)."),
    408: error_response("The body did not arrive within body_timeout_s; connection closed."),
    413: error_response("Body over max_body_bytes, or more than max_batch_events events."),
    422: error_response(
        "Invalid body or events; nothing was accepted. `details` lists every problem as "
        "{index, field, reason, type}."
    ),
    429: error_response(
        "Too many batches in progress; retry after Retry-After seconds.", retry_after=True
    ),
    503: error_response(
        "Kafka did not acknowledge; retry after Retry-After seconds.", retry_after=True
    ),
}

router = APIRouter()


@router.post(
    _EVENTS_PATH,
    status_code=202,
    response_model=Accepted,
    responses=_ERROR_RESPONSES,
    # the route reads the body itself (bounded, element-by-element errors), so FastAPI does
    # not know its schema; the app's document states it (`_document_with_batch_schema`)
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {}}}},
)
async def post_events(request: Request, state: State) -> Accepted | JSONResponse:
    """Accept a batch of events, all or nothing, once Kafka acknowledged every one."""
    body = await request.body()  # bounded in size and time by BodyLimits
    try:
        accepted = await state.ingestor.ingest(body)
    except InvalidEvents as exc:
        return JSONResponse(
            error_body(type(exc).__name__, exc.message, exc.details), status_code=422
        )
    return Accepted(accepted=accepted)


def _document_with_batch_schema(
    document: Mapping[str, Any], settings: IngestSettings
) -> dict[str, Any]:
    """`document` with the request body of `POST /v1/events` as this server checks it now.

    Computed per request of the document: the timestamp bound moves with the clock.
    """
    schema = event_batch_json_schema(
        max_batch_events=settings.max_batch_events,
        future_tolerance_s=settings.future_tolerance_s,
    )
    post = document["paths"][_EVENTS_PATH]["post"]
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    # copies along the changed path only: the cached document stays as FastAPI built it
    return {
        **document,
        "paths": {
            **document["paths"],
            _EVENTS_PATH: {"post": {**post, "requestBody": body}},
        },
    }


def create_app(settings: IngestSettings, sink: EventSink | None = None) -> FastAPI:
    """The ingest application.

    Args:
        settings: the process settings.
        sink: where events go; an `EventProducer` to `settings.events_topic` when None. The
            app closes it on shutdown either way.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        event_sink = sink or EventProducer(
            settings.kafka_bootstrap,
            settings.events_topic,
            partitions=settings.events_topic_partitions,
            connect_timeout_s=settings.kafka_connect_timeout_s,
            produce_timeout_s=settings.produce_timeout_s,
        )
        ingestor = EventIngestor(
            event_sink,
            max_batch_events=settings.max_batch_events,
            future_tolerance_s=settings.future_tolerance_s,
            max_in_flight_batches=settings.max_in_flight_batches,
        )
        app.state.ingest = IngestState(settings, ingestor)
        logger.info(
            "ingest ready to accept events for %s on Kafka %s",
            settings.events_topic,
            settings.kafka_bootstrap,
        )
        try:
            yield
        finally:
            await ingestor.close(settings.shutdown_timeout_s)

    app = FastAPI(
        title="freshrec ingest",
        version=__version__,
        summary="Takes interaction events and produces them to Kafka for online training.",
        lifespan=lifespan,
    )

    async def readiness() -> Mapping[str, bool]:
        state: IngestState = app.state.ingest
        return {"kafka": await state.ingestor.ready()}

    def refused(error: FreshrecError) -> None:
        reason = "body_too_large" if isinstance(error, PayloadTooLarge) else "body_timeout"
        BATCHES_REJECTED.labels(reason).inc()

    limits = BodyLimitsConfig(settings.max_body_bytes, settings.body_timeout_s, on_refused=refused)
    install_common(app, "ingest", readiness, limits=limits)
    app.include_router(router, dependencies=[Depends(api_key_guard(settings.api_keys))])
    cached_document = app.openapi

    def openapi() -> dict[str, Any]:
        return _document_with_batch_schema(cached_document(), settings)

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app
