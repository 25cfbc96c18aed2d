"""The main job behind `make run`: replay MovieLens-100K live through a running stack.

Events go through the ingest API in event-time order (optionally paced by a speed-up), the
trainer learns from them as they arrive, and at the end a few users' recommendations are
printed with movie titles, together with where every endpoint listens. Both directions use
`freshrec.client`: the replay posts with it, and the recommendations are asked with it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from freshrec.client import FreshrecClient, Recommendation
from freshrec.offline.data import ReplayReport, replay
from freshrec.offline.data.movielens import MovieLens, load_movielens, movielens_events

__all__ = ["ShowcaseResult", "run_showcase", "trainer_lag"]

_LAG = re.compile(r"^freshrec_trainer_consumer_lag_messages\s+([0-9.eE+-]+)$", re.M)


@dataclass(frozen=True)
class ShowcaseResult:
    """What the main job did."""

    report: ReplayReport
    recommendations: dict[str, list[dict[str, Any]]]
    seconds: float


def trainer_lag(trainer_url: str) -> int | None:
    """Messages the trainer has not consumed yet, from its `/metrics` (None: unreachable)."""
    try:
        text = httpx.get(f"{trainer_url}/metrics", timeout=2.0).text
    except httpx.HTTPError:
        return None
    found = _LAG.search(text)
    return int(float(found.group(1))) if found else None


def _wait_caught_up(trainer_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if trainer_lag(trainer_url) == 0:
            return
        time.sleep(0.5)


def _print_recommendations(
    console: Console, ml: MovieLens, answer: Recommendation, user: str
) -> None:
    table = Table(
        title=f"user {user}: model v{answer.model_version}, index v{answer.index_version}"
        + (" (fallback)" if answer.fallback else ""),
        title_justify="left",
    )
    table.add_column("#", justify="right")
    table.add_column("movie")
    table.add_column("score", justify="right")
    for rank, item in enumerate(answer.items, 1):
        title = ml.titles.get(item.item_id, f"item {item.item_id}")
        table.add_row(str(rank), title, f"{item.score:.3f}")
    console.print(table)


def _print_endpoints(console: Console, urls: Mapping[str, str]) -> None:
    console.print("\nfreshrec is running:")
    for name in ("ingest", "ranker"):
        console.print(f"  {name:8s} API docs  {urls[name]}/docs")
    for name in ("ingest", "trainer", "ranker"):
        console.print(f"  {name:8s} metrics   {urls[name]}/metrics")
    console.print(f"  status page       {urls['ranker']}/status")
    console.print("Stop everything with `make down`.")


def _replay_movielens(
    console: Console,
    ml: MovieLens,
    urls: Mapping[str, str],
    *,
    total: int,
    api_key: str | None,
    speedup: float | None,
) -> ReplayReport:
    console.print(
        f"Replaying {total:,} MovieLens-100K ratings ({ml.n_users} users, {ml.n_items} movies) "
        f"into {urls['ingest']}" + (f" at {speedup:g}x event time" if speedup else "")
    )
    events: Iterator[dict[str, Any]] = islice(movielens_events(ml), total)

    def lag_column() -> Mapping[str, str]:
        lag = trainer_lag(urls["trainer"])
        return {"trainer lag": "?" if lag is None else f"{lag:,} msgs"}

    report = replay(
        events,
        urls["ingest"],
        api_key=api_key,
        speedup=speedup,
        total=total,
        extra_columns=lag_column,
    )
    console.print(report.summary())
    return report


def run_showcase(
    urls: Mapping[str, str],
    *,
    api_key: str | None = None,
    speedup: float | None = None,
    limit: int | None = None,
    users: tuple[str, ...] = ("1", "42", "196", "405"),
    k: int = 5,
    console: Console | None = None,
) -> ShowcaseResult:
    """Replay MovieLens through `urls["ingest"]`, then print recommendations from the ranker.

    Args:
        urls: base URLs of `ingest`, `trainer` and `ranker`.
        api_key: bearer key for ingest, when keys are configured.
        speedup: event-time pacing factor (None: as fast as ingest accepts).
        limit: replay only the first `limit` ratings.
        users: whose recommendations to print.
        k: how many items per user.
        console: where to print (stdout by default).
    """
    console = console or Console()
    start = time.monotonic()
    ml: MovieLens = load_movielens()
    total = len(ml) if limit is None else min(limit, len(ml))
    report = _replay_movielens(console, ml, urls, total=total, api_key=api_key, speedup=speedup)
    _wait_caught_up(urls["trainer"], timeout_s=120)

    recommendations: dict[str, list[dict[str, Any]]] = {}
    with FreshrecClient(ranker_url=urls["ranker"], api_key=api_key) as client:
        for user in users:
            # movies the user already rated in the replayed slice are not recommended again
            seen = sorted({str(i) for i in ml.items[:total][ml.users[:total] == int(user)]})
            answer = client.recommend(user, k, exclude_item_ids=seen[:1000])
            recommendations[user] = [item.model_dump() for item in answer.items]
            _print_recommendations(console, ml, answer, user)
    _print_endpoints(console, urls)
    return ShowcaseResult(report, recommendations, time.monotonic() - start)
