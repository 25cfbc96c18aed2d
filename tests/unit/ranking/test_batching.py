"""Answering requests in batches gives each request the answer it would get alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from freshrec.errors import Overloaded, StoreUnavailable
from freshrec.models.model import ModelConfig, RankingModel
from freshrec.ranking import (
    LoadedModel,
    PopularityTracker,
    Query,
    Recommendation,
    RecommendBatcher,
    Recommender,
)
from freshrec.retrieval.exact import ExactRetriever
from freshrec.table import hash_features
from tests.unit.ranking.catalog import T0, seeded_tables


def _recommender(with_model: bool) -> Recommender:
    names = [f"i{j}" for j in range(400)]
    tables = seeded_tables(names, [f"u{j}" for j in range(20)], seed=11)
    item = tables.item
    items = hash_features("item", names)
    retriever = ExactRetriever(item.config.dim)
    retriever.upsert(items, item.read_rows(items).vectors)
    popularity = PopularityTracker(item)
    model = None
    if with_model:
        model = LoadedModel(
            RankingModel(ModelConfig()), version=3, logit_offset=0.0, published_at=T0
        )
    models = SimpleNamespace(current=model)
    return Recommender(tables, retriever, models, popularity, candidates=60)  # type: ignore[arg-type]


def _queries() -> list[Query]:
    return [
        Query("u1", 10),
        Query("u2", 5, {"device": "ios", "hour": 13}),
        Query("u1", 10, None, ("i3", "i7")),  # the same user again, with exclusions
        Query("nobody", 4),  # unknown: fallback
        Query("u19", 60),
        Query("u5", 1, {"device": "web"}),
    ]


@pytest.mark.parametrize("with_model", [False, True])
def test_a_batch_answers_each_query_as_alone(with_model: bool) -> None:
    recommender = _recommender(with_model)
    queries = _queries()
    together = recommender.recommend_batch(queries)
    alone = [recommender.recommend(q.user_id, q.k, q.context, q.exclude_item_ids) for q in queries]
    for batched, single in zip(together, alone, strict=True):
        assert [i.item_id for i in batched.items] == [i.item_id for i in single.items]
        assert [i.score for i in batched.items] == pytest.approx([i.score for i in single.items])
        assert batched.fallback == single.fallback
        assert batched.model_version == single.model_version
    assert [r.fallback for r in together] == [False, False, False, True, False, False]
    assert [len(r.items) for r in together] == [10, 5, 10, 0, 60, 1]  # nothing is popular yet
    assert not {"i3", "i7"} & {item.item_id for item in together[2].items}
    assert together[0].model_version == (3 if with_model else None)
    scores = [item.score for item in together[4].items]
    assert scores == sorted(scores, reverse=True)
    assert recommender.recommend_batch([]) == []


def _run(batcher: RecommendBatcher, queries: Sequence[Query]) -> list[Any]:
    async def main() -> list[Any]:
        return await asyncio.gather(
            *(batcher.recommend(q) for q in queries), return_exceptions=True
        )

    return asyncio.run(main())


def test_the_batcher_groups_waiting_requests_and_keeps_their_order() -> None:
    seen: list[int] = []

    def compute(queries: Sequence[Query]) -> list[Recommendation]:
        seen.append(len(queries))
        return [Recommendation([], [], None, q.k, False) for q in queries]

    batcher = RecommendBatcher(compute, max_batch=8)
    answers = _run(batcher, [Query("u", k) for k in range(1, 21)])
    assert [a.index_version for a in answers] == list(range(1, 21))
    assert sum(seen) == 20
    assert max(seen) == 8
    assert len(seen) < 20


def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_runs() -> None:
    calls = 0

    def compute(queries: Sequence[Query]) -> list[Recommendation]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("redis down")
        return [Recommendation([], [], None, 0, False) for _ in queries]

    batcher = RecommendBatcher(compute, max_batch=64)
    first = _run(batcher, [Query("u", 1)])
    second = _run(batcher, [Query("u", 1), Query("v", 1)])
    assert isinstance(first[0], StoreUnavailable)
    assert all(isinstance(a, Recommendation) for a in second)


def test_a_closed_batcher_refuses_new_requests() -> None:
    batcher = RecommendBatcher(lambda qs: [], max_batch=1)
    asyncio.run(batcher.close())
    (answer,) = _run(batcher, [Query("u", 1)])
    assert isinstance(answer, RuntimeError)
    with pytest.raises(ValueError, match="max_batch"):
        RecommendBatcher(lambda qs: [], max_batch=0)


def test_requests_beyond_the_batch_and_the_queue_are_refused_at_once() -> None:
    computed: list[int] = []

    def compute(queries: Sequence[Query]) -> list[Recommendation]:
        computed.extend(q.k for q in queries)
        return [Recommendation([], [], None, q.k, False) for q in queries]

    batcher = RecommendBatcher(compute, max_batch=2, max_queue=3)

    async def main() -> tuple[list[Recommendation], int, Recommendation]:
        waiting = [asyncio.ensure_future(batcher.recommend(Query("u", k))) for k in range(1, 6)]
        await asyncio.sleep(0)  # each reached the batcher: 2 computing + 3 queued, the bound
        admitted = batcher.admitted
        with pytest.raises(Overloaded, match=r"5 requests in flight or queued \(bound 2 \+ 3\)"):
            await batcher.recommend(Query("u", 99))
        answers = await asyncio.gather(*waiting)
        # the bound frees as answers go out: the next request is served
        return answers, admitted, await batcher.recommend(Query("u", 7))

    answers, admitted_while_full, late = asyncio.run(main())
    assert [a.index_version for a in answers] == [1, 2, 3, 4, 5]
    assert late.index_version == 7
    assert admitted_while_full == 5
    assert batcher.admitted == 0
    assert sorted(computed) == [1, 2, 3, 4, 5, 7]  # the refused request never reached compute


def test_a_negative_queue_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        RecommendBatcher(lambda qs: [], max_batch=1, max_queue=-1)
