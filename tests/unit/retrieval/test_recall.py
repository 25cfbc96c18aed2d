"""Recall@100 of the approximate indexes against exact search, 100,000 items of dim 32.

The items are i.i.d. Gaussian: no cluster structure at all, the worst case for IVF (trained
embeddings are clustered and reach the same recall with far fewer lists probed; see
docs/retrieval.md). Ids are random 64-bit values, so the uint64 ↔ int64 mapping is exercised
at scale too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from freshrec.retrieval import ExactRetriever, FaissRetriever, HnswConfig, IvfConfig
from freshrec.retrieval.config import FlatConfig

N_ITEMS = 100_000
DIM = 32
K = 100
N_QUERIES = 100


@dataclass(frozen=True)
class Catalog:
    ids: np.ndarray
    vectors: np.ndarray
    queries: np.ndarray
    truth: np.ndarray


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    rng = np.random.default_rng(2024)
    ids = np.unique(rng.integers(0, 2**64 - 1, size=N_ITEMS + 100, dtype=np.uint64))[:N_ITEMS]
    rng.shuffle(ids)
    vectors = rng.standard_normal((N_ITEMS, DIM), dtype=np.float32)
    queries = rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)
    exact = ExactRetriever(DIM)
    exact.replace(ids, vectors)
    truth, _ = exact.search(queries, K)
    return Catalog(ids, vectors, queries, truth)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([np.intersect1d(f, t).shape[0] / K for f, t in zip(found, truth, strict=True)])
    )


@pytest.mark.parametrize(
    "config",
    [IvfConfig(nprobe=512), HnswConfig(ef_search=256)],
    ids=["ivf", "hnsw"],
)
def test_approximate_recall_at_100(catalog: Catalog, config: IvfConfig | HnswConfig) -> None:
    retriever = FaissRetriever(DIM, config)
    retriever.replace(catalog.ids, catalog.vectors)
    assert retriever.structure == config.type
    found, scores = retriever.search(catalog.queries, K)
    assert np.isfinite(scores).all()
    recall = _recall(found, catalog.truth)
    assert recall >= 0.95, f"{config.type} recall@100 = {recall:.3f}"


def test_flat_recall_is_exact(catalog: Catalog) -> None:
    retriever = FaissRetriever(DIM, FlatConfig())
    retriever.replace(catalog.ids, catalog.vectors)
    found, _ = retriever.search(catalog.queries, K)
    assert _recall(found, catalog.truth) == 1.0
