"""Reading Prometheus samples back, and the maths operators do on them.

A `MetricsSnapshot` indexes one scrape (the local registry, or another process's `/metrics`
text). Two snapshots of the same process, some seconds apart, give what Prometheus's
`rate` and `histogram_quantile` give over that window: `bucket_delta` subtracts the
earlier histogram, `rate` the earlier counter, and `histogram_quantile` interpolates within
buckets exactly as Prometheus does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "LabelFilter",
    "Labels",
    "MetricsSnapshot",
    "bucket_delta",
    "everything",
    "finite",
    "histogram_quantile",
    "rate",
]

Labels = Mapping[str, str]
LabelFilter = Callable[[Labels], bool]
"""Chooses the series a query covers, by their labels."""


def everything(_: Labels) -> bool:
    """The filter passing every series."""
    return True


def finite(value: float | None) -> float | None:
    """`value`, or None when it is None, infinite or NaN (JSON has no such numbers)."""
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
        """Parse the Prometheus text exposition format.

        Raises:
            ValueError: `text` is not in that format.
        """
        return cls.from_families(text_string_to_metric_families(text))

    def total(self, name: str, where: LabelFilter = everything) -> float | None:
        """Sum of the samples named `name` whose labels pass `where` (None when none does)."""
        values = [v for labels, v in self.samples.get(name, []) if where(labels)]
        return math.fsum(values) if values else None

    def maximum(self, name: str, where: LabelFilter = everything) -> float | None:
        """Largest sample named `name` whose labels pass `where` (None when none does)."""
        values = [v for labels, v in self.samples.get(name, []) if where(labels)]
        return max(values) if values else None

    def buckets(self, histogram: str, where: LabelFilter = everything) -> dict[float, float]:
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


def bucket_delta(
    now: Mapping[float, float], base: Mapping[float, float] | None
) -> dict[float, float]:
    """The observations a cumulative histogram gained since `base` was read.

    Args:
        now: upper bound → cumulative count, read last.
        base: the same histogram read earlier; None when there is no earlier reading.

    Returns:
        Upper bound → observations since `base`; all of `now` without a base, or when a count
        went down (the process restarted, so its lifetime is the window).
    """
    if base is None:
        return dict(now)
    delta = {le: count - base.get(le, 0.0) for le, count in now.items()}
    return dict(now) if any(v < 0 for v in delta.values()) else delta


def rate(now: float | None, base: float | None, seconds: float | None) -> float | None:
    """Per-second increase of a counter read `seconds` apart.

    Returns:
        `(now - base) / seconds`; None without both readings, without a window, or when the
        counter went down (a restart: no rate can be told).
    """
    if now is None or base is None or not seconds or now < base:
        return None
    return (now - base) / seconds
