"""The figures of the ranker's status page, computed from scrapes and the ranker's state.

The overview is computed in the ranker from its own state and the default Prometheus
registry, plus the trainer's `/v1/status` and `/metrics`. Rates and quantiles cover the last
`WINDOW_S` seconds: every overview keeps a snapshot of the counters and histograms, and the
next one subtracts the snapshot taken about `WINDOW_S` earlier (the first overview after a
start, with nothing to subtract, covers the process lifetime and has no rates). Overviews
are computed at most once per `MIN_INTERVAL_S`, however many pages poll, and a trainer that
does not answer leaves its fields null instead of failing the request.

What is read of the ranker is the `RankerView` protocol (`RankerRuntime` implements it), so
this module depends on no serving code.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import redis
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, Field

from freshrec.errors import FreshrecError
from freshrec.metrics.queries import (
    LabelFilter,
    Labels,
    MetricsSnapshot,
    bucket_delta,
    everything,
    finite,
    histogram_quantile,
    rate,
)

__all__ = [
    "HISTORY_S",
    "MIN_INTERVAL_S",
    "OPERATIONAL_ROUTES",
    "TRAINER_TIMEOUT_S",
    "WINDOW_S",
    "IndexFigures",
    "IndexState",
    "ModelFigures",
    "ModelState",
    "Overview",
    "OverviewBoard",
    "RankerFigures",
    "RankerView",
    "TableFigures",
    "TableStatsLike",
    "TrainerFigures",
    "TrainerReply",
    "fetch_trainer",
    "index_figures",
    "ranker_figures",
    "trainer_figures",
]

WINDOW_S = 10.0
"""Seconds the rates and quantiles of an overview cover (once the ranker has run that long)."""
HISTORY_S = 120.0
"""Snapshots older than this are dropped; a poll after a longer pause covers the lifetime."""
MIN_INTERVAL_S = 0.5
"""Overviews asked for sooner than this after the last one get the last one."""
TRAINER_TIMEOUT_S = 0.5
"""Bound on each request to the trainer, so a hung trainer cannot stall the page."""
OPERATIONAL_ROUTES = frozenset({"/status", "/v1/overview", "/metrics", "/healthz", "/readyz"})
"""Routes left out of the request figures: the page's own polling would otherwise be traffic."""


# ---- what is read of the ranker ----------------------------------------------------------


@dataclass(frozen=True)
class IndexState:
    """The retrieval index at one moment."""

    items: int
    version: int
    age_s: float
    following: bool


@dataclass(frozen=True)
class ModelState:
    """The dense model being served."""

    version: int
    published_at: float


