"""`freshrec data replay`: post events from a file, MovieLens or a synthetic stream to ingest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from freshrec.errors import FreshrecError
from freshrec.offline.data import ReplayAborted, ReplayReport, read_event_file, replay
from freshrec.offline.data.movielens import load_movielens, movielens_events
from freshrec.offline.data.synthetic import synthetic_events

__all__ = ["CacheDir", "fail", "replay_command"]

CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where downloads are cached (default: $FRESHREC_DATA_DIR or ~/.cache/freshrec/data).",
        file_okay=False,
    ),
]
EventFile = Annotated[
    Path | None,
    typer.Argument(
        help="JSON Lines file of events (.gz works; '-' reads stdin). "
        "Leave out with --movielens or --synthetic.",
        dir_okay=False,
    ),
]
UseMovielens = Annotated[
    bool, typer.Option("--movielens", help="Replay MovieLens-100K ratings in time order.")
]
Synthetic = Annotated[
    int | None,
    typer.Option("--synthetic", min=1, help="Replay this many synthetic events (see synth)."),
]
ReplaySeed = Annotated[int, typer.Option(help="Seed of the --synthetic stream.")]
Limit = Annotated[int | None, typer.Option(min=0, help="Send at most this many events.")]
IngestUrl = Annotated[
    str,
    typer.Option(
        envvar="FRESHREC_INGEST_URL", help="Ingest service base URL, or its /v1/events URL."
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        envvar="FRESHREC_API_KEY",
        help="API key sent as 'Authorization: Bearer <key>' (env FRESHREC_API_KEY).",
    ),
]
Speedup = Annotated[
    float | None,
    typer.Option(
        help="Pace by event time, this many event seconds per wall second "
        "(e.g. 3600 = an hour of data per second). Default: as fast as possible.",
    ),
]
BatchSize = Annotated[
    int, typer.Option(min=1, max=1000, help="Events per request (ingest takes up to 1000).")
]
UserContext = Annotated[
    bool, typer.Option(help="With --movielens: attach age, gender and occupation as context.")
]
ShowProgress = Annotated[
    bool, typer.Option(help="Show a progress line (events sent, events/s) on stderr.")
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` as an error; the caller raises the returned exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _source(
    file: Path | None,
    *,
    movielens: bool,
    synthetic: int | None,
    seed: int,
    user_context: bool,
    cache_dir: Path | None,
) -> tuple[Iterable[Mapping[str, Any]], int | None]:
    """The one event source asked for, and its length when known."""
    if sum([file is not None, movielens, synthetic is not None]) != 1:
        raise fail("give exactly one of FILE, --movielens or --synthetic N")
    if file is not None:
        return read_event_file(file), None
    if synthetic is not None:
        return synthetic_events(synthetic, seed), synthetic
    ml = load_movielens(cache_dir)  # the one source left: --movielens
    return movielens_events(ml, user_context=user_context), len(ml)


def _show_rejections(report: ReplayReport) -> None:
    for rejection in report.rejections[:20]:
        where = f" {rejection.field}" if rejection.field else ""
        typer.echo(
            f"rejected #{rejection.index} {rejection.event_id}{where}: {rejection.reason}",
            err=True,
        )
    if report.rejected > 20:
        typer.echo(f"... and {report.rejected - 20:,} more rejected", err=True)


def replay_command(
    *,
    file: EventFile = None,
    movielens: UseMovielens = False,
    synthetic: Synthetic = None,
    seed: ReplaySeed = 0,
    url: IngestUrl = "http://127.0.0.1:8001",
    api_key: ApiKey = None,
    speedup: Speedup = None,
    limit: Limit = None,
    batch_size: BatchSize = 500,
    user_context: UserContext = False,
    cache_dir: CacheDir = None,
    progress: ShowProgress = True,
) -> None:
    """Post events to the ingest API in batches, retrying overload and reporting rejects."""
    try:
        events, total = _source(
            file,
            movielens=movielens,
            synthetic=synthetic,
            seed=seed,
            user_context=user_context,
            cache_dir=cache_dir,
        )
        report = replay(
            events,
            url,
            api_key=api_key,
            speedup=speedup,
            batch_size=batch_size,
            limit=limit,
            progress=progress,
            total=total,
        )
    except ReplayAborted as exc:
        for rejection in exc.report.rejections[:20]:
            typer.echo(f"rejected #{rejection.index} {rejection.event_id}: {rejection.reason}")
        raise fail(exc.message) from exc
    except FreshrecError as exc:
        raise fail(exc.message) from exc
    _show_rejections(report)
    typer.echo(report.summary())
    if report.rejected:
        raise typer.Exit(1)
