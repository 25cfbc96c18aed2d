"""Ranker HTTP app: routes validate, call the `RankerRuntime`, and shape the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from freshrec.api import api_key_guard, install_common
from freshrec.api.limits import BodyLimitsConfig
from freshrec.ranking import Query, RankerConfig, RankerRuntime
from freshrec.ranking.recommender import SCORING
from freshrec.table import Tables
from services.ranker.deps import Runtime
from services.ranker.settings import RankerSettings
from services.ranker.status import status_router

__all__ = [
    "ItemOut",
    "RecommendRequest",
    "RecommendResponse",
    "RowResponse",
    "create_app",
    "runtime_config",
]


class RecommendRequest(BaseModel):
    """A recommendation request."""

    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, Field(min_length=1, max_length=128)] | Annotated[int, Field(ge=0)]
    k: int = Field(10, ge=1, description="How many items to return (at most `max_k`).")
    context: dict[Annotated[str, Field(max_length=64)], str | int | float] | None = Field(
        None, max_length=32
    )
    # strict ints: `false` is not item 0
    exclude_item_ids: list[
        Annotated[str, Field(min_length=1, max_length=256)]
        | Annotated[int, Field(strict=True, ge=0)]
    ] = Field(default_factory=list)


class ItemOut(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ItemOut]
    model_version: int | None
    index_version: int
    fallback: bool
    scoring: str = Field(
        SCORING,
        description="What `score` is: log P(interact) (the retrieval head, up to a per-user "
        "constant) + like_weight * log P(like | interact) (the ranking head).",
    )
    like_weight: float


class RowResponse(BaseModel):
    table: str
    id: str
    vector: list[float]
    event_time: float
    wall_time: float
    count: int
    age_s: float


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
    recommend_deps = [Depends(guard)] if settings.recommend_requires_key else []

    @router.post("/v1/recommend", response_model=RecommendResponse, dependencies=recommend_deps)
    async def recommend(body: RecommendRequest, runtime: Runtime) -> Response:
        """Top-k items for a user, scored from the freshest rows."""
        if body.k > settings.max_k:
            raise _field_error("k", f"must be at most {settings.max_k}")
        if len(body.exclude_item_ids) > settings.max_exclude:
            raise _field_error("exclude_item_ids", f"at most {settings.max_exclude} ids")
        exclude = tuple(str(i) for i in body.exclude_item_ids)
        result = await runtime.recommend(Query(str(body.user_id), body.k, body.context, exclude))
        # serialized directly: the shape is RecommendResponse's (documented by response_model)
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

    @router.get(
        "/v1/tables/{table}/rows/{row_id}",
        response_model=RowResponse,
        dependencies=[Depends(guard)],
    )
    async def read_row(
        runtime: Runtime,
        table: Annotated[str, Path(max_length=32)],
        row_id: Annotated[str, Path(min_length=1, max_length=256)],
    ) -> RowResponse:
        """One row: vector, update times and occurrence count (raw id, hashed per table)."""
        row = await runtime.read_row(table, row_id)
        return RowResponse(
            table=row.table,
            id=str(row.id),
            vector=[float(v) for v in row.vector],
            event_time=row.event_time,
            wall_time=row.wall_time,
            count=row.count,
            age_s=row.age_s,
        )

    return router


def _field_error(field: str, reason: str) -> Exception:
    return RequestValidationError([{"loc": ("body", field), "msg": reason, "type": "value_error"}])
