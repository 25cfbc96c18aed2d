"""`freshrec data ...`: fetch MovieLens, generate synthetic events, replay events into ingest."""

from __future__ import annotations

import contextlib
import gzip
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import typer

from freshrec.data import ReplayAborted, read_event_file, replay
from freshrec.data.movielens import default_data_dir, load_movielens, movielens_events
from freshrec.data.synthetic import SyntheticConfig, synthetic_events
from freshrec.errors import FreshrecError

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Data sets and event replay: MovieLens-100K, synthetic streams, replay into ingest.",
    no_args_is_help=True,
    add_completion=False,
)

CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where downloads are cached (default: $FRESHREC_DATA_DIR or ~/.cache/freshrec/data).",
        file_okay=False,
    ),
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@data_app.command("fetch-movielens")
def fetch_movielens(cache_dir: CacheDir = None) -> None:
    """Download the recbole wheel once, verify its sha256, and summarise MovieLens-100K."""
    try:
        ml = load_movielens(cache_dir)
    except FreshrecError as exc:
        raise _fail(exc.message) from exc
    first, last = int(ml.timestamps[0]), int(ml.timestamps[-1])
    typer.echo(f"cache: {cache_dir or default_data_dir()}")
    typer.echo(
        f"MovieLens-100K: {len(ml):,} ratings, {ml.n_users:,} users, {ml.n_items:,} items, "
        f"{len(ml.titles):,} titles, event time {time.strftime('%Y-%m-%d', time.gmtime(first))}"
        f" .. {time.strftime('%Y-%m-%d', time.gmtime(last))} ({(last - first) / 86400:.0f} days)"
    )


@data_app.command("replay")
def replay_command(
    *,
    file: Annotated[
        Path | None,
        typer.Argument(
            help="JSON Lines file of events (.gz works; '-' reads stdin). "
            "Leave out with --movielens or --synthetic.",
            dir_okay=False,
        ),
    ] = None,
    movielens: Annotated[
        bool, typer.Option("--movielens", help="Replay MovieLens-100K ratings in time order.")
    ] = False,
    synthetic: Annotated[
        int | None,
        typer.Option("--synthetic", min=1, help="Replay this many synthetic events (see synth)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --synthetic stream.")] = 0,
    url: Annotated[
        str,
        typer.Option(
            envvar="FRESHREC_INGEST_URL", help="Ingest service base URL, or its /v1/events URL."
        ),
    ] = "http://127.0.0.1:8001",
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="FRESHREC_API_KEY",
            help="API key sent as 'Authorization: Bearer <key>' (env FRESHREC_API_KEY).",
        ),
    ] = None,
    speedup: Annotated[
        float | None,
        typer.Option(
            help="Pace by event time, this many event seconds per wall second "
            "(e.g. 3600 = an hour of data per second). Default: as fast as possible.",
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="Send at most this many events.")] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=1000, help="Events per request (ingest takes up to 1000).")
    ] = 500,
    user_context: Annotated[
        bool,
        typer.Option(help="With --movielens: attach age, gender and occupation as context."),
    ] = False,
    cache_dir: CacheDir = None,
    progress: Annotated[
        bool, typer.Option(help="Show a progress line (events sent, events/s) on stderr.")
    ] = True,
) -> None:
    """Post events to the ingest API in batches, retrying overload and reporting rejects."""
    sources = sum([file is not None, movielens, synthetic is not None])
    if sources != 1:
        raise _fail("give exactly one of FILE, --movielens or --synthetic N")
    events: Iterable[Mapping[str, Any]]
    total: int | None = None
    try:
        if movielens:
            ml = load_movielens(cache_dir)
            events, total = movielens_events(ml, user_context=user_context), len(ml)
        elif synthetic is not None:
            events, total = synthetic_events(synthetic, seed), synthetic
        elif file is not None:
            events = read_event_file(file)
        else:  # unreachable: exactly one source was checked above
            raise _fail("no event source")
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
        raise _fail(exc.message) from exc
    except FreshrecError as exc:
        raise _fail(exc.message) from exc
    for rejection in report.rejections[:20]:
        where = f" {rejection.field}" if rejection.field else ""
        typer.echo(
            f"rejected #{rejection.index} {rejection.event_id}{where}: {rejection.reason}",
            err=True,
        )
    if report.rejected > 20:
        typer.echo(f"... and {report.rejected - 20:,} more rejected", err=True)
    typer.echo(report.summary())
    if report.rejected:
        raise typer.Exit(1)


@data_app.command("synth")
def synth(
    *,
    out: Annotated[
        Path, typer.Option(help="Output JSON Lines file ('.gz' compresses; '-' is stdout).")
    ],
    n: Annotated[int, typer.Option(min=0, help="Number of events to generate.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same stream.")] = 0,
    users: Annotated[int, typer.Option(min=1, help="Users in the population.")] = 1_000_000,
    items: Annotated[int, typer.Option(min=1, help="Items in the catalog at the start.")] = 100_000,
    groups: Annotated[int, typer.Option(min=2, help="Taste groups (= item clusters).")] = 8,
    requests_per_s: Annotated[
        float, typer.Option(min=0.001, help="Requests per second of event time.")
    ] = 20.0,
    new_items_per_hour: Annotated[
        float, typer.Option(min=0.0, help="New items per hour of event time.")
    ] = 600.0,
) -> None:
    """Write a seeded synthetic stream (impressions, clicks, likes, purchases) as JSON Lines."""
    config = SyntheticConfig(
        n_users=users,
        n_items=items,
        n_groups=groups,
        requests_per_s=requests_per_s,
        new_items_per_hour=new_items_per_hour,
    )
    started = time.perf_counter()
    count = 0
    name = str(out)
    with contextlib.ExitStack() as stack:
        sink: IO[bytes] | gzip.GzipFile
        if name == "-":
            sink = typer.get_binary_stream("stdout")
        elif name.endswith(".gz"):
            sink = stack.enter_context(gzip.open(name, "wb", compresslevel=5))
        else:
            sink = stack.enter_context(out.open("wb"))
        for event in synthetic_events(n, seed, config):
            sink.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
        sink.flush()
    elapsed = time.perf_counter() - started
    typer.echo(f"wrote {count:,} events to {out} in {elapsed:.1f} s", err=name == "-")
