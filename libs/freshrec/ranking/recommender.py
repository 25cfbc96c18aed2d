"""Answering one recommendation request from the freshest rows.

user row → retrieval query (the row with its last component set to 1, meeting each item
row's bias component) → retrieval top-N (inner product, seen items excluded) → candidate
rows in one batched read → one batched forward pass of both heads → top-k by the serving
score `log P(interact) + like_weight * log P(like | interact)` (`SCORING`; the retrieval
term is the retrieval logit, the log-probability up to a per-user constant). A user without
a row gets popular and fresh items instead (`fallback`), scored by the same model with a
zero user vector so item biases and context still order them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import Counter

from freshrec.metrics import LATENCY_BUCKETS_S, BatchHistogram
from freshrec.models.features import context_row_ids, entity_row_ids, mean_pool
from freshrec.models.model import DEFAULT_LIKE_WEIGHT, RankingModel
from freshrec.models.published import ITEM_NAMES_KEY
from freshrec.ranking.model_holder import ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.retrieval.base import Retriever
from freshrec.table.base import IdArray, Rows, TableBackend
from freshrec.table.tables import Tables

__all__ = ["SCORING", "Query", "Recommendation", "Recommender", "ScoredItem", "retrieval_queries"]

SCORING = "log P(interact) + like_weight * log P(like | interact)"
"""What a recommendation's scores are (before the first model: the retrieval inner product)."""


def retrieval_queries(users: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """`(Q, D)` retrieval queries of `(Q, D)` user rows: the last component set to 1, so the
    inner product with an item row adds that row's bias (its last component)."""
    queries = np.array(users, dtype=np.float32, copy=True)
    queries[:, -1] = 1.0
    return queries


# batch histograms: a batch's requests are recorded in one call, not one `observe` each
STAGE_SECONDS = BatchHistogram(
    "freshrec_ranker_stage_duration_seconds",
    "Time spent per stage of a recommendation.",
    LATENCY_BUCKETS_S,
    labelnames=["stage"],
)
FALLBACKS = Counter(
    "freshrec_ranker_fallbacks_total", "Requests answered from popular/fresh items."
)
SERVED_ROW_AGE = BatchHistogram(
    "freshrec_ranker_served_row_age_seconds",
    "Wall-clock age of the user's row and the top item's row of each response.",
    (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0),
)


@dataclass(frozen=True)
class ScoredItem:
    """One recommended item."""

    item_id: str
    score: float


@dataclass(frozen=True)
class Recommendation:
    """The answer to one request: `item_ids` best first, each with its score.

    Kept as two plain lists: a response is serialized straight from them, without a
    `ScoredItem` per item (`items` builds those on demand).
    """

    item_ids: list[str]
    scores: list[float]
    model_version: int | None
    index_version: int
    fallback: bool
    like_weight: float = DEFAULT_LIKE_WEIGHT

    @property
    def items(self) -> list[ScoredItem]:
        """The recommended items, best first."""
        return [ScoredItem(i, s) for i, s in zip(self.item_ids, self.scores, strict=True)]


@contextmanager
def _stage(name: str, requests: int = 1) -> Iterator[None]:
    """Times a stage of a batch of `requests`; each of them spent that long in it."""
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - start, requests)


class RowReader(Protocol):
    """Where rows are read from: an `EmbeddingStore` or a `RowMirror`."""

    def read_rows(self, ids: IdArray) -> Rows: ...


