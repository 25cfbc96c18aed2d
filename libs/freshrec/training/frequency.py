"""Streaming estimate of each item's share of interactions, for the logQ correction.

Yi et al. (RecSys 2019, "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
Recommendations", Algorithm 2): in-batch negatives are the batch's positives, so an item
appears as a negative in proportion to how often it is interacted with. The retrieval
softmax subtracts `log Q(item)` from each logit so that popular items are not pushed down
merely for being sampled often. The estimate needs no pass over the catalog: per hash bucket
`h` keep

- `A[h]`: the global step (interaction count) at which an item of the bucket last occurred;
- `B[h]`: an exponential moving average of the gap between its occurrences,
  `B[h] <- (1 - alpha) * B[h] + alpha * (t - A[h])`, then `A[h] <- t`;

and estimate the item's probability per interaction as `1 / B[h]`. A bucket's first
occurrence at step `t` starts `B[h]` at `t` (once in `t` interactions so far), not at
`alpha * t` as zeros would. The estimate follows drift with a memory of about
`1 / alpha` occurrences.

Exactly-once: the buckets live in Redis as one string of `16 * buckets` bytes
(`A`, `B` as float64 LE pairs), and each batch writes the buckets it changed in the same
transaction as its rows and offsets (`drain_writes`, SETRANGE); the step counter rides in
the trainer checkpoint. A restore rebuilds exactly the committed estimate. See
`docs/specs/trainer-state.md`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

from freshrec.training.dedup import RingWrite, slot_runs

__all__ = ["ItemFrequency"]

_SLOT_BYTES = 16


class ItemFrequency:
    """Hashed streaming estimate of items' interaction probabilities.

    Args:
        buckets: hash buckets (items sharing a bucket share an estimate).
        alpha: learning rate of the gap's moving average, in `(0, 1]`.
        key: metadata key of the stored buckets.
    """

    def __init__(self, buckets: int, alpha: float, key: str) -> None:
        if buckets < 1:
            raise ValueError("the frequency estimate needs at least one bucket")
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.buckets = buckets
        self.alpha = alpha
        self.key = key
        self.step = 0
        self.last = np.zeros(buckets, dtype=np.float64)  # A: 0 = never seen (steps start at 1)
        self.gap = np.zeros(buckets, dtype=np.float64)  # B
        self._dirty: set[int] = set()

    def _bucket(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        return (ids % np.uint64(self.buckets)).astype(np.int64)

    def update(self, ids: npt.NDArray[np.uint64]) -> None:
        """Record one interaction per id, in order (one global step each).

        Args:
            ids: `(P,)` item row ids of the batch's interactions, in stream order.
        """
        for bucket in self._bucket(ids).tolist():
            self.step += 1
            t = float(self.step)
            seen = self.last[bucket]
            if seen == 0.0:
                self.gap[bucket] = t
            else:
                self.gap[bucket] = (1.0 - self.alpha) * self.gap[bucket] + self.alpha * (t - seen)
            self.last[bucket] = t
            self._dirty.add(bucket)

    def probability(self, ids: npt.NDArray[np.uint64]) -> npt.NDArray[np.float64]:
        """Estimated probability that one interaction is with each item.

        Args:
            ids: `(N,)` item row ids.

        Returns:
            `(N,)` float64 in `(0, 1]`; an item never seen gets `1 / (step + 1)` (at most once
            so far).
        """
        gap = self.gap[self._bucket(ids)]
        unseen = np.float64(self.step + 1)
        return 1.0 / np.where(gap > 0.0, np.maximum(gap, 1.0), unseen)

    def state(self) -> bytes:
        """Every bucket as stored (`A`, `B` float64 LE pairs)."""
        return np.stack([self.last, self.gap], axis=1).astype("<f8").tobytes()

    def load(self, blob: bytes | None, step: int) -> None:
        """Restore the stored buckets and the checkpoint's step counter.

        Args:
            blob: the stored string (None or shorter where never written: zeros).
            step: interactions counted so far (from the checkpoint).
        """
        pairs = np.zeros((self.buckets, 2), dtype=np.float64)
        if blob:
            stored = np.frombuffer(blob[: self.buckets * _SLOT_BYTES], dtype="<f8")
            flat = pairs.reshape(-1)
            flat[: stored.shape[0]] = stored
        self.last = pairs[:, 0].copy()
        self.gap = pairs[:, 1].copy()
        self.step = step
        self._dirty.clear()

    def drain_writes(self) -> Iterator[RingWrite]:
        """The buckets changed since the last drain, as contiguous byte ranges.

        Stage every one of them in the transaction that commits the batch.
        """
        slots = np.sort(np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty)))
        self._dirty.clear()
        # every changed bucket encoded at once; the runs are consecutive stretches of it
        data = np.stack([self.last[slots], self.gap[slots]], axis=1).astype("<f8").tobytes()
        at = 0
        for start, stop in slot_runs(slots):
            size = (stop - start) * _SLOT_BYTES
            yield RingWrite(self.key, start * _SLOT_BYTES, data[at : at + size])
            at += size
