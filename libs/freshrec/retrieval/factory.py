"""`build_retriever`: the retriever a `RetrieverConfig` describes.

Apart from `config.py` so that the configs import no implementation. FAISS itself is loaded
only when a FAISS retriever is built, so a process (or a test) that serves the exact retriever,
or only imports the serving code, never pays for loading it.
"""

from __future__ import annotations

from freshrec.retrieval.base import Retriever
from freshrec.retrieval.config import ExactConfig, FlatConfig, HnswConfig, IvfConfig, SplitConfig
from freshrec.retrieval.exact import ExactRetriever

__all__ = ["build_retriever"]


def build_retriever(
    config: ExactConfig | FlatConfig | IvfConfig | HnswConfig | SplitConfig,
    dim: int,
    name: str = "item",
) -> Retriever:
    """The retriever `config` describes, empty, for `dim`-dimensional vectors.

    Args:
        config: which implementation and structure.
        dim: vector dimension `D`.
        name: the index's name in logs and metric labels (use the item table's name, as
            `IndexFollower` does).

    Returns:
        An empty retriever for `(N, D)` item vectors.
    """
    if isinstance(config, ExactConfig):
        return ExactRetriever(dim)
    from freshrec.retrieval.faiss import FaissRetriever  # noqa: PLC0415 - loads FAISS

    return FaissRetriever(dim, config, name=name)
