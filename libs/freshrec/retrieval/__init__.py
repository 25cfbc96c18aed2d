"""Candidate retrieval: top-k inner-product search that follows the item table live.

- `Retriever` (`base.py`): the interface; `ExactRetriever` (numpy, the reference) and
  `FaissRetriever` (`faiss/`: FAISS flat / IVF / HNSW) implement it.
- `RetrieverConfig` (`config.py`) describes one; `build_retriever` (`factory.py`) builds it.
- `IndexFollower` (`follower.py`): builds an index from the table and keeps it in step with
  the table's change feed; `snapshot.py` writes and checks its snapshots on disk.
- `RowMirror` (`mirror.py`): an in-process copy of the indexed items' rows, kept by the
  follower, so a ranker scores candidates without reading their rows from Redis.

`FaissRetriever` and `build_retriever` are imported on first use, so that code which only
reads a retriever config or uses the interface does not load FAISS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from freshrec.retrieval.base import RESERVED_ID, Retriever, SearchResult
from freshrec.retrieval.config import (
    ExactConfig,
    FaissIndexConfig,
    FlatConfig,
    HnswConfig,
    IvfConfig,
    RetrieverConfig,
)
from freshrec.retrieval.exact import ExactRetriever
from freshrec.retrieval.follower import IndexFollower
from freshrec.retrieval.mirror import RowMirror
from freshrec.retrieval.snapshot import SnapshotManifest

if TYPE_CHECKING:
    from freshrec.retrieval.factory import build_retriever
    from freshrec.retrieval.faiss import FaissRetriever

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

_LAZY = {"FaissRetriever": "faiss", "build_retriever": "factory"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
