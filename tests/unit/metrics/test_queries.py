"""Reading scrapes back, and the Prometheus maths on them: quantiles, deltas and rates."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from freshrec.metrics import (
    MetricsSnapshot,
    bucket_delta,
    finite,
    histogram_quantile,
    rate,
)

INF = math.inf


def test_histogram_quantile_interpolates_within_buckets_like_prometheus() -> None:
    inf = float("inf")
    # 10 observations: 2 at or below 0.1, 8 in (0.1, 0.5], none above
    buckets = {0.1: 2.0, 0.5: 10.0, 1.0: 10.0, inf: 10.0}
    assert histogram_quantile(0.2, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 3 / 8)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.99, {0.1: 1.0, 0.5: 1.0, inf: 4.0}) == 0.5  # above the top
    assert histogram_quantile(0.5, {0.1: 0.0, inf: 0.0}) is None
    assert histogram_quantile(0.5, {}) is None
    text = (
        "# TYPE h_seconds histogram\n"
        'h_seconds_bucket{route="/a",le="0.1"} 1\n'
        'h_seconds_bucket{route="/a",le="+Inf"} 3\n'
        'h_seconds_bucket{route="/b",le="0.1"} 5\n'
        'h_seconds_bucket{route="/b",le="+Inf"} 5\n'
        "h_seconds_count 8\n"
    )
    snapshot = MetricsSnapshot.parse(text)
    assert snapshot.buckets("h_seconds") == {0.1: 6.0, inf: 8.0}
    assert snapshot.buckets("h_seconds", lambda labels: labels["route"] == "/a") == {
        0.1: 1.0,
        inf: 3.0,
    }
    assert snapshot.total("h_seconds_bucket", lambda labels: labels["le"] == "+Inf") == 8.0
    assert snapshot.total("missing_total") is None


def test_a_quantile_below_the_first_bound_interpolates_from_zero() -> None:
    assert histogram_quantile(0.5, {1.0: 4.0, INF: 4.0}) == pytest.approx(0.5)
    # a non-positive first bound is not interpolated from zero
    assert histogram_quantile(0.5, {0.0: 4.0, INF: 4.0}) == 0.0
    # everything above every finite bound: the highest finite bound
    assert histogram_quantile(0.5, {1.0: 0.0, 2.0: 0.0, INF: 3.0}) == 2.0
    # only the +Inf bucket: nothing can be told
    assert histogram_quantile(0.5, {INF: 3.0}) is None


def test_the_snapshot_of_a_registry_reads_as_its_exposition_does() -> None:
    registry = CollectorRegistry()
    hits = Counter("x_hits_total", "Doc.", ["route"], registry=registry)
    latency = Histogram("x_seconds", "Doc.", ["route"], buckets=(0.1, 1.0), registry=registry)
    hits.labels("/a").inc(3)
    hits.labels("/b").inc(2)
    for value in (0.05, 0.5, 5.0):
        latency.labels("/a").observe(value)
    snapshot = MetricsSnapshot.from_families(registry.collect())
    assert snapshot.total("x_hits_total") == 5.0
    assert snapshot.total("x_hits_total", lambda labels: labels["route"] == "/b") == 2.0
    assert snapshot.maximum("x_hits_total") == 3.0
    assert snapshot.maximum("missing_total") is None
    assert snapshot.buckets("x_seconds") == {0.1: 1.0, 1.0: 2.0, INF: 3.0}
    assert snapshot.total("x_seconds_count") == 3.0


def test_a_delta_is_what_the_histogram_gained_unless_it_was_reset() -> None:
    base = {0.1: 2.0, 1.0: 5.0, INF: 6.0}
    now = {0.1: 3.0, 1.0: 9.0, INF: 12.0}
    assert bucket_delta(now, base) == {0.1: 1.0, 1.0: 4.0, INF: 6.0}
    assert bucket_delta(now, None) == now
    # a bucket missing from the base counts from zero
    assert bucket_delta({0.1: 1.0, INF: 2.0}, {INF: 1.0}) == {0.1: 1.0, INF: 1.0}
    # a count that went down: the process restarted, its lifetime is the window
    restarted = {0.1: 1.0, 1.0: 1.0, INF: 1.0}
    assert bucket_delta(restarted, base) == restarted
    assert bucket_delta(now, base) is not now  # a copy: the caller may keep both


def test_a_rate_needs_two_readings_a_window_and_a_counter_that_did_not_go_down() -> None:
    assert rate(30.0, 10.0, 4.0) == pytest.approx(5.0)
    assert rate(10.0, 10.0, 4.0) == 0.0
    assert rate(None, 10.0, 4.0) is None
    assert rate(30.0, None, 4.0) is None
    assert rate(30.0, 10.0, None) is None
    assert rate(30.0, 10.0, 0.0) is None
    assert rate(5.0, 10.0, 4.0) is None  # restarted


def test_only_finite_numbers_pass() -> None:
    assert finite(1.5) == 1.5
    assert finite(None) is None
    assert finite(INF) is None
    assert finite(math.nan) is None
