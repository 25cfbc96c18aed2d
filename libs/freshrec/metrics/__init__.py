"""Prometheus metrics shared by every freshrec process.

Names follow Prometheus conventions: the `freshrec_` prefix, base units (seconds, bytes) and
`_total` on counters. Labels never carry user or item ids. Process-specific metrics are
defined next to the code that updates them, on the same default registry.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "BatchHistogram",
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


class BatchHistogram(Collector):
    """A label-less Prometheus histogram that records a whole array of observations at once.

    Exposed exactly like `prometheus_client.Histogram` (`_bucket`, `_count`, `_sum`), for
    hot loops that would otherwise call `observe` once per value.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name, self._documentation = name, documentation
        self._bounds = np.array(bounds, dtype=np.float64)
        self._counts = np.zeros(len(bounds), dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: npt.ArrayLike) -> None:
        """Record every value of `values` (any shape)."""
        array = np.asarray(values, dtype=np.float64).ravel()
        if array.shape[0] == 0:
            return
        # bucket i counts values <= bound i, as Prometheus's `le` says
        counts = np.bincount(np.searchsorted(self._bounds, array), minlength=len(self._bounds))
        with self._lock:
            self._counts += counts[: len(self._bounds)]
            self._sum += float(array.sum())

    def observe(self, value: float) -> None:
        """Record one value."""
        self.observe_many([value])

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        yield HistogramMetricFamily(
            self._name,
            self._documentation,
            buckets=[
                (_le(bound), count)
                for bound, count in zip(self._bounds.tolist(), cumulative, strict=True)
            ],
            sum_value=total,
        )


def _le(bound: float) -> str:
    """A bucket bound as Prometheus clients write it: `+Inf`, `0.25`, `10.0`."""
    return "+Inf" if bound == math.inf else repr(float(bound))
