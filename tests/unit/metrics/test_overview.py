"""The status page's figures: windows over two scrapes, the trainer's poll, the board."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from freshrec.errors import StoreUnavailable
from freshrec.metrics import MetricsSnapshot
from freshrec.metrics.overview import (
    HISTORY_S,
    WINDOW_S,
    IndexState,
    ModelState,
    OverviewBoard,
    TrainerReply,
    index_figures,
    ranker_figures,
    trainer_figures,
)
from freshrec.table import TableStats

_REC = 'service="ranker",route="/v1/recommend",method="POST"'
_POLL = 'service="ranker",route="/v1/overview",method="GET"'


def _ranker_scrape(ok: int, errors: int, polls: int, fallbacks: int, fast: int) -> str:
    """A ranker scrape: `ok` answered recommendations (`fast` of them under 10 ms)."""
    requests = "freshrec_http_requests_total"
    latency = "freshrec_http_request_duration_seconds_bucket"
    return "\n".join(
        [
            f"# TYPE {requests} counter",
            f'{requests}{{{_REC},status="200"}} {ok}',
            f'{requests}{{{_REC},status="503"}} {errors}',
            f'{requests}{{{_POLL},status="200"}} {polls}',
            f'{requests}{{service="ingest",route="/v1/events",method="POST",status="202"}} 99',
            "# TYPE freshrec_ranker_fallbacks_total counter",
            f"freshrec_ranker_fallbacks_total {fallbacks}",
            "# TYPE freshrec_http_request_duration_seconds histogram",
            f'{latency}{{{_REC},le="0.01"}} {fast}',
            f'{latency}{{{_REC},le="0.1"}} {ok + errors}',
            f'{latency}{{{_REC},le="+Inf"}} {ok + errors}',
            f'{latency}{{{_POLL},le="0.01"}} 0',
            f'{latency}{{{_POLL},le="+Inf"}} {polls}',
            "",
        ]
    )


def test_ranker_figures_cover_the_window_and_leave_operational_routes_out() -> None:
    base = MetricsSnapshot.parse(_ranker_scrape(ok=10, errors=0, polls=5, fallbacks=2, fast=10))
    now = MetricsSnapshot.parse(_ranker_scrape(ok=30, errors=4, polls=50, fallbacks=7, fast=10))
    figures = ranker_figures(now, base, 2.0)
    assert figures.requests_total == 34  # the overview polls and ingest are not traffic
    assert figures.requests_per_s == pytest.approx(24 / 2.0)
    assert figures.errors_per_s == pytest.approx(4 / 2.0)
    assert figures.recommendations_total == 30
    assert figures.fallbacks_total == 7
    assert figures.fallback_share == pytest.approx(5 / 20)
    # the window's 24 requests all took 10-100 ms (the 10 fast ones are older)
    assert figures.latency_p50_s == pytest.approx(0.01 + 0.09 * 0.5)
    assert figures.served_row_age_p50_s is None  # no such histogram in the scrape


def test_without_a_baseline_the_figures_cover_the_lifetime_and_have_no_rates() -> None:
    now = MetricsSnapshot.parse(_ranker_scrape(ok=30, errors=4, polls=50, fallbacks=7, fast=34))
    figures = ranker_figures(now, None, None)
    assert figures.requests_total == 34
    assert figures.requests_per_s is None and figures.errors_per_s is None
    assert figures.fallback_share == pytest.approx(7 / 30)
    assert figures.latency_p99_s == pytest.approx(0.01 * 0.99)


def _trainer_scrape(consumed: int, fresh: int) -> MetricsSnapshot:
    return MetricsSnapshot.parse(f"""\
# TYPE freshrec_trainer_events_consumed_total counter
freshrec_trainer_events_consumed_total {consumed}
# TYPE freshrec_trainer_loss gauge
freshrec_trainer_loss 0.4
# TYPE freshrec_trainer_auc gauge
freshrec_trainer_auc 0.7
# TYPE freshrec_trainer_consumer_lag_seconds gauge
freshrec_trainer_consumer_lag_seconds{{partition="0"}} 1.5
freshrec_trainer_consumer_lag_seconds{{partition="1"}} 0.5
# TYPE freshrec_freshness_event_to_row_seconds histogram
freshrec_freshness_event_to_row_seconds_bucket{{le="0.1"}} 0
freshrec_freshness_event_to_row_seconds_bucket{{le="1.0"}} {fresh}
freshrec_freshness_event_to_row_seconds_bucket{{le="+Inf"}} {fresh}
""")


def test_trainer_figures_join_its_status_and_the_window_of_its_metrics() -> None:
    status: dict[str, Any] = {"batches": 12, "published_version": 3, "watermark": 1e9}
    status["auc"] = True
    status["offsets"] = {"events:0": 40, "events:1": "not a number"}
    reply = TrainerReply(status, _trainer_scrape(consumed=100, fresh=8), None)
    figures = trainer_figures("http://t", reply, _trainer_scrape(consumed=60, fresh=4), 4.0)
    assert figures.reachable is True and figures.error is None
    assert (figures.batches, figures.published_version) == (12, 3)
    assert figures.watermark == 1e9
    assert figures.auc == 0.7  # a boolean is not a number: the gauge is used instead
    assert figures.offsets == {"events:0": 40}
    assert figures.events_consumed_total == 100
    assert figures.events_per_s == pytest.approx(40 / 4.0)
    assert figures.loss == 0.4 and figures.lag_s == 1.5
    # the window's 4 freshness observations fell in (0.1, 1.0]
    assert figures.freshness_p50_s == pytest.approx(0.1 + 0.9 * 0.5)


def _index_scrape(fast: int, slow: int) -> MetricsSnapshot:
    """A ranker scrape with `fast` apply delays under 50 ms and `slow` ones in (50 ms, 1 s]."""
    delay = "freshrec_index_apply_delay_seconds_bucket"
    return MetricsSnapshot.parse(f"""\
