"""`freshrec eval`: the prequential evaluation of `freshrec.offline.evaluation` as a command."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from freshrec.errors import FreshrecError

__all__ = ["StoreChoice", "eval_command"]


class StoreChoice(StrEnum):
    """Where the evaluated tables live."""

    MEMORY = "memory"
    REDIS = "redis"


Out = Annotated[Path, typer.Option(help="Output folder for summary.json, summary.md and plots.")]
Limit = Annotated[int | None, typer.Option(min=1, help="Replay only the first N events.")]
Seed = Annotated[int, typer.Option(min=0, help="Seed of the model, tables and sample.")]
Store = Annotated[StoreChoice, typer.Option(help="Tables in process memory or in Redis.")]
RedisUrl = Annotated[
    str | None, typer.Option(help="Redis for --store redis (default: FRESHREC_REDIS_URL).")
]
BatchSize = Annotated[int, typer.Option(min=1, help="Events per micro-batch, at most.")]
Events = Annotated[
    Path | None,
    typer.Option(
        "--events",
        help="JSON Lines file of time-ordered events instead of MovieLens-100K.",
        exists=True,
        dir_okay=False,
    ),
]
Workers = Annotated[
    int,
    typer.Option(min=1, help="Processes: with 2 or more, the sweeps replay beside the main runs."),
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]


def eval_command(
    *,
    out: Out = Path("results/eval"),
    limit: Limit = None,
    seed: Seed = 0,
    store: Store = StoreChoice.MEMORY,
    redis_url: RedisUrl = None,
    batch_size: BatchSize = 64,
    events: Events = None,
    workers: Workers = 2,
    progress: Progress = True,
) -> None:
    """Prequential evaluation: online vs hashing, stale, frozen and popularity; sweeps."""
    from freshrec.offline.data.event_file import read_event_file  # noqa: PLC0415 - heavy imports when used
    from freshrec.offline.evaluation.harness import run_eval  # noqa: PLC0415
    from freshrec.offline.evaluation.report import markdown_tables  # noqa: PLC0415
    from freshrec.settings import CommonSettings  # noqa: PLC0415

    if store is StoreChoice.REDIS and redis_url is None:
        redis_url = CommonSettings().redis_url
    try:
        summary = run_eval(
            out,
            limit=limit,
            seed=seed,
            store=store.value,
            redis_url=redis_url,
            batch_size=batch_size,
            progress=progress,
            events=None if events is None else read_event_file(events),
            workers=workers,
        )
    except FreshrecError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(markdown_tables(summary))
    typer.echo(
        f"wall time {summary['timing']['wall_time_s']:.0f} s; written to {out}/ "
        f"(summary.json, summary.md, {', '.join(summary['meta']['plots'])})"
    )
