"""The ranker's index settings reach the retriever it builds."""

from __future__ import annotations

import pytest

from freshrec.retrieval.config import FlatConfig, HnswConfig, IvfConfig
from services.ranker.app import runtime_config
from services.ranker.settings import RankerSettings


def test_index_type_and_its_search_parameter_pick_the_retriever_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert runtime_config(RankerSettings()).index == FlatConfig()
    monkeypatch.setenv("FRESHREC_INDEX__TYPE", "ivf")
    monkeypatch.setenv("FRESHREC_INDEX__NPROBE", "512")
    assert runtime_config(RankerSettings()).index == IvfConfig(nprobe=512)
    monkeypatch.delenv("FRESHREC_INDEX__NPROBE")
    monkeypatch.setenv("FRESHREC_INDEX__TYPE", "hnsw")
    monkeypatch.setenv("FRESHREC_INDEX__EF_SEARCH", "600")
    assert runtime_config(RankerSettings()).index == HnswConfig(ef_search=600)


def test_a_search_parameter_below_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_INDEX__TYPE", "ivf")
    monkeypatch.setenv("FRESHREC_INDEX__NPROBE", "0")
    with pytest.raises(ValueError, match=r"index\.ivf\.nprobe"):
        RankerSettings()


def test_the_runtime_gets_every_setting_it_shares_with_the_process() -> None:
    settings = RankerSettings(
        namespace="unit", candidates=77, max_batch=5, max_queue=3, item_rows="redis"
    )
    config = runtime_config(settings)
    assert (config.namespace, config.candidates, config.max_batch, config.max_queue) == (
        "unit",
        77,
        5,
        3,
    )
    assert config.item_rows == "redis"
    assert config.redis_url == settings.redis_url
    assert config.table_config == settings.table_config
