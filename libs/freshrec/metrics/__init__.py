"""Prometheus metrics shared by every freshrec process.

Names follow Prometheus conventions: the `freshrec_` prefix, base units (seconds, bytes) and
`_total` on counters. Labels never carry user or item ids. Process-specific metrics are
defined next to the code that updates them, on the same default registry.

One module per job:

- `buckets`: bucket bounds shared by the latency histograms;
- `http`: the request metrics every HTTP service exports, and the ASGI middleware that
  records them;
- `batch`: `BatchHistogram`, a histogram that records a whole array per call;
- `queries`: reading scrapes back (`MetricsSnapshot`), and the maths on them
  (`histogram_quantile`, `bucket_delta`, `rate`);
- `overview`: the figures of the ranker's status page, computed from those queries.
"""

from freshrec.metrics.batch import BatchHistogram
from freshrec.metrics.buckets import LATENCY_BUCKETS_S
from freshrec.metrics.http import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS, RequestMetrics
from freshrec.metrics.queries import (
    LabelFilter,
    Labels,
    MetricsSnapshot,
    bucket_delta,
    finite,
    histogram_quantile,
    rate,
)

__all__ = [
    "HTTP_IN_FLIGHT",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "LATENCY_BUCKETS_S",
    "BatchHistogram",
    "LabelFilter",
    "Labels",
    "MetricsSnapshot",
    "RequestMetrics",
    "bucket_delta",
    "finite",
    "histogram_quantile",
    "rate",
]
