"""The ranker's index settings reach the retriever it builds."""

from __future__ import annotations

import pytest

from freshrec.retrieval.config import FlatConfig, HnswConfig, IvfConfig
from services.ranker.app import _retriever_config
from services.ranker.settings import RankerSettings


def test_index_kind_and_its_search_parameter_pick_the_retriever_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHREC_INDEX_NPROBE", "512")
    monkeypatch.setenv("FRESHREC_INDEX_EF_SEARCH", "600")
    assert _retriever_config(RankerSettings()) == FlatConfig()
    monkeypatch.setenv("FRESHREC_INDEX_KIND", "ivf")
    assert _retriever_config(RankerSettings()) == IvfConfig(nprobe=512)
    monkeypatch.setenv("FRESHREC_INDEX_KIND", "hnsw")
    assert _retriever_config(RankerSettings()) == HnswConfig(ef_search=600)


def test_a_search_parameter_below_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_INDEX_NPROBE", "0")
    with pytest.raises(ValueError, match="index_nprobe"):
        RankerSettings()
