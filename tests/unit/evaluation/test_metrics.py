"""Ranking and pointwise metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from freshrec.offline.evaluation import expected_rank_metrics, log_loss
from freshrec.offline.evaluation.scoring import rank_queries


def test_expected_rank_metrics_without_ties() -> None:
    assert expected_rank_metrics(0, 0, 50) == (1.0, 1.0)
    recall, ndcg = expected_rank_metrics(49, 0, 50)
    assert recall == 1.0 and ndcg == pytest.approx(1.0 / math.log2(51))
    assert expected_rank_metrics(50, 0, 50) == (0.0, 0.0)


def test_ties_count_as_a_uniformly_random_order() -> None:
    # positions 49..52, two of four inside the top 50
    recall, ndcg = expected_rank_metrics(48, 3, 50)
    assert recall == pytest.approx(0.5)
    assert ndcg == pytest.approx((1 / math.log2(50) + 1 / math.log2(51)) / 4)
    # a scorer that ties everything ranks the held item uniformly among 100 candidates
    recall, _ = expected_rank_metrics(0, 99, 50)
    assert recall == pytest.approx(0.5)


def test_rank_queries_masks_unseen_and_already_seen_items() -> None:
    scores = np.array([5.0, 4.0, 3.0, 9.0, 1.0], dtype=np.float32)
    # item 3 scores highest but is not available yet; item 0 is in the user's history
    recall, ndcg = rank_queries([scores], np.array([3]), np.array([2]), [np.array([0])], k=1)
    assert recall.tolist() == [0.0]  # item 1 still beats the held item 2
    recall, ndcg = rank_queries([scores], np.array([3]), np.array([1]), [np.array([0])], k=1)
    assert recall.tolist() == [1.0] and ndcg.tolist() == [1.0]
    # the held item may be new (index == available)
    recall, _ = rank_queries([scores], np.array([3]), np.array([3]), [np.array([], int)], k=1)
    assert recall.tolist() == [1.0]


def test_log_loss() -> None:
    probs = np.array([0.9, 0.2])
    labels = np.array([1.0, 0.0])
    assert log_loss(probs, labels) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert math.isfinite(log_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    assert math.isnan(log_loss(np.zeros(0), np.zeros(0)))