def _read_unique(store: RowReader, ids: IdArray) -> tuple[Rows, npt.NDArray[np.int64]]:
    """Rows of `ids` (duplicates allowed) in one read, and each id's position in them (-1
    where the id has no row)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    rows = store.read_rows(unique)
    position = np.full(unique.shape[0], -1, dtype=np.int64)
    # read_rows keeps the asked (sorted) order, skipping missing ids
    position[np.searchsorted(unique, rows.ids)] = np.arange(len(rows))
    return rows, position[inverse.reshape(-1)]


@dataclass(frozen=True)
class Query:
    """One recommendation request, validated."""

    user_id: str
    k: int
    context: Mapping[str, str | int | float] | None = None
    exclude_item_ids: Sequence[str] = ()


_NO_IDS = np.zeros(0, dtype=np.uint64)

NameResolver = Callable[[IdArray], list[str | None]]
"""Maps item row ids to raw item ids (None when unknown)."""


def store_name_resolver(
    backend: TableBackend,
    cache_size: int = 1_000_000,
    retry_missing_s: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
) -> NameResolver:
    """Resolve names through the backend's metadata hash, remembering them in process.

    An item row's name never changes, so after warm-up a request needs no round trip for it.
    A row without a name (imported rather than trained) is asked for again only after
    `retry_missing_s`, so such items do not cost a round trip in every request either.
    """
    cache: dict[int, str] = {}
    missing_since: dict[int, float] = {}

    def resolve(ids: IdArray) -> list[str | None]:
        keys = ids.tolist()
        now = clock()
        ask = [
            key
            for key in dict.fromkeys(keys)
            if key not in cache and now - missing_since.get(key, -math.inf) >= retry_missing_s
        ]
        if ask:
            raw = backend.get_hash_fields(ITEM_NAMES_KEY, [str(k) for k in ask])
            if len(cache) + len(ask) > cache_size:
                cache.clear()
            if len(missing_since) + len(ask) > cache_size:
                missing_since.clear()
            for key, value in zip(ask, raw, strict=True):
                if value is None:
                    missing_since[key] = now
                else:
                    cache[key] = value.decode()
                    missing_since.pop(key, None)
        return [cache.get(k) for k in keys]

    return resolve


class Recommender:
    """Scores retrieval candidates for a user with the served model."""

    def __init__(
        self,
        tables: Tables,
        retriever: Retriever,
        models: ModelHolder,
        popularity: PopularityTracker,
        *,
        candidates: int = 500,
        like_weight: float = DEFAULT_LIKE_WEIGHT,
        item_rows: RowReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a recommender.

        Args:
            tables: the `user`, `item` and `context` stores and their backend.
            retriever: the item index that follows the item table.
            models: the hot-reloaded dense model.
            popularity: fallback candidates.
            candidates: how many items retrieval hands to the ranking model.
            like_weight: the serving score's weight of `log P(like | interact)`.
            item_rows: where candidates' rows are read (a `RowMirror` kept by the index
                follower); the item store when None.
            clock: wall clock, for row ages.
        """
        self.users, self.items, self.contexts = tables.user, tables.item, tables.context
        self.retriever = retriever
        self.models = models
        self.popularity = popularity
        self.candidates = candidates
        self.like_weight = like_weight
        self.item_rows: RowReader = item_rows if item_rows is not None else self.items
        self._clock = clock
        self._names = store_name_resolver(tables.backend)

    def recommend(
        self,
        user_id: str,
        k: int,
        context: Mapping[str, str | int | float] | None = None,
        exclude_item_ids: Sequence[str] = (),
    ) -> Recommendation:
        """Top-`k` items for `user_id`, best first."""
        return self.recommend_batch([Query(user_id, k, context, tuple(exclude_item_ids))])[0]

    def recommend_batch(self, queries: Sequence[Query]) -> list[Recommendation]:
        """Answer several queries together: one read of all their user rows, one retrieval
        search, one read of all their candidates' rows and one forward pass.

        Each answer is the one `recommend` would give for its query alone.
        """
        n = len(queries)
        if n == 0:
            return []
        with _stage("user_row", n):
            user_keys = entity_row_ids("user", [q.user_id for q in queries])
            users, user_pos = _read_unique(self.users, user_keys)
            contexts = self._context_vectors(queries)
        known = user_pos >= 0
        user_vecs = np.zeros((n, self.items.config.dim), dtype=np.float32)
        user_vecs[known] = users.vectors[user_pos[known]]
        excludes = [
            entity_row_ids("item", [str(i) for i in q.exclude_item_ids])
            if q.exclude_item_ids
            else _NO_IDS
            for q in queries
        ]
        with _stage("retrieval", n):
            candidates, valid = self._candidates(user_vecs, known, excludes)
        with _stage("rows", n):
            items, found = _read_unique(self.item_rows, candidates[valid])
            slot = np.full(candidates.shape, -1, dtype=np.int64)
            slot[valid] = found  # -1: no candidate there, or its row expired meanwhile
        with _stage("scoring", n):
            present = slot >= 0
            if len(items):
                # one gather (a masked assignment cost 1 ms per batch of 27 x 500)
                item_vecs = np.take(items.vectors, np.where(present, slot, 0), axis=0)
                item_vecs[~present] = 0.0
            else:
                item_vecs = np.zeros((*candidates.shape, user_vecs.shape[1]), dtype=np.float32)
            scores = self._score(user_vecs, item_vecs, contexts)
            scores[~present] = -np.inf
            # stable: equal scores keep retrieval (or popularity) order
            order = np.argsort(-scores, axis=1, kind="stable")[:, : max(q.k for q in queries)]
            ranked = np.take_along_axis(scores, order, axis=1)
        lengths = [
            min(q.k, int(count))
            for q, count in zip(queries, np.isfinite(ranked).sum(axis=1), strict=True)
        ]
        picked = np.concatenate([order[i, :length] for i, length in enumerate(lengths)])
        query_of = np.repeat(np.arange(n), lengths)
        picked_ids = candidates[query_of, picked]
        item_ids = [
            name if name is not None else str(row_id)
            for row_id, name in zip(picked_ids.tolist(), self._names(picked_ids), strict=True)
        ]
        tops = np.cumsum(lengths) - lengths
        self._observe_ages(
            users.wall_time[user_pos[known]],
            items.wall_time[slot[query_of, picked][tops[np.asarray(lengths) > 0]]],
        )
        model = self.models.current
        model_version = None if model is None else model.version
        index_version = int(self.retriever.version)
        out: list[Recommendation] = []
        for i, length in enumerate(lengths):
            out.append(
                Recommendation(
                    item_ids=item_ids[tops[i] : tops[i] + length],
                    scores=ranked[i, :length].tolist(),
                    model_version=model_version,
                    index_version=index_version,
                    fallback=not bool(known[i]),
                    like_weight=self.like_weight,
                )
            )
        return out

    def _candidates(
        self, user_vecs: np.ndarray, known: npt.NDArray[np.bool_], excludes: list[IdArray]
    ) -> tuple[IdArray, npt.NDArray[np.bool_]]:
        """`(Q, N)` candidate ids per query and where they are real (not padding): retrieval
        for known users, popular and fresh items for unknown ones."""
        ids = np.zeros((len(excludes), self.candidates), dtype=np.uint64)
        valid = np.zeros(ids.shape, dtype=np.bool_)
        searched = np.flatnonzero(known)
        if searched.shape[0]:
            exclude = [excludes[i] for i in searched]
            found, scores = self.retriever.search(
                retrieval_queries(user_vecs[searched]),
                self.candidates,
                exclude=exclude if any(e.shape[0] for e in exclude) else None,
            )
            ids[searched] = found
            valid[searched] = np.isfinite(scores)  # -inf marks padding
        for i in np.flatnonzero(~known):
            FALLBACKS.inc()
            popular = self.popularity.candidates(self.candidates + excludes[i].shape[0])
            popular = popular[~np.isin(popular, excludes[i])][: self.candidates]
            ids[i, : popular.shape[0]] = popular
            valid[i, : popular.shape[0]] = True
        return ids, valid

    def _observe_ages(self, user_times: np.ndarray, top_item_times: np.ndarray) -> None:
        # per response, the user's row and the top item's row: what most shapes the answer,
        # at two observations per request instead of k + 1
        ages = self._clock() - np.concatenate([user_times, top_item_times])
        SERVED_ROW_AGE.observe_many(np.maximum(ages, 0.0))

    def _context_vectors(self, queries: Sequence[Query]) -> np.ndarray:
        """`(Q, C)` the mean context row of each query (zeros without context), from one
        lookup for the whole batch."""
        dim = self.contexts.config.dim
        keys, positions = context_row_ids([q.context or {} for q in queries])
        if keys.shape[0] == 0:
            return np.zeros((len(queries), dim), dtype=np.float32)
        # a copy: torch wants a writable array, the store may hand out read-only views
        vectors = torch.from_numpy(np.array(self.contexts.lookup(keys).vectors, dtype=np.float32))
        return mean_pool(vectors, positions, len(queries), dim).numpy()

    def _score(self, users: np.ndarray, items: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """`(Q, N)` serving scores (`SCORING`; retrieval inner products before the first
        model) of `(Q, N, D)` candidate rows for `(Q, D)` users with `(Q, C)` contexts."""
        model = self.models.current
        if model is None:
            queries = retrieval_queries(users)
            return np.asarray(np.matmul(items, queries[:, :, None])[:, :, 0], dtype=np.float32)
        net: RankingModel = model.model
        with torch.inference_mode():
            scores = net.serving_grid(
                torch.from_numpy(users),
                torch.from_numpy(items),
                torch.from_numpy(contexts),
                like_weight=self.like_weight,
                logit_offset=model.logit_offset,
            )
        return scores.numpy()
