"""Ranker HTTP app: routes validate, call the `Recommender`, and shape the reply."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import orjson
import redis
from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field

from freshrec.api import api_key_guard, install_common
from freshrec.errors import NotFound, Overloaded, StoreUnavailable
from freshrec.ranking import ModelHolder, PopularityTracker, Query, RecommendBatcher, Recommender
from freshrec.retrieval import IndexFollower, RowMirror, build_retriever
from freshrec.retrieval.config import FlatConfig, HnswConfig, IvfConfig
from freshrec.table import EmbeddingStore, RedisTableBackend, load_tables, open_tables
from freshrec.table.ids import hash_feature
from freshrec.threads import limit_compute_threads
from services.ranker.settings import RankerSettings
from services.ranker.status import status_router

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


class RecommendRequest(BaseModel):
    """A recommendation request."""

    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, Field(min_length=1, max_length=128)] | Annotated[int, Field(ge=0)]
    k: int = Field(10, ge=1, description="How many items to return (at most `max_k`).")
    context: dict[Annotated[str, Field(max_length=64)], str | int | float] | None = Field(
        None, max_length=32
    )
    exclude_item_ids: list[str | int] = Field(default_factory=list)


class ItemOut(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    items: list[ItemOut]
    model_version: int | None
    index_version: int
    fallback: bool


class RowResponse(BaseModel):
    table: str
    id: str
    vector: list[float]
    event_time: float
    wall_time: float
    count: int
    age_s: float


@dataclass
class RankerState:
    """What the app holds between requests; built in the lifespan."""

    settings: RankerSettings
    client: redis.Redis
    tables: Mapping[str, EmbeddingStore]
    recommender: Recommender
    follower: IndexFollower
    models: ModelHolder
    popularity: PopularityTracker
    batcher: RecommendBatcher
    stop: threading.Event
    sync_thread: threading.Thread
    admitted: int = 0


def _retriever_config(settings: RankerSettings) -> FlatConfig | IvfConfig | HnswConfig:
    if settings.index_kind == "ivf":
        return IvfConfig(nprobe=settings.index_nprobe)
    if settings.index_kind == "hnsw":
        return HnswConfig(ef_search=settings.index_ef_search)
    return FlatConfig()


def _sync_loop(state: RankerState) -> None:
    """Model versions and popularity, polled beside the index follower (started late if
    Redis was down when the app started)."""
    while not state.stop.wait(state.settings.sync_interval_s):
        try:
            if not state.follower.running:
                state.follower.start()
            state.models.refresh()
            state.popularity.poll_once()
        except StoreUnavailable as exc:
            logger.warning("sync paused, Redis unavailable: %s", exc)
        except Exception:  # the sync thread must outlive any single bad poll
            logger.exception("sync iteration failed")


async def get_state(request: Request) -> RankerState:
    # async: FastAPI would run a plain `def` dependency in its thread pool
    state: RankerState = request.app.state.ranker
    return state


State = Annotated[RankerState, Depends(get_state)]


def create_app(settings: RankerSettings) -> FastAPI:
    """The ranker app; connections open in the lifespan and close when it ends."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_compute_threads(settings.compute_threads)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2.0)
        tables_config = load_tables(settings.table_config)
        tables = open_tables(tables_config, RedisTableBackend(client, settings.namespace))
        retriever = build_retriever(_retriever_config(settings), tables.item.config.dim)
        mirror = RowMirror(retriever.dim) if settings.item_rows == "mirror" else None
        follower = IndexFollower(
            tables.item,
            retriever,
            settings.index_snapshot,
            snapshot_interval_s=settings.index_snapshot_interval_s,
            mirror=mirror,
        )
        models = ModelHolder(tables.backend)
        popularity = PopularityTracker(tables.item)
        stop = threading.Event()
        recommender = Recommender(
            tables,
            retriever,
            models,
            popularity,
            candidates=settings.candidates,
            item_rows=mirror,
        )
        state = RankerState(
            settings=settings,
            client=client,
            tables=tables.by_name(),
            recommender=recommender,
            follower=follower,
            models=models,
            popularity=popularity,
            batcher=RecommendBatcher(recommender.recommend_batch, max_batch=settings.max_batch),
            stop=stop,
            sync_thread=threading.Thread(target=lambda: None),
        )
        state.sync_thread = threading.Thread(
            target=_sync_loop, args=(state,), name="ranker-sync", daemon=True
        )
        try:
            await run_in_threadpool(follower.start)
            await run_in_threadpool(models.refresh)
        except StoreUnavailable as exc:
            logger.warning("index starts empty until Redis answers: %s", exc)
        state.sync_thread.start()
        app.state.ranker = state
        try:
            yield
        finally:
            stop.set()
            await state.batcher.close()
            follower.stop()
            state.sync_thread.join(timeout=5)
            if settings.index_snapshot is not None:
                try:
                    follower.snapshot()
                except Exception:
                    logger.exception("final index snapshot failed")
            client.close()

    app = FastAPI(
        title="freshrec ranker",
        version="1",
        description="Recommendations from the freshest embedding rows.",
        lifespan=lifespan,
    )

    async def readiness() -> Mapping[str, bool]:
        state: RankerState = app.state.ranker
        try:
            redis_ok = bool(await run_in_threadpool(state.client.ping))
        except redis.RedisError:
            redis_ok = False
        return {"redis": redis_ok, "index": state.follower.running}

    install_common(app, "ranker", readiness)
    app.include_router(status_router)
    guard = api_key_guard(settings.api_keys)
    recommend_deps = [Depends(guard)] if settings.recommend_requires_key else []

    @app.post("/v1/recommend", response_model=RecommendResponse, dependencies=recommend_deps)
    async def recommend(body: RecommendRequest, state: State) -> Response:
        """Top-k items for a user, scored from the freshest rows."""
        if body.k > settings.max_k:
            raise _field_error("k", f"must be at most {settings.max_k}")
        if len(body.exclude_item_ids) > settings.max_exclude:
            raise _field_error("exclude_item_ids", f"at most {settings.max_exclude} ids")
        # at most max_batch computing, at most max_queue waiting for the next batch; beyond
        # that, 429 at once rather than an ever longer queue
        if state.admitted >= settings.max_batch + settings.max_queue:
            raise Overloaded(
                f"{state.admitted} requests in flight or queued (bound "
                f"{settings.max_batch} + {settings.max_queue})"
            )
        state.admitted += 1
        try:
            result = await state.batcher.recommend(
                Query(
                    str(body.user_id),
                    body.k,
                    body.context,
                    tuple(str(i) for i in body.exclude_item_ids),
                )
            )
        finally:
            state.admitted -= 1
        # serialized directly: the shape is RecommendResponse's (documented by response_model)
        payload = {
            "items": [
                {"item_id": item_id, "score": score}
                for item_id, score in zip(result.item_ids, result.scores, strict=True)
            ],
            "model_version": result.model_version,
            "index_version": result.index_version,
            "fallback": result.fallback,
        }
        return Response(orjson.dumps(payload), media_type="application/json")

    @app.get(
        "/v1/tables/{table}/rows/{row_id}",
        response_model=RowResponse,
        dependencies=[Depends(guard)],
    )
    async def read_row(
        state: State,
        table: Annotated[str, Path(max_length=32)],
        row_id: Annotated[str, Path(min_length=1, max_length=256)],
    ) -> RowResponse:
        """One row: vector, update times and occurrence count (raw id, hashed per table)."""
        store = state.tables.get(table)
        if store is None:
            raise NotFound(f"no table {table!r}; tables: {sorted(state.tables)}")
        key = hash_feature(table, row_id)
        rows = await run_in_threadpool(store.read_rows, np.array([key], dtype=np.uint64))
        if len(rows) == 0:
            raise NotFound(f"no row for {row_id!r} in table {table!r}")
        return RowResponse(
            table=table,
            id=str(key),
            vector=[float(v) for v in rows.vectors[0]],
            event_time=float(rows.event_time[0]),
            wall_time=float(rows.wall_time[0]),
            count=int(rows.count[0]),
            age_s=max(0.0, time.time() - float(rows.wall_time[0])),
        )

    return app


def _field_error(field: str, reason: str) -> Exception:
    return RequestValidationError([{"loc": ("body", field), "msg": reason, "type": "value_error"}])
