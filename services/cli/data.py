"""`freshrec data ...`: fetch MovieLens, generate synthetic events, replay events into ingest."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from freshrec.errors import FreshrecError
from freshrec.offline.data.movielens import default_data_dir, load_movielens
from freshrec.offline.data.synthetic import SyntheticConfig, synthetic_events, write_event_file
from services.cli.replay import CacheDir, fail, replay_command

__all__ = ["data_app"]

data_app = typer.Typer(
    help="Data sets and event replay: MovieLens-100K, synthetic streams, replay into ingest.",
    no_args_is_help=True,
    add_completion=False,
)


@data_app.command("fetch-movielens")
def fetch_movielens(cache_dir: CacheDir = None) -> None:
    """Download the recbole wheel once, verify its sha256, and summarise MovieLens-100K."""
    try:
        ml = load_movielens(cache_dir)
    except FreshrecError as exc:
        raise fail(exc.message) from exc
    first, last = int(ml.timestamps[0]), int(ml.timestamps[-1])
    typer.echo(f"cache: {cache_dir or default_data_dir()}")
    typer.echo(
        f"MovieLens-100K: {len(ml):,} ratings, {ml.n_users:,} users, {ml.n_items:,} items, "
        f"{len(ml.titles):,} titles, event time {time.strftime('%Y-%m-%d', time.gmtime(first))}"
        f" .. {time.strftime('%Y-%m-%d', time.gmtime(last))} ({(last - first) / 86400:.0f} days)"
    )


data_app.command("replay")(replay_command)


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
    population = {"n_users": users, "n_items": items, "n_groups": groups}
    config = SyntheticConfig.model_validate(
        {**population, "requests_per_s": requests_per_s, "new_items_per_hour": new_items_per_hour}
    )
    started = time.perf_counter()
    events = synthetic_events(n, seed, config)
    count = write_event_file(out, events, stdout=typer.get_binary_stream("stdout"))
    elapsed = time.perf_counter() - started
    typer.echo(f"wrote {count:,} events to {out} in {elapsed:.1f} s", err=str(out) == "-")
