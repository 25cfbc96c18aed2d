"""Ranker HTTP app: routes validate, call the `RankerRuntime`, and shape the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from freshrec.api import api_key_guard, install_common
from freshrec.api.answers import Recommendation, Row
from freshrec.api.errors import error_response
from freshrec.api.limits import BodyLimitsConfig
from freshrec.ranking import Query, RankerConfig, RankerRuntime
from freshrec.ranking.recommender import SCORING
from freshrec.stream.events import WHOLE_FLOAT_ID_MAX
from freshrec.table import Tables
from services.ranker.deps import Runtime
from services.ranker.settings import RankerSettings
from services.ranker.status import status_router

__all__ = [
    "RecommendRequest",
    "bounded_request_model",
    "create_app",
    "runtime_config",
]


def _whole_number(value: object) -> object:
    # JSON, and the JSON Schema of the OpenAPI document, do not tell `2.0` from `2`; a float
    # spells an integer exactly only up to 2**53, so larger ones stay floats (and are refused)
    if isinstance(value, float) and value.is_integer() and abs(value) <= WHOLE_FLOAT_ID_MAX:
        return int(value)
    return value


WholeInt = Annotated[int, BeforeValidator(_whole_number)]
"""An integer, also when written as a whole float (`10.0`); never a string or a boolean."""

# the bound before the validator, so that the JSON Schema states it as `minimum`
NonNegativeWholeInt = Annotated[int, Field(ge=0), BeforeValidator(_whole_number)]

ItemId = Annotated[str, Field(min_length=1, max_length=256)] | NonNegativeWholeInt


class RecommendRequest(BaseModel):
    """A recommendation request.

    Strict, like the events: no coercion, so `"0000"` is not user 0 and `false` is not item 0.
    The bounds that are settings (`max_k`, `max_exclude`) are added per app
    (`bounded_request_model`), so the OpenAPI document states them.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Annotated[str, Field(min_length=1, max_length=128)] | NonNegativeWholeInt
    k: WholeInt = Field(10, ge=1, description="How many items to return (at most `max_k`).")
    context: dict[Annotated[str, Field(max_length=64)], str | int | float] | None = Field(
        None, max_length=32
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list, description="Items not to return (at most `max_exclude`)."
    )


def bounded_request_model(settings: RankerSettings) -> type[RecommendRequest]:
    """`RecommendRequest` with `settings`' bounds on `k` and `exclude_item_ids` as field
    constraints: validated by pydantic and written in the OpenAPI document."""
    return create_model(
        "RecommendRequest",
        __base__=RecommendRequest,
        __doc__=RecommendRequest.__doc__,
        k=(WholeInt, Field(10, ge=1, le=settings.max_k, description="How many items to return.")),
        exclude_item_ids=(
            list[ItemId],
            Field(
                default_factory=list,
                max_length=settings.max_exclude,
                description="Items not to return.",
            ),
        ),
    )


def runtime_config(settings: RankerSettings) -> RankerConfig:
    """The runtime's config: the settings' fields of the same names."""
    return RankerConfig(**{f.name: getattr(settings, f.name) for f in fields(RankerConfig)})


def create_app(settings: RankerSettings, tables: Tables | None = None) -> FastAPI:
    """The ranker app; the runtime opens in the lifespan and closes when it ends.

    Args:
        settings: the process settings.
        tables: prepared tables (e.g. on an in-memory backend); None opens Redis at
            `settings.redis_url`.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with RankerRuntime(runtime_config(settings), tables) as runtime:
            app.state.ranker = runtime
            yield

    app = FastAPI(
        title="freshrec ranker",
        version="1",
        description="Recommendations from the freshest embedding rows.",
        lifespan=lifespan,
    )

    async def readiness() -> Mapping[str, bool]:
        runtime: RankerRuntime = app.state.ranker
        return await runtime.readiness()

    limits = BodyLimitsConfig(settings.max_body_bytes, settings.body_timeout_s)
    install_common(app, "ranker", readiness, limits=limits)
    app.include_router(status_router(settings.trainer_url))
    app.include_router(_routes(settings))
    return app


def _routes(settings: RankerSettings) -> APIRouter:
    """`/v1/recommend` and the row endpoint, bounded by `settings`."""
    router = APIRouter()
    guard = api_key_guard(settings.api_keys)
    needs_key = bool(settings.api_keys)
    recommend_deps = [Depends(guard)] if settings.recommend_requires_key else []
    recommend_responses = _responses(
        {
            400: "The body could not be read as JSON text (e.g. it is not UTF-8).",
            422: "The body is not a valid request; `details` names each wrong field.",
            429: "Too many requests waiting for the next batch; retry after Retry-After.",
        },
        needs_key=needs_key and settings.recommend_requires_key,
    )
    row_responses = _responses(
        {
            404: "No such table, or no row for this id in it.",
            422: "A path parameter is too long or empty; `details` names it.",
        },
        needs_key=needs_key,
    )

    async def recommend(body: RecommendRequest, runtime: Runtime) -> Response:
        """Top-k items for a user, scored from the freshest rows."""
        exclude = tuple(str(i) for i in body.exclude_item_ids)
        result = await runtime.recommend(Query(str(body.user_id), body.k, body.context, exclude))
        # serialized directly: the shape is Recommendation's (documented by response_model)
        payload = {
            "items": [
                {"item_id": item_id, "score": score}
                for item_id, score in zip(result.item_ids, result.scores, strict=True)
            ],
            "model_version": result.model_version,
            "index_version": result.index_version,
            "fallback": result.fallback,
            "scoring": SCORING,
            "like_weight": result.like_weight,
        }
        return Response(orjson.dumps(payload), media_type="application/json")

    # FastAPI takes the body's model from the annotation: the one bounded by these settings,
    # so pydantic checks `max_k` and `max_exclude` and the document states them
    recommend.__annotations__["body"] = bounded_request_model(settings)
    router.add_api_route(
        "/v1/recommend",
        recommend,
        methods=["POST"],
        response_model=Recommendation,
        responses=recommend_responses,
        dependencies=recommend_deps,
    )

    @router.get(
        "/v1/tables/{table}/rows/{row_id}",
        response_model=Row,
        responses=row_responses,
        dependencies=[Depends(guard)],
    )
    async def read_row(
        runtime: Runtime,
        table: Annotated[str, Path(max_length=32)],
        row_id: Annotated[str, Path(min_length=1, max_length=256)],
    ) -> Row:
        """One row: vector, update times and occurrence count (raw id, hashed per table)."""
        row = await runtime.read_row(table, row_id)
        return Row(
            table=row.table,
            id=str(row.id),
            vector=[float(v) for v in row.vector],
            event_time=row.event_time,
            wall_time=row.wall_time,
            count=row.count,
            age_s=row.age_s,
        )

    return router


def _responses(specific: Mapping[int, str], *, needs_key: bool) -> dict[int | str, Any]:
    """A route's error answers: `specific` plus those every route of the ranker may give."""
    described: dict[int, str] = {
        **({401: "Missing or wrong API key."} if needs_key else {}),
        408: "The body did not arrive within body_timeout_s; connection closed.",
        413: "Body over max_body_bytes.",
        503: "Redis did not answer; retry after Retry-After seconds.",
        **specific,
    }
    return {
        status: error_response(text, retry_after=status in (429, 503))
        for status, text in sorted(described.items())
    }
