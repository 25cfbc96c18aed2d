"""`top_inner_products`: pruned selection gives exactly what ranking every score gives."""

from __future__ import annotations

import numpy as np
import pytest

from freshrec.retrieval import scan
from freshrec.retrieval.scan import top_inner_products

DIM = 8


def _brute(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T
    order = np.stack([np.lexsort((np.arange(vectors.shape[0]), -row))[:k] for row in scores])
    return order, np.take_along_axis(scores, order, axis=1)


def _data(n: int, queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((queries, DIM)).astype(np.float32),
        rng.standard_normal((n, DIM)).astype(np.float32),
    )


@pytest.mark.parametrize(("n", "k"), [(20_000, 50), (20_000, 500), (3000, 25), (700, 700)])
def test_matches_ranking_every_score(n: int, k: int) -> None:
    queries, vectors = _data(n, 12, seed=n + k)
    got_pos, got_scores = top_inner_products(queries, vectors, k)
    want_pos, want_scores = _brute(queries, vectors, k)
    np.testing.assert_array_equal(got_pos, want_pos)
    np.testing.assert_array_equal(got_scores, want_scores)


def test_a_misleading_sample_falls_back_to_ranking_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The sampled positions that score well for the first query are inflated: the threshold
    # they give passes fewer than k, so that query is ranked over all its scores. For the
    # opposite query the same rows score badly and its sample stays representative.
    queries, vectors = _data(40_000, 1, seed=5)
    sampled = np.arange(0, 40_000, 40_000 // (scan.SAMPLE_PER_RESULT * 100))
    vectors[sampled[vectors[sampled] @ queries[0] > 0]] *= 10.0
    widened: list[list[int]] = []
    rank_whole_rows = scan.rank_whole_rows

    def spy(
        block: np.ndarray, rows: np.ndarray, k: int, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        widened.append(rows.tolist())
        return rank_whole_rows(block, rows, k, keys)

    monkeypatch.setattr(scan, "rank_whole_rows", spy)
    got_pos, _ = top_inner_products(np.concatenate([queries, -queries]), vectors, 100)
    assert widened == [[0]]
    want_pos, _ = _brute(np.concatenate([queries, -queries]), vectors, 100)
    np.testing.assert_array_equal(got_pos, want_pos)


def test_chunks_of_queries_give_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    queries, vectors = _data(5000, 9, seed=7)
    whole = top_inner_products(queries, vectors, 40)
    monkeypatch.setattr(scan, "MAX_SCORES", 2 * 5000)  # two queries per matrix product
    chunked = top_inner_products(queries, vectors, 40)
    np.testing.assert_array_equal(chunked[0], whole[0])
    # BLAS may sum in another order for another matrix shape
    np.testing.assert_allclose(chunked[1], whole[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [6, 6000])
def test_ties_are_broken_by_the_smallest_tie_keys(n: int) -> None:
    # all scores equal: which k are returned, and in which order, depends on the keys only
    vectors = np.ones((n, DIM), dtype=np.float32)
    keys = np.random.default_rng(n).permutation(n).astype(np.uint64)
    positions, _ = top_inner_products(np.ones((1, DIM), dtype=np.float32), vectors, 4, keys)
    assert keys[positions[0]].tolist() == [0, 1, 2, 3]


def test_k_out_of_range_is_refused() -> None:
    queries, vectors = _data(10, 1, seed=1)
    with pytest.raises(ValueError, match="k must be"):
        top_inner_products(queries, vectors, 11)
