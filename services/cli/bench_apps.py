"""Baseline apps of `freshrec bench ranker`, served by uvicorn exactly as the ranker is.

`noop` is the ceiling this machine puts on any Python route; `ranker_http` is the ranker's
HTTP handling without its work (same middlewares, request model and reply size), so the
bench can tell how much of the gap to `noop` is HTTP and how much the recommendation.
Serve one with `uvicorn services.cli.bench_apps:noop`.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Response

from freshrec.api import install_common
from services.ranker.app import RecommendRequest

__all__ = ["noop", "ranker_http"]

noop = FastAPI()


@noop.get("/noop")
async def noop_route() -> dict[str, bool]:
    """Answer at once."""
    return {"ok": True}


ranker_http = FastAPI()
_ANSWER = orjson.dumps(
    {
        "items": [{"item_id": f"c{i}", "score": 0.5} for i in range(50)],
        "model_version": 1,
        "index_version": 1,
        "fallback": False,
    }
)


async def _ready() -> dict[str, bool]:
    return {"ok": True}


install_common(ranker_http, "bench", _ready)


@ranker_http.post("/v1/recommend")
async def recommend(body: RecommendRequest) -> Response:
    """Validate the request as the ranker does; reply with a fixed answer of the same size."""
    return Response(_ANSWER, media_type="application/json")
