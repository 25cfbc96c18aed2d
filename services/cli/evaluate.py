"""`freshrec eval`: the prequential evaluation of `freshrec.offline.evaluation` as a command."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from freshrec.errors import FreshrecError

__all__ = ["StoreChoice", "eval_command", "eval_live_command"]


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
    batch_size: BatchSize = 16,
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


def eval_live_command(
    *,
    prefix: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Trained share of the stream.")
    ] = 0.8,
    end: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Later interactions are scored up to here.")
    ] = 1.0,
    batch_size: Annotated[
        int, typer.Option(min=1, help="The trainer's micro-batch, at most.")
    ] = 32,
    user_context: Annotated[
        bool, typer.Option(help="Events and requests carry the user's age, gender, occupation.")
    ] = True,
) -> None:
    """The live protocol in process: train MovieLens's first `prefix` with the trainer's
    settings, then ask the ranker's recommender for every user active until `end`."""
    from freshrec.offline.data.movielens import load_movielens, movielens_events  # noqa: PLC0415
    from freshrec.offline.evaluation.live import (  # noqa: PLC0415
        LiveQuestions,
        answer_in_process,
        train_prefix,
    )
    from freshrec.table import load_tables, open_tables  # noqa: PLC0415
    from freshrec.table.memory import InMemoryTableBackend  # noqa: PLC0415
    from services.ranker.settings import RankerSettings  # noqa: PLC0415
    from services.trainer.main import build_trainer  # noqa: PLC0415
    from services.trainer.settings import TrainerSettings  # noqa: PLC0415

    if not prefix < end:
        raise typer.BadParameter("--prefix must be below --end")
    events = list(movielens_events(load_movielens(), user_context=user_context))
    questions = LiveQuestions(events, prefix=prefix, end=end)
    backend = InMemoryTableBackend()
    train_prefix(build_trainer(TrainerSettings(), backend, None), questions.prefix, batch_size)
    ranker = RankerSettings()
    answers = answer_in_process(
        questions,
        open_tables(load_tables(ranker.table_config), backend),
        index=ranker.index,
        candidates=ranker.candidates,
        like_weight=ranker.like_weight,
        user_context=user_context,
    )
    typer.echo(
        f"trained {questions.cut} events in batches of at most {batch_size}; asked until {end:.0%}"
    )
    for line in questions.score(answers).lines(questions.k):
        typer.echo(line)
