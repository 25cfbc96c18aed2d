"""Ingest HTTP app: the route bounds and reads the body, calls the `EventIngestor`, and
shapes the reply.

`POST /v1/events` answers:

- 202 `{"accepted": n}` once Kafka acknowledged all n events;
- 401 without a valid API key (when `FRESHREC_API_KEYS` is set);
- 413 when the body is over `max_body_bytes` (from Content-Length, or while reading) or
  holds more than `max_batch_events` events;
- 422 when the body or any event is invalid: nothing is produced, and `details` lists
  every problem as `{"index", "field", "reason", "type"}`;
- 429 when `max_in_flight_batches` batches are already in progress;
- 503 with `Retry-After` when Kafka does not acknowledge in time.
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
from freshrec.api.errors import error_body
from freshrec.api.limits import BodyLimitsConfig
from freshrec.errors import FreshrecError, PayloadTooLarge
from freshrec.stream import EventBatch, EventIngestor, EventProducer, EventSink, InvalidEvents
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


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """`node` with every `#/$defs/...` reference replaced by its definition."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
            rest = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
            return {**target, **rest}
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _batch_schema() -> dict[str, Any]:
    # the route reads the body itself (bounded, element-by-element errors), so FastAPI does
    # not know its schema; it is given here for the OpenAPI document
    schema = EventBatch.model_json_schema()
    defs = schema.pop("$defs", {})
    return cast(dict[str, Any], _inline_refs(schema, defs))


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong API key."},
    408: {"description": "The body did not arrive within body_timeout_s; connection closed."},
    413: {"description": "Body over max_body_bytes, or more than max_batch_events events."},
    422: {
        "description": "Invalid body or events; nothing was accepted. `details` lists every "
        "problem as {index, field, reason, type}."
    },
    429: {"description": "Too many batches in progress; retry after Retry-After seconds."},
    503: {"description": "Kafka did not acknowledge; retry after Retry-After seconds."},
}

router = APIRouter()


@router.post(
    "/v1/events",
    status_code=202,
    response_model=Accepted,
    responses=_ERROR_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _batch_schema()}},
        }
    },
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
    return app
