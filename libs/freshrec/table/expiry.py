"""Expiry arithmetic shared by every store, so all of them expire the same rows at the same time.

Event clock: a row whose last update's event time is earlier than ``watermark -
expire_after_s`` is removed by `expire(watermark)`; one updated exactly at that instant stays.

Wall clock: a row's deadline is the end of the index bucket of its last write plus
`expire_after_s`, i.e. between `expire_after_s` and ``expire_after_s * (1 + 1/buckets)`` after
the write. Aligning deadlines to buckets lets `expire()` report every vanished row exactly once
by visiting only the buckets whose deadline has passed.

Pending counts of the counting filter live in generations of `expire_after_s` on the table's
clock; reads consult the current and the previous generation, so an id idle for between one
and two `expire_after_s` is forgotten.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from freshrec.table.config import ExpiryConfig

__all__ = [
    "bucket_of",
    "bucket_width",
    "event_cutoff",
    "pending_generation",
    "wall_deadline",
]


def bucket_width(expiry: ExpiryConfig) -> float:
    """Seconds of the expiry clock one index bucket spans."""
    return expiry.expire_after_s / expiry.buckets


def bucket_of(times: npt.NDArray[np.float64], expiry: ExpiryConfig) -> npt.NDArray[np.int64]:
    """The index bucket of each time, `(N,)` int64."""
    return np.floor(np.asarray(times, dtype=np.float64) / bucket_width(expiry)).astype(np.int64)


def wall_deadline(
    wall_times: npt.NDArray[np.float64], expiry: ExpiryConfig
) -> npt.NDArray[np.float64]:
    """When a row last written at each wall time vanishes (unix seconds), `(N,)` float64."""
    buckets = bucket_of(wall_times, expiry).astype(np.float64)
    return (buckets + 1.0) * bucket_width(expiry) + expiry.expire_after_s


def event_cutoff(watermark: float, expiry: ExpiryConfig) -> float:
    """Rows whose event time is below this are expired at `watermark`."""
    return watermark - expiry.expire_after_s


def pending_generation(time: float, expiry: ExpiryConfig | None) -> int:
    """The pending-count generation that `time` (on the table's expiry clock) falls in."""
    if expiry is None:
        return 0
    return math.floor(time / expiry.expire_after_s)
