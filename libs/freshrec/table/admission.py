"""Admission filters: which ids get a row.

Rare ids (a one-off search term, a bot's user id) would fill a collisionless table with rows
that never train. A filter decides, per id of a pushed batch, whether it gets a row:

- `none`: every pushed id gets a row.
- `counting` (`min_count = N`): the row is created on the N-th occurrence, counting
  occurrences across batches. Until then the id's count is kept in a compact side structure
  (pending counts), which forgets ids idle for between one and two `expire_after_s` of the
  table's expiry clock (ids are never forgotten when the table has no expiry).
- `probabilistic` (`probability = p`): each occurrence admits the id with probability `p`; no
  counter is kept. The draw is a counter-based hash of (seed, id, the batch's latest event time
  of the id), and `k` occurrences of the id in one batch admit it with probability
  ``1 - (1 - p)^k``, so replaying the same events in the same micro-batches admits the same ids.

Ids that already have a row are always updated. An id that is not admitted reads as its
deterministic initial vector (the vector its row will start from once admitted), its update
is dropped, and it is counted in `UpdateResult.filtered` and `TableStats.filtered_total`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from freshrec.table.config import (
    AdmissionConfig,
    CountingAdmission,
    NoAdmission,
    ProbabilisticAdmission,
)
from freshrec.table.ids import mix64, uniform01
from freshrec.table.records import IdArray

__all__ = ["AdmissionDecision", "admission_draws", "decide_admission", "keeps_counts"]

_ADMIT_SALT = np.uint64(0xAD317AD317AD317A)


@dataclass(frozen=True)
class AdmissionDecision:
    """The filter's verdict for `U` unique ids of one push.

    Attributes:
        admitted: `(U,)` bool; the id's row is written (it existed, or is created now).
        counts: `(U,)` int64 occurrences seen including this batch.
    """

    admitted: npt.NDArray[np.bool_]
    counts: npt.NDArray[np.int64]


def keeps_counts(config: AdmissionConfig) -> bool:
    """True when the filter keeps counts for ids without a row (the counting filter)."""
    return isinstance(config, CountingAdmission)


def admission_draws(
    seed: int, ids: IdArray, event_time: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Uniform `[0, 1)` draws fixed by (seed, id, event time), `(U,)` float64."""
    time_bits = np.ascontiguousarray(event_time, dtype="<f8").view("<u8").astype(np.uint64)
    key = mix64(np.array([seed], dtype=np.uint64) ^ _ADMIT_SALT)
    return uniform01(mix64(mix64(ids.astype(np.uint64, copy=False) ^ key) ^ time_bits))


def decide_admission(
    config: AdmissionConfig,
    ids: IdArray,
    *,
    exists: npt.NDArray[np.bool_],
    prior_counts: npt.NDArray[np.int64],
    occurrences: npt.NDArray[np.int64],
    event_time: npt.NDArray[np.float64],
) -> AdmissionDecision:
    """Which of `U` unique ids get (or keep) a row after this batch.

    Args:
        config: the table's admission filter.
        ids: `(U,)` uint64.
        exists: `(U,)` bool; the id has a row.
        prior_counts: `(U,)` int64 occurrences counted before this batch.
        occurrences: `(U,)` int64 occurrences in this batch.
        event_time: `(U,)` float64 latest event time of each id in the batch.

    Returns:
        The decision, with `(U,)` arrays.
    """
    counts = prior_counts.astype(np.int64) + occurrences.astype(np.int64)
    if isinstance(config, NoAdmission):
        admitted = np.ones(ids.shape[0], dtype=np.bool_)
    elif isinstance(config, CountingAdmission):
        admitted = exists | (counts >= config.min_count)
    elif isinstance(config, ProbabilisticAdmission):
        if config.probability >= 1.0:
            admitted = np.ones(ids.shape[0], dtype=np.bool_)
        else:
            k = np.maximum(occurrences.astype(np.float64), 1.0)
            chance = -np.expm1(k * np.log1p(-config.probability))
            admitted = exists | (admission_draws(config.seed, ids, event_time) < chance)
    else:
        raise TypeError(f"unknown admission filter {type(config).__name__}")
    return AdmissionDecision(admitted=admitted, counts=counts)