class TableStatsLike(Protocol):
    """One table's counters (`freshrec.table.TableStats`)."""

    @property
    def rows(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def created_total(self) -> int: ...
    @property
    def filtered_total(self) -> int: ...
    @property
    def expired_total(self) -> int: ...


class RankerView(Protocol):
    """What an overview reads of a running ranker."""

    def index_state(self) -> IndexState:
        """The retrieval index now."""
        ...

    def model_state(self) -> ModelState | None:
        """The served model; None before the first publish."""
        ...

    def table_stats(self) -> Mapping[str, TableStatsLike]:
        """Each table's counters (a Redis read: may raise `FreshrecError`/`RedisError`)."""
        ...


# ---- the JSON ----------------------------------------------------------------------------


class RankerFigures(BaseModel):
    """Traffic of the ranker (operational routes such as this page's polling left out)."""

    requests_total: int = Field(description="API requests answered since the ranker started.")
    requests_per_s: float | None = Field(description="API requests per second in the window.")
    errors_per_s: float | None = Field(description="API answers with a 5xx status per second.")
    latency_p50_s: float | None = Field(description="Median API latency in the window (s).")
    latency_p99_s: float | None = Field(description="99th percentile API latency (s).")
    recommendations_total: int = Field(description="Successful /v1/recommend answers.")
    fallbacks_total: int = Field(description="Recommendations answered from fallbacks.")
    fallback_share: float | None = Field(
        description="Share of the window's recommendations answered from popular/fresh items."
    )
    served_row_age_p50_s: float | None = Field(
        description="Median wall-clock age of the rows responses were computed from (s)."
    )
    served_row_age_p99_s: float | None = Field(description="99th percentile of the same (s).")


class IndexFigures(BaseModel):
    """The FAISS retrieval index."""

    items: int = Field(description="Items the index holds.")
    version: int = Field(description="Content version; increases with every applied change.")
    age_s: float = Field(description="Seconds since the follower last applied a change.")
    following: bool = Field(description="Whether the follower thread runs.")
    feed_lag_s: float | None = Field(description="How far the index trails its change feed.")
    apply_delay_p50_s: float | None = Field(
        None,
        description="Median time from a change-feed entry written with its rows to the index "
        "serving it, in the window (s): the row committed → servable stage of freshness.",
    )
    apply_delay_p99_s: float | None = Field(None, description="99th percentile of the same (s).")


class ModelFigures(BaseModel):
    """The dense ranking model being served."""

    version: int | None = Field(description="Served version; null before the first publish.")
    published_at: float | None = Field(description="When it was published (unix s).")
    age_s: float | None = Field(description="Seconds since it was published.")


class TableFigures(BaseModel):
    """One embedding table, as its `stats()` reports it."""

    rows: int
    bytes: int = Field(description="Estimated bytes used in Redis.")
    created_total: int
    filtered_total: int
    expired_total: int


class TrainerFigures(BaseModel):
    """The trainer, from its `/v1/status` and `/metrics` (null fields when it is unreachable)."""

    url: str
    reachable: bool = Field(description="Whether the trainer answered this poll.")
    error: str | None = Field(description="Why it did not, when it did not.")
    events_consumed_total: int | None = None
    events_per_s: float | None = None
    batches: int | None = None
    published_version: int | None = None
    watermark: float | None = Field(None, description="Highest event time seen (unix s).")
    auc: float | None = Field(None, description="AUC of the latest predictions before training.")
    loss: float | None = Field(None, description="Log loss of the last micro-batch.")
    lag_messages: float | None = Field(None, description="Messages not yet consumed.")
    lag_s: float | None = Field(None, description="Age of the last consumed message when behind.")
    freshness_p50_s: float | None = Field(
        None, description="Median event-accepted → row-committed time in the window (s)."
    )
    freshness_p99_s: float | None = None
    offsets: dict[str, int] | None = Field(None, description="`topic:partition` → next offset.")


class Overview(BaseModel):
    """What the status page shows, computed once per poll."""

    generated_at: float = Field(description="When this overview was computed (unix s).")
    window_s: float | None = Field(
        description="Seconds the rates and quantiles cover; null: since the ranker started."
    )
    ranker: RankerFigures
    index: IndexFigures
    model: ModelFigures
    tables: dict[str, TableFigures] | None = Field(
        description="Per-table figures; null when Redis did not answer."
    )
    tables_error: str | None = None
    trainer: TrainerFigures


# ---- the ranker's figures ----------------------------------------------------------------


def _api(service: str) -> LabelFilter:
    def where(labels: Labels) -> bool:
        return labels.get("service") == service and labels.get("route") not in OPERATIONAL_ROUTES

    return where


def _recommend_ok(labels: Labels) -> bool:
    return (
        labels.get("service") == "ranker"
        and labels.get("route") == "/v1/recommend"
        and labels.get("status") == "200"
    )


def _server_error(labels: Labels) -> bool:
    return _api("ranker")(labels) and labels.get("status", "").startswith("5")


def ranker_figures(
    now: MetricsSnapshot, base: MetricsSnapshot | None, window: float | None
) -> RankerFigures:
    """The ranker's traffic figures from two scrapes of its registry.

    Args:
        now: the latest scrape.
        base: a scrape `window` seconds older; None: the figures cover the process lifetime.
        window: seconds between the scrapes; None without `base`.
    """

    def counter(name: str, where: LabelFilter = everything) -> tuple[float | None, float | None]:
        return now.total(name, where), None if base is None else base.total(name, where) or 0.0

    requests, requests_base = counter("freshrec_http_requests_total", _api("ranker"))
    errors, errors_base = counter("freshrec_http_requests_total", _server_error)
    recs, recs_base = counter("freshrec_http_requests_total", _recommend_ok)
    fallbacks, fallbacks_base = counter("freshrec_ranker_fallbacks_total")
    recs_in_window = (recs or 0.0) - (recs_base or 0.0)
    fallbacks_in_window = (fallbacks or 0.0) - (fallbacks_base or 0.0)
    share = None
    if recs_in_window > 0 and fallbacks_in_window >= 0:
        share = min(1.0, fallbacks_in_window / recs_in_window)

    def quantile(q: float, histogram: str, where: LabelFilter = everything) -> float | None:
        past = None if base is None else base.buckets(histogram, where)
        return finite(histogram_quantile(q, bucket_delta(now.buckets(histogram, where), past)))

    latency = "freshrec_http_request_duration_seconds"
    row_age = "freshrec_ranker_served_row_age_seconds"
    return RankerFigures(
        requests_total=int(requests or 0),
        requests_per_s=rate(requests or 0.0, requests_base, window),
        errors_per_s=rate(errors or 0.0, errors_base, window),
        latency_p50_s=quantile(0.5, latency, _api("ranker")),
        latency_p99_s=quantile(0.99, latency, _api("ranker")),
        recommendations_total=int(recs or 0),
        fallbacks_total=int(fallbacks or 0),
        fallback_share=share,
        served_row_age_p50_s=quantile(0.5, row_age),
        served_row_age_p99_s=quantile(0.99, row_age),
    )


def index_figures(
    index: IndexState, now: MetricsSnapshot, base: MetricsSnapshot | None
) -> IndexFigures:
    """The index's figures: its state, and the window's apply delays from two ranker scrapes.

    Args:
        index: the index now.
        now: the latest scrape of the ranker's registry.
        base: an older scrape; None: the delays cover the process lifetime.
    """
    delay = "freshrec_index_apply_delay_seconds"
    delta = bucket_delta(now.buckets(delay), None if base is None else base.buckets(delay))
    return IndexFigures(
        items=index.items,
        version=index.version,
        age_s=max(0.0, index.age_s),
        following=index.following,
        feed_lag_s=finite(now.maximum("freshrec_index_feed_lag_seconds")),
        apply_delay_p50_s=finite(histogram_quantile(0.5, delta)),
        apply_delay_p99_s=finite(histogram_quantile(0.99, delta)),
    )


def _model_figures(model: ModelState | None, wall: float) -> ModelFigures:
    if model is None:
        return ModelFigures(version=None, published_at=None, age_s=None)
    return ModelFigures(
        version=model.version,
        published_at=model.published_at,
        age_s=max(0.0, wall - model.published_at),
    )


def _table_figures(view: RankerView) -> dict[str, TableFigures]:
    return {
        name: TableFigures(
            rows=stats.rows,
            bytes=stats.bytes,
            created_total=stats.created_total,
            filtered_total=stats.filtered_total,
            expired_total=stats.expired_total,
        )
        for name, stats in view.table_stats().items()
    }


# ---- the trainer's figures ---------------------------------------------------------------


@dataclass(frozen=True)
class TrainerReply:
    """What one poll of the trainer returned: its status body and its metrics, when they came."""

    status: dict[str, Any] | None
    metrics: MetricsSnapshot | None
    error: str | None


async def fetch_trainer(url: str, timeout_s: float = TRAINER_TIMEOUT_S) -> TrainerReply:
    """Poll the trainer's `/v1/status` and `/metrics` together.

    Args:
        url: the trainer's HTTP base URL.
        timeout_s: bound on each request.

    Returns:
        What answered; `error` says what did not (never raises for an unreachable trainer).
    """

    async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
        response = await client.get(path)
        response.raise_for_status()
        return response

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        status, metrics = await asyncio.gather(
            get(client, "/v1/status"), get(client, "/metrics"), return_exceptions=True
        )
    errors: list[str] = []
    status_body: dict[str, Any] | None = None
    snapshot: MetricsSnapshot | None = None
    if isinstance(status, BaseException):
        errors.append(f"/v1/status: {_describe(status)}")
    else:
        try:
            body = status.json()
            status_body = body if isinstance(body, dict) else None
        except ValueError as exc:
            errors.append(f"/v1/status: not JSON ({exc})")
    if isinstance(metrics, BaseException):
        errors.append(f"/metrics: {_describe(metrics)}")
    else:
        try:
            snapshot = MetricsSnapshot.parse(metrics.text)
        except ValueError as exc:
            errors.append(f"/metrics: unparsable ({exc})")
    return TrainerReply(status_body, snapshot, "; ".join(errors) or None)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _number(body: Mapping[str, Any] | None, key: str) -> float | None:
    value = None if body is None else body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return finite(float(value))


def _count(body: Mapping[str, Any], key: str) -> int | None:
    value = _number(body, key)
    return None if value is None else int(value)


def trainer_figures(
    url: str, reply: TrainerReply, base: MetricsSnapshot | None, window: float | None
) -> TrainerFigures:
    """The trainer's figures from one poll and the trainer scrape `window` seconds older.

    Args:
        url: the trainer's base URL, shown on the page.
        reply: the latest poll.
        base: the trainer's metrics from the baseline poll; None: no rates.
        window: seconds between the two polls.
    """
    reachable = reply.status is not None or reply.metrics is not None
    figures = TrainerFigures(url=url, reachable=reachable, error=reply.error)
    if reply.status is not None:
        figures.batches = _count(reply.status, "batches")
        figures.published_version = _count(reply.status, "published_version")
        figures.watermark = _number(reply.status, "watermark")
        figures.auc = _number(reply.status, "auc")
        offsets = reply.status.get("offsets")
        if isinstance(offsets, dict):
            figures.offsets = {str(k): int(v) for k, v in offsets.items() if isinstance(v, int)}
    metrics = reply.metrics
    if metrics is not None:
        consumed = metrics.total("freshrec_trainer_events_consumed_total")
        figures.events_consumed_total = None if consumed is None else int(consumed)
        past = None if base is None else base.total("freshrec_trainer_events_consumed_total")
        figures.events_per_s = rate(consumed, past, window)
        figures.loss = finite(metrics.total("freshrec_trainer_loss"))
        figures.lag_messages = finite(metrics.total("freshrec_trainer_consumer_lag_messages"))
        figures.lag_s = finite(metrics.maximum("freshrec_trainer_consumer_lag_seconds"))
        if figures.auc is None:
            figures.auc = finite(metrics.total("freshrec_trainer_auc"))
        freshness = "freshrec_freshness_event_to_row_seconds"
        delta = bucket_delta(
            metrics.buckets(freshness), None if base is None else base.buckets(freshness)
        )
        figures.freshness_p50_s = finite(histogram_quantile(0.5, delta))
        figures.freshness_p99_s = finite(histogram_quantile(0.99, delta))
    return figures


# ---- the board: windows over successive overviews ----------------------------------------


@dataclass(frozen=True)
class _Scrape:
    at: float
    ranker: MetricsSnapshot
    trainer: MetricsSnapshot | None


@dataclass
class OverviewBoard:
    """One ranker's overviews: the recent scrapes their windows subtract, and the last one.

    Args:
        trainer_url: the trainer's HTTP base URL.
        registry: the ranker's own metrics.
    """

    trainer_url: str
    registry: CollectorRegistry = REGISTRY
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    history: deque[_Scrape] = field(default_factory=lambda: deque(maxlen=1024))
    last: tuple[float, Overview] | None = None

    def baseline(self, now: float) -> _Scrape | None:
        """The newest snapshot at least `WINDOW_S` old, else the oldest one kept."""
        while self.history and now - self.history[0].at > HISTORY_S:
            self.history.popleft()
        chosen = None
        for scrape in self.history:
            if now - scrape.at >= WINDOW_S:
                chosen = scrape
            else:
                break
        if chosen is None and self.history:
            chosen = self.history[0]
        return chosen

    async def overview(self, view: RankerView) -> Overview:
        """The current overview of `view`, or the last one when it is under `MIN_INTERVAL_S` old."""
        async with self.lock:
            if self.last is not None and time.monotonic() - self.last[0] < MIN_INTERVAL_S:
                return self.last[1]
            result = await self._compute(view)
            self.last = (time.monotonic(), result)
            return result

    async def _compute(self, view: RankerView) -> Overview:
        try:
            trainer = await fetch_trainer(self.trainer_url)
        except Exception as exc:  # e.g. a malformed URL: the page still shows everything else
            trainer = TrainerReply(None, None, _describe(exc))
        ranker = MetricsSnapshot.from_families(self.registry.collect())
        tables: dict[str, TableFigures] | None = None
        tables_error = None
        try:
            tables = await asyncio.to_thread(_table_figures, view)
        except (FreshrecError, redis.RedisError) as exc:
            tables_error = str(exc)
        at = time.monotonic()
        wall = time.time()
        base = self.baseline(at)
        window = None if base is None else at - base.at
        self.history.append(_Scrape(at, ranker, trainer.metrics))
        return Overview(
            generated_at=wall,
            window_s=window,
            ranker=ranker_figures(ranker, None if base is None else base.ranker, window),
            index=index_figures(view.index_state(), ranker, None if base is None else base.ranker),
            model=_model_figures(view.model_state(), wall),
            tables=tables,
            tables_error=tables_error,
            trainer=trainer_figures(
                self.trainer_url, trainer, None if base is None else base.trainer, window
            ),
        )
