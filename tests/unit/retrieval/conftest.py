"""Retriever factories shared by the retrieval unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from freshrec.retrieval import ExactRetriever, FaissRetriever, FlatConfig, HnswConfig, IvfConfig
from freshrec.retrieval.base import Retriever
from freshrec.retrieval.config import SplitConfig

DIM = 16

# min_train_size=200 so that IVF and split are trained (not in their flat phase) on small test
# catalogs; nprobe above nlist makes them scan every list, so their answers are exact.
KINDS: dict[str, Callable[[], Retriever]] = {
    "exact": lambda: ExactRetriever(DIM),
    "flat": lambda: FaissRetriever(DIM, FlatConfig()),
    "ivf": lambda: FaissRetriever(DIM, IvfConfig(min_train_size=200, nprobe=4096)),
    "hnsw": lambda: FaissRetriever(DIM, HnswConfig(ef_search=512)),
    # nprobe above the tail's nlist: the tail is scanned whole, so answers are exact
    "split": lambda: FaissRetriever(DIM, SplitConfig(min_train_size=200, nprobe=4096)),
}


@pytest.fixture(params=sorted(KINDS))
def make_retriever(request: pytest.FixtureRequest) -> Iterator[Callable[[], Retriever]]:
    """Builds retrievers of one kind; background rebuilds are waited for at teardown."""
    made: list[Retriever] = []

    def make() -> Retriever:
        retriever = KINDS[request.param]()
        made.append(retriever)
        return retriever

    yield make
    for retriever in made:
        if isinstance(retriever, FaissRetriever):
            retriever.close()


def settle(retriever: Retriever) -> None:
    """Wait for a background rebuild the last change may have started."""
    if isinstance(retriever, FaissRetriever):
        assert retriever.wait_for_rebuild(60.0), "background rebuild did not finish in 60 s"
