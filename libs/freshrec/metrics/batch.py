"""`BatchHistogram`: a Prometheus histogram fed a whole array of observations per call."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["BatchHistogram"]


class _Series:
    """One label set's buckets (per-bucket counts, not cumulative) and sum."""

    def __init__(self, bounds: npt.NDArray[np.float64]) -> None:
        self._bounds = bounds
        self._counts = np.zeros(bounds.shape[0], dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

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

    def observe(self, value: float, times: int = 1) -> None:
        """Record `value`, `times` times (one observation per request of a batch)."""
        if times <= 0:
            return
        bucket = int(np.searchsorted(self._bounds, value))
        with self._lock:
            self._counts[bucket] += times
            self._sum += value * times

    def buckets(self) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        return [(_le(b), c) for b, c in zip(self._bounds.tolist(), cumulative, strict=True)], total


class BatchHistogram(Collector):
    """A Prometheus histogram that records a whole array of observations at once.

    Exposed exactly like `prometheus_client.Histogram` (`_bucket`, `_count`, `_sum`), for
    hot loops that would otherwise call `observe` once per value. With `labelnames`, each
    label set's series comes from `labels(...)`, as with `Histogram`.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
        labelnames: Sequence[str] = (),
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._name, self._documentation = name, documentation
        self._bounds = np.array(bounds, dtype=np.float64)
        self._labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], _Series] = {}
        self._lock = threading.Lock()
        if not self._labelnames:
            self._series[()] = _Series(self._bounds)
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> _Series:
        """The series of one label set (created at its first use)."""
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}, got {values}")
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._series[values] = _Series(self._bounds)
        return series

    def observe_many(self, values: npt.ArrayLike) -> None:
        """Record every value of `values` (any shape); label-less histograms only."""
        self.labels().observe_many(values)

    def observe(self, value: float) -> None:
        """Record one value; label-less histograms only."""
        self.labels().observe(value)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        with self._lock:
            series = sorted(self._series.items())
        for values, one in series:
            buckets, total = one.buckets()
            family.add_metric(list(values), buckets, total)
        yield family


def _le(bound: float) -> str:
    """A bucket bound as Prometheus clients write it: `+Inf`, `0.25`, `10.0`."""
    return "+Inf" if bound == math.inf else repr(float(bound))
