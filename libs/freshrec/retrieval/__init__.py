"""Candidate retrieval: top-k inner-product search that follows the item table live.

- `Retriever` (`base.py`): the interface; `ExactRetriever` (numpy, the reference) and
  `FaissRetriever` (FAISS flat / IVF / HNSW) implement it.
- `IndexFollower` (`follower.py`): builds an index from the table, keeps it in step with the
  table's change feed, and snapshots it to disk.
- `RowMirror` (`mirror.py`): an in-process copy of the indexed items' rows, kept by the
  follower, so a ranker scores candidates without reading their rows from Redis.
"""

from __future__ import annotations

from freshrec.retrieval.base import RESERVED_ID, Retriever, SearchResult
from freshrec.retrieval.config import (
    ExactConfig,
    FaissIndexConfig,
    FlatConfig,
    HnswConfig,
    IvfConfig,
    RetrieverConfig,
    build_retriever,
)
from freshrec.retrieval.exact import ExactRetriever
from freshrec.retrieval.faiss import FaissRetriever
from freshrec.retrieval.follower import IndexFollower, SnapshotManifest
from freshrec.retrieval.mirror import RowMirror

__all__ = [
    "RESERVED_ID",
    "ExactConfig",
    "ExactRetriever",
    "FaissIndexConfig",
    "FaissRetriever",
    "FlatConfig",
    "HnswConfig",
    "IndexFollower",
    "IvfConfig",
    "Retriever",
    "RetrieverConfig",
    "RowMirror",
    "SearchResult",
    "SnapshotManifest",
    "build_retriever",
]
