"""Histogram bucket bounds shared by every freshrec process."""

from __future__ import annotations

__all__ = ["LATENCY_BUCKETS_S"]

# 0.5 ms … 10 s: covers a cached row read and a slow Kafka acknowledgement alike.
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
