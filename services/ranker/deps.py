"""The ranker's request dependencies: the runtime the lifespan opened."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from freshrec.ranking import RankerRuntime

__all__ = ["Runtime", "get_runtime"]


async def get_runtime(request: Request) -> RankerRuntime:
    """The app's `RankerRuntime`."""
    # async: FastAPI would run a plain `def` dependency in its thread pool
    return cast(RankerRuntime, request.app.state.ranker)


Runtime = Annotated[RankerRuntime, Depends(get_runtime)]
