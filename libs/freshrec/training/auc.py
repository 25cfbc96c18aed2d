"""Streaming AUC over the most recent predictions (predict-then-train)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["StreamingAuc", "auc"]


def auc(scores: npt.NDArray[np.floating], labels: npt.NDArray[np.floating]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes.

    Args:
        scores: `(N,)` predicted scores.
        labels: `(N,)` 0/1 labels.
    """
    positives = labels > 0.5
    n_pos = int(positives.sum())
    n_neg = int(labels.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.shape[0], dtype=np.float64)
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class StreamingAuc:
    """AUC of the last `window` (score, label) pairs, kept in a ring buffer."""

    def __init__(self, window: int = 20_000) -> None:
        self._scores = np.zeros(window, dtype=np.float64)
        self._labels = np.zeros(window, dtype=np.float64)
        self._next = 0
        self._filled = 0

    def update(self, scores: npt.NDArray[np.floating], labels: npt.NDArray[np.floating]) -> None:
        """Add `(N,)` scores and labels, evicting the oldest beyond the window."""
        window = self._scores.shape[0]
        for start in range(0, scores.shape[0], window):
            chunk_s, chunk_l = scores[start : start + window], labels[start : start + window]
            idx = (self._next + np.arange(chunk_s.shape[0])) % window
            self._scores[idx] = chunk_s
            self._labels[idx] = chunk_l
            self._next = int((self._next + chunk_s.shape[0]) % window)
            self._filled = min(window, self._filled + chunk_s.shape[0])

    def value(self) -> float:
        """AUC over the window; NaN until both classes were seen."""
        return auc(self._scores[: self._filled], self._labels[: self._filled])
