"""The operators' status page (`GET /status`) and the overview JSON it polls (`GET /v1/overview`).

The figures and their windows are computed by `freshrec.metrics.overview.OverviewBoard`
from the runtime and the metrics; these routes only hand it the app's runtime.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from freshrec.metrics.overview import Overview, OverviewBoard
from services.ranker.deps import Runtime

__all__ = ["status_router"]


@cache
def _page() -> str:
    return (resources.files("services.ranker") / "static" / "status.html").read_text("utf-8")


def status_router(trainer_url: str) -> APIRouter:
    """The status routes of one app, with their own overview history.

    Args:
        trainer_url: the trainer's HTTP base URL, polled for its figures.
    """
    router = APIRouter()
    board = OverviewBoard(trainer_url)

    @router.get("/v1/overview", response_model=Overview)
    async def overview(runtime: Runtime) -> Overview:
        """Key figures of the ranker, its index and model, the tables and the trainer."""
        return await board.overview(runtime)

    @router.get("/status", response_class=HTMLResponse, include_in_schema=False)
    async def status_page() -> HTMLResponse:
        """The built-in status page: live figures and charts, refreshed every second."""
        return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})

    return router
