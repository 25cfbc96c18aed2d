"""The operators' status page (`GET /status`) and the overview JSON it polls (`GET /v1/overview`).

The overview is computed in the ranker from its own state and the default Prometheus
registry, plus the trainer's `/v1/status` and `/metrics`. Rates and quantiles cover the last
`WINDOW_S` seconds: every overview keeps a snapshot of the counters and histograms, and the
next one subtracts the snapshot taken about `WINDOW_S` earlier (the first overview after a
start, with nothing to subtract, covers the process lifetime and has no rates). Overviews
are computed at most once per `MIN_INTERVAL_S`, however many pages poll, and a trainer that
does not answer leaves its fields null instead of failing the request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import httpx
import redis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

from freshrec.errors import FreshrecError
from freshrec.table import EmbeddingStore

if TYPE_CHECKING:
    from services.ranker.app import RankerState

__all__ = [
    "IndexFigures",
    "MetricsSnapshot",
    "ModelFigures",
    "Overview",
    "RankerFigures",
    "TableFigures",
    "TrainerFigures",
    "histogram_quantile",
    "status_router",
]

logger = logging.getLogger(__name__)

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

status_router = APIRouter()

Labels = Mapping[str, str]
LabelFilter = Callable[[Labels], bool]


def _everything(_: Labels) -> bool:
    return True


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class MetricsSnapshot:
    """The samples of one scrape, by sample name (`x_total`, `x_bucket`, ...)."""

    samples: Mapping[str, list[tuple[Labels, float]]]

    @classmethod
    def from_families(cls, families: Iterable[Any]) -> MetricsSnapshot:
        """Index the samples of `prometheus_client` metric families (registry or parser).

        Args:
            families: `Metric` objects, e.g. `REGISTRY.collect()` or
                `text_string_to_metric_families(text)`.

        Returns:
            The snapshot.
        """
        samples: dict[str, list[tuple[Labels, float]]] = {}
        for family in families:
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return cls(samples)

    @classmethod
    def parse(cls, text: str) -> MetricsSnapshot:
        """Parse the Prometheus text exposition format."""
        return cls.from_families(text_string_to_metric_families(text))

    def total(self, name: str, where: LabelFilter = _everything) -> float | None:
        """Sum of the samples named `name` whose labels pass `where` (None when none does)."""
        values = [v for labels, v in self.samples.get(name, []) if where(labels)]
        return math.fsum(values) if values else None

    def maximum(self, name: str, where: LabelFilter = _everything) -> float | None:
        """Largest sample named `name` whose labels pass `where` (None when none does)."""
        values = [v for labels, v in self.samples.get(name, []) if where(labels)]
        return max(values) if values else None

    def buckets(self, histogram: str, where: LabelFilter = _everything) -> dict[float, float]:
        """Cumulative bucket counts of `histogram`, summed over the series passing `where`.

        Returns:
            Upper bound (`inf` for `+Inf`) → observations at or below it.
        """
        merged: dict[float, float] = {}
        for labels, value in self.samples.get(f"{histogram}_bucket", []):
            if where(labels):
                le = float(labels["le"])
                merged[le] = merged.get(le, 0.0) + value
        return merged


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The `q`-quantile of a cumulative histogram, interpolated as Prometheus does.

    Args:
        q: quantile in [0, 1].
        buckets: upper bound → cumulative count; must include `inf`.

    Returns:
        The estimate, or None without observations. Observations above the highest finite
        bound are reported as that bound.
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for i, upper in enumerate(bounds):
        count = buckets[upper]
        if count >= rank and count > below:
            if math.isinf(upper):
                return bounds[i - 1] if i > 0 else None
            if i == 0 and upper <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return bounds[-2] if len(bounds) > 1 else None


def _delta(now: Mapping[float, float], base: Mapping[float, float] | None) -> dict[float, float]:
    if base is None:
        return dict(now)
    delta = {le: count - base.get(le, 0.0) for le, count in now.items()}
    # a counter that went down means the process restarted: its lifetime is the window
    return dict(now) if any(v < 0 for v in delta.values()) else delta


def _rate(now: float | None, base: float | None, seconds: float | None) -> float | None:
    if now is None or base is None or not seconds or now < base:
        return None
    return (now - base) / seconds


@dataclass(frozen=True)
class _Scrape:
    at: float
    ranker: MetricsSnapshot
    trainer: MetricsSnapshot | None


@dataclass
class _Board:
    """Per-app overview state: recent snapshots and the last overview."""

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


# ---- computing it ------------------------------------------------------------------------


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


def _ranker_figures(
    now: MetricsSnapshot, base: MetricsSnapshot | None, window: float | None
) -> RankerFigures:
    def counter(name: str, where: LabelFilter = _everything) -> tuple[float | None, float | None]:
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

    def quantile(q: float, histogram: str, where: LabelFilter = _everything) -> float | None:
        past = None if base is None else base.buckets(histogram, where)
        return _finite(histogram_quantile(q, _delta(now.buckets(histogram, where), past)))

    latency = "freshrec_http_request_duration_seconds"
    row_age = "freshrec_ranker_served_row_age_seconds"
    return RankerFigures(
        requests_total=int(requests or 0),
        requests_per_s=_rate(requests or 0.0, requests_base, window),
        errors_per_s=_rate(errors or 0.0, errors_base, window),
        latency_p50_s=quantile(0.5, latency, _api("ranker")),
        latency_p99_s=quantile(0.99, latency, _api("ranker")),
        recommendations_total=int(recs or 0),
        fallbacks_total=int(fallbacks or 0),
        fallback_share=share,
        served_row_age_p50_s=quantile(0.5, row_age),
        served_row_age_p99_s=quantile(0.99, row_age),
    )


def _index_figures(state: RankerState, metrics: MetricsSnapshot) -> IndexFigures:
    retriever = state.follower.retriever
    return IndexFigures(
        items=len(retriever),
        version=retriever.version,
        age_s=max(0.0, state.follower.age_s),
        following=state.follower.running,
        feed_lag_s=_finite(metrics.maximum("freshrec_index_feed_lag_seconds")),
    )


def _model_figures(state: RankerState, wall: float) -> ModelFigures:
    current = state.models.current
    if current is None:
        return ModelFigures(version=None, published_at=None, age_s=None)
    return ModelFigures(
        version=current.version,
        published_at=current.published_at,
        age_s=max(0.0, wall - current.published_at),
    )


def _table_figures(tables: Mapping[str, EmbeddingStore]) -> dict[str, TableFigures]:
    figures = {}
    for name, store in tables.items():
        stats = store.stats()
        figures[name] = TableFigures(
            rows=stats.rows,
            bytes=stats.bytes,
            created_total=stats.created_total,
            filtered_total=stats.filtered_total,
            expired_total=stats.expired_total,
        )
    return figures


@dataclass(frozen=True)
class _TrainerReply:
    status: dict[str, Any] | None
    metrics: MetricsSnapshot | None
    error: str | None


async def _fetch_trainer(url: str) -> _TrainerReply:
    async def get(client: httpx.AsyncClient, path: str) -> httpx.Response:
        response = await client.get(path)
        response.raise_for_status()
        return response

    async with httpx.AsyncClient(base_url=url, timeout=TRAINER_TIMEOUT_S) as client:
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
    return _TrainerReply(status_body, snapshot, "; ".join(errors) or None)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _number(body: Mapping[str, Any] | None, key: str) -> float | None:
    value = None if body is None else body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return _finite(float(value))


def _trainer_figures(
    url: str, reply: _TrainerReply, base: MetricsSnapshot | None, window: float | None
) -> TrainerFigures:
    reachable = reply.status is not None or reply.metrics is not None
    figures = TrainerFigures(url=url, reachable=reachable, error=reply.error)
    if reply.status is not None:
        batches = _number(reply.status, "batches")
        version = _number(reply.status, "published_version")
        figures.batches = None if batches is None else int(batches)
        figures.published_version = None if version is None else int(version)
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
        figures.events_per_s = _rate(consumed, past, window)
        figures.loss = _finite(metrics.total("freshrec_trainer_loss"))
        figures.lag_messages = _finite(metrics.total("freshrec_trainer_consumer_lag_messages"))
        figures.lag_s = _finite(metrics.maximum("freshrec_trainer_consumer_lag_seconds"))
        if figures.auc is None:
            figures.auc = _finite(metrics.total("freshrec_trainer_auc"))
        freshness = "freshrec_freshness_event_to_row_seconds"
        delta = _delta(
            metrics.buckets(freshness), None if base is None else base.buckets(freshness)
        )
        figures.freshness_p50_s = _finite(histogram_quantile(0.5, delta))
        figures.freshness_p99_s = _finite(histogram_quantile(0.99, delta))
    return figures


async def _compute(state: RankerState, board: _Board) -> Overview:
    url = state.settings.trainer_url
    try:
        trainer = await _fetch_trainer(url)
    except Exception as exc:  # e.g. a malformed URL: the page still shows everything else
        trainer = _TrainerReply(None, None, _describe(exc))
    ranker = MetricsSnapshot.from_families(REGISTRY.collect())
    tables: dict[str, TableFigures] | None = None
    tables_error = None
    try:
        tables = await run_in_threadpool(_table_figures, state.tables)
    except (FreshrecError, redis.RedisError) as exc:
        tables_error = str(exc)
    at = time.monotonic()
    wall = time.time()
    base = board.baseline(at)
    window = None if base is None else at - base.at
    board.history.append(_Scrape(at, ranker, trainer.metrics))
    return Overview(
        generated_at=wall,
        window_s=window,
        ranker=_ranker_figures(ranker, None if base is None else base.ranker, window),
        index=_index_figures(state, ranker),
        model=_model_figures(state, wall),
        tables=tables,
        tables_error=tables_error,
        trainer=_trainer_figures(url, trainer, None if base is None else base.trainer, window),
    )


def _board(request: Request) -> _Board:
    board: _Board | None = getattr(request.app.state, "status_board", None)
    if board is None:
        board = _Board()
        request.app.state.status_board = board
    return board


@cache
def _page() -> str:
    return (resources.files("services.ranker") / "static" / "status.html").read_text("utf-8")


# ---- routes ------------------------------------------------------------------------------


@status_router.get("/v1/overview", response_model=Overview)
async def overview(request: Request) -> Overview:
    """Key figures of the ranker, its index and model, the tables and the trainer."""
    state: RankerState = request.app.state.ranker
    board = _board(request)
    async with board.lock:
        if board.last is not None and time.monotonic() - board.last[0] < MIN_INTERVAL_S:
            return board.last[1]
        result = await _compute(state, board)
        board.last = (time.monotonic(), result)
        return result


@status_router.get("/status", response_class=HTMLResponse, include_in_schema=False)
async def status_page() -> HTMLResponse:
    """The built-in status page: live figures and charts, refreshed every second."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})
