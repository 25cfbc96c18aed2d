"""Prequential metrics: pointwise (AUC, log loss) and ranking (Recall@k, NDCG@k).

Ranking metrics are the expectation under uniformly random tie-breaking: when the held item
ties with `t` other candidates and `g` candidates score strictly higher, its position is
uniform on `g + 1 .. g + t + 1`. That keeps coarse scorers (popularity counts, a frozen model
facing rows it never trained) from being flattered or punished by an arbitrary tie order,
and it keeps the figures deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from freshrec.training.auc import auc

__all__ = [
    "EPS",
    "MethodScores",
    "expected_rank_metrics",
    "log_loss",
    "paired_difference",
    "summarise",
]

EPS = 1e-7
"""Probabilities are clipped to `[EPS, 1 - EPS]` for the log loss."""


def log_loss(probs: npt.NDArray[np.float64], labels: npt.NDArray[np.float64]) -> float:
    """Mean binary cross-entropy; NaN for no examples.

    Args:
        probs: `(N,)` predicted probabilities.
        labels: `(N,)` 0/1 labels.
    """
    if probs.shape[0] == 0:
        return float("nan")
    p = np.clip(probs, EPS, 1.0 - EPS)
    return float(-np.mean(labels * np.log(p) + (1.0 - labels) * np.log1p(-p)))


def expected_rank_metrics(greater: int, ties: int, k: int) -> tuple[float, float]:
    """Recall@k and NDCG@k of one held item, expected over random tie-breaking.

    Args:
        greater: candidates scoring strictly higher than the held item.
        ties: other candidates scoring exactly as high.
        k: the cut-off.

    Returns:
        `(recall, ndcg)`; with one relevant item, recall is the chance it lands in the top k
        and NDCG the expected `1 / log2(position + 1)` counted within the top k.
    """
    first = greater + 1
    last = min(greater + ties + 1, k)
    if first > k:
        return 0.0, 0.0
    positions = np.arange(first, last + 1, dtype=np.float64)
    spread = ties + 1
    return positions.shape[0] / spread, float(np.sum(1.0 / np.log2(positions + 1.0)) / spread)


@dataclass
class MethodScores:
    """Every prediction one method made, indexed like the stream's examples and queries.

    Attributes:
        probs: `(X,)` float64 predicted probabilities (NaN: not scored).
        recall: `(Q,)` float64 Recall@k per query (NaN: not asked).
        ndcg: `(Q,)` float64 NDCG@k per query (NaN: not asked).
    """

    probs: npt.NDArray[np.float64]
    recall: npt.NDArray[np.float64]
    ndcg: npt.NDArray[np.float64]

    @classmethod
    def empty(cls, examples: int, queries: int) -> MethodScores:
        """All-NaN scores for `examples` examples and `queries` queries."""
        return cls(
            probs=np.full(examples, np.nan),
            recall=np.full(queries, np.nan),
            ndcg=np.full(queries, np.nan),
        )


def _clean(value: float) -> float | None:
    return None if math.isnan(value) else value


def _mean(values: npt.NDArray[np.float64]) -> float:
    return float(np.mean(values)) if values.shape[0] else float("nan")


def summarise(
    scores: MethodScores,
    labels: npt.NDArray[np.float64],
    *,
    example_window: npt.NDArray[np.int64],
    query_window: npt.NDArray[np.int64],
    windows: int,
    k: int,
    ranking: bool = True,
    probabilistic: bool = True,
) -> dict[str, object]:
    """Overall and per-window metrics of one method (NaN written as None).

    Args:
        scores: the method's predictions.
        labels: `(X,)` 0/1 labels.
        example_window: `(X,)` window of each example.
        query_window: `(Q,)` window of each query.
        windows: number of windows `W`.
        k: the ranking cut-off (names the keys).
        ranking: include the ranking metrics.
        probabilistic: `scores.probs` are probabilities (False: plain scores, for the AUC
            only; the log loss is None).

    Returns:
        `{"auc", "logloss", "examples", ["recall_at_k", "ndcg_at_k", "queries"],
        "windows": {same keys: W-long lists}}`.

    Raises:
        ValueError: some example was not scored (a harness defect, never silent).
    """
    if np.isnan(scores.probs).any():
        raise ValueError("some examples were not scored")
    recall_key, ndcg_key = f"recall_at_{k}", f"ndcg_at_{k}"

    def block(ex: npt.NDArray[np.bool_], qs: npt.NDArray[np.bool_]) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "auc": _clean(auc(scores.probs[ex], labels[ex])),
            "logloss": _clean(log_loss(scores.probs[ex], labels[ex])) if probabilistic else None,
        }
        if ranking:
            out[recall_key] = _clean(_mean(scores.recall[qs]))
            out[ndcg_key] = _clean(_mean(scores.ndcg[qs]))
        return out

    every_example = np.ones(labels.shape[0], dtype=np.bool_)
    every_query = np.ones(scores.recall.shape[0], dtype=np.bool_)
    if ranking and np.isnan(scores.recall).any():
        raise ValueError("some ranking queries were not answered")
    result: dict[str, object] = dict(block(every_example, every_query))
    result["examples"] = int(labels.shape[0])
    if ranking:
        result["queries"] = int(scores.recall.shape[0])
    per_window: dict[str, list[float | int | None]] = {key: [] for key in result}
    for w in range(windows):
        ex = example_window == w
        qs = query_window == w
        values: dict[str, float | int | None] = dict(block(ex, qs))
        values["examples"] = int(ex.sum())
        if ranking:
            values["queries"] = int(qs.sum())
        for key, value in values.items():
            per_window[key].append(value)
    result["windows"] = per_window
    return result


def paired_difference(
    values: npt.NDArray[np.float64], reference: npt.NDArray[np.float64]
) -> tuple[float, float]:
    """Mean per-query difference `values - reference` and its standard error.

    Both methods answered the same queries, so the paired difference removes the
    between-query variance that two separate standard errors would double count.

    Args:
        values: `(Q,)` per-query metric of one method.
        reference: `(Q,)` the same metric of the reference method, same queries.

    Returns:
        `(mean difference, standard error)`; NaN with fewer than two queries.
    """
    diff = values - reference
    n = diff.shape[0]
    if n < 2:
        return float("nan"), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n))
