"""`freshrec run`: the main job — start the services, replay MovieLens live, show results."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from services.cli.processes import start_or_exit

__all__ = ["run_main_job"]


def run_main_job(
    speedup: Annotated[
        float,
        typer.Option(
            envvar="FRESHREC_REPLAY_SPEEDUP",
            help="Event-time speed-up of the replay; 0 sends as fast as ingest accepts.",
        ),
    ] = 0.0,
    limit: Annotated[
        int,
        typer.Option(
            envvar="FRESHREC_REPLAY_LIMIT", help="Replay only the first N ratings (0: all)."
        ),
    ] = 0,
    timeout_s: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 180.0,
) -> None:
    """The main job: start the services, replay MovieLens live, print recommendations."""
    from services.cli.showcase import run_showcase  # noqa: PLC0415 - heavy imports when used

    urls = start_or_exit(timeout_s)
    keys = [k for k in os.environ.get("FRESHREC_API_KEYS", "").split(",") if k.strip()]
    result = run_showcase(
        urls,
        api_key=keys[0].strip() if keys else None,
        speedup=speedup or None,
        limit=limit or None,
    )
    typer.echo(f"main job done in {result.seconds:.0f}s")