# TYPE freshrec_index_feed_lag_seconds gauge
freshrec_index_feed_lag_seconds{{index="item"}} 0.0
# TYPE freshrec_index_apply_delay_seconds histogram
{delay}{{index="item",le="0.05"}} {fast}
{delay}{{index="item",le="1.0"}} {fast + slow}
{delay}{{index="item",le="+Inf"}} {fast + slow}
""")


def test_index_figures_give_the_windows_row_to_servable_delays() -> None:
    state = IndexState(items=8, version=5, age_s=0.2, following=True)
    figures = index_figures(state, _index_scrape(fast=10, slow=4), _index_scrape(fast=10, slow=0))
    assert (figures.items, figures.version, figures.feed_lag_s) == (8, 5, 0.0)
    # the window's 4 delays all fell in (0.05, 1.0]; the 10 fast ones are older
    assert figures.apply_delay_p50_s == pytest.approx(0.05 + 0.95 * 0.5)
    lifetime = index_figures(state, _index_scrape(fast=10, slow=0), None)
    assert lifetime.apply_delay_p99_s == pytest.approx(0.05 * 0.99)
    nothing = index_figures(state, MetricsSnapshot.parse(""), None)
    assert nothing.apply_delay_p50_s is None and nothing.feed_lag_s is None


def test_an_unreachable_trainer_leaves_its_figures_null() -> None:
    figures = trainer_figures("http://t", TrainerReply(None, None, "/v1/status: boom"), None, None)
    assert figures.reachable is False and figures.error == "/v1/status: boom"
    assert figures.events_consumed_total is None and figures.auc is None


class _Ranker:
    """A ranker as the overview sees it."""

    def __init__(self) -> None:
        self.tables_down = False

    def index_state(self) -> IndexState:
        return IndexState(items=8, version=5, age_s=-0.5, following=True)

    def model_state(self) -> ModelState | None:
        return ModelState(version=2, published_at=0.0)

    def table_stats(self) -> Mapping[str, TableStats]:
        if self.tables_down:
            raise StoreUnavailable("redis down")
        return {"item": TableStats(8, 1024, 9, 1, 1)}


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_board_answers_from_the_ranker_and_names_what_did_not_answer() -> None:
    registry = CollectorRegistry()
    Counter("freshrec_ranker_fallbacks_total", "Doc.", registry=registry).inc(3)
    board = OverviewBoard(_closed_port_url(), registry=registry)
    ranker = _Ranker()

    async def run() -> None:
        first = await board.overview(ranker)
        assert first.window_s is None  # nothing to subtract yet
        assert first.index.items == 8 and first.index.age_s == 0.0
        assert first.model.version == 2 and first.model.age_s is not None
        assert first.tables is not None and first.tables["item"].rows == 8
        assert first.ranker.fallbacks_total == 3
        assert first.trainer.reachable is False and first.trainer.error
        # asked again at once: the same overview, not a new computation
        assert await board.overview(ranker) is first
        ranker.tables_down = True
        board.last = None
        second = await board.overview(ranker)
        assert second.tables is None and second.tables_error == "redis down"
        assert second.window_s is not None and second.window_s < WINDOW_S

    asyncio.run(run())


def test_the_window_reaches_back_to_the_newest_overview_a_window_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("freshrec.metrics.overview.time.monotonic", lambda: clock[0])
    board = OverviewBoard(_closed_port_url(), registry=CollectorRegistry())
    ranker = _Ranker()

    async def window_at(at: float) -> float | None:
        clock[0] = at
        return (await board.overview(ranker)).window_s

    async def run() -> list[float | None]:
        return [
            await window_at(1000.0),
            await window_at(1000.0 + WINDOW_S + 2),  # the first one is a window old
            await window_at(1000.0 + WINDOW_S + 3),  # the second is not yet: still the first
            await window_at(1000.0 + 2 * WINDOW_S + 2.5),  # the second is a window old now
            await window_at(1000.0 + HISTORY_S + 3 * WINDOW_S),  # all too old: dropped
        ]

    assert asyncio.run(run()) == [
        None,
        pytest.approx(WINDOW_S + 2),
        pytest.approx(WINDOW_S + 3),
        pytest.approx(WINDOW_S + 0.5),
        None,
    ]
