"""Prometheus metrics shared by every freshrec process.

Names follow Prometheus conventions: the `freshrec_` prefix, base units (seconds, bytes) and
`_total` on counters. Labels never carry user or item ids. Process-specific metrics are
defined next to the code that updates them, on the same default registry.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "HTTP_IN_FLIGHT",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "LATENCY_BUCKETS_S",
]

# 0.5 ms … 10 s: covers a cached row read and a slow Kafka acknowledgement alike.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

HTTP_REQUESTS = Counter(
    "freshrec_http_requests_total",
    "HTTP requests answered, by service, route template, method and status code.",
    ["service", "route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "freshrec_http_request_duration_seconds",
    "Time from request received to response sent, by service and route template.",
    ["service", "route", "method"],
    buckets=LATENCY_BUCKETS_S,
)
HTTP_IN_FLIGHT = Gauge(
    "freshrec_http_requests_in_flight",
    "Requests being handled right now, by service.",
    ["service"],
)
