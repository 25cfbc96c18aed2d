"""Answering one recommendation request from the freshest rows.

user row → retrieval top-N (inner product, seen items excluded) → candidate rows in one
batched read → one batched forward pass of the ranking model → top-k. A user without a row
gets popular and fresh items instead (`fallback`), scored by the same model with a zero
user vector so item and context signals still order them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from prometheus_client import Counter, Histogram

from freshrec.metrics import LATENCY_BUCKETS_S
from freshrec.models.published import ITEM_NAMES_KEY
from freshrec.ranking.models import ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.retrieval.base import Retriever
from freshrec.table.base import EmbeddingStore, IdArray, Rows
from freshrec.table.ids import context_ids, hash_features

__all__ = ["Query", "Recommendation", "Recommender", "ScoredItem"]

STAGE_SECONDS = Histogram(
    "freshrec_ranker_stage_duration_seconds",
    "Time spent per stage of a recommendation.",
    ["stage"],
    buckets=LATENCY_BUCKETS_S,
)
FALLBACKS = Counter(
    "freshrec_ranker_fallbacks_total", "Requests answered from popular/fresh items."
)
SERVED_ROW_AGE = Histogram(
    "freshrec_ranker_served_row_age_seconds",
    "Wall-clock age of the user's row and the top item's row of each response.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0),
)


@dataclass(frozen=True)
class ScoredItem:
    """One recommended item."""

    item_id: str
    score: float


@dataclass(frozen=True)
class Recommendation:
    """The answer to one request."""

    items: list[ScoredItem]
    model_version: int | None
    index_version: int
    fallback: bool


@contextmanager
def _stage(name: str, requests: int = 1) -> Iterator[None]:
    """Times a stage of a batch of `requests`; each of them spent that long in it."""
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        histogram = STAGE_SECONDS.labels(name)
        for _ in range(requests):
            histogram.observe(elapsed)


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


NameResolver = Callable[[IdArray], list[str | None]]
"""Maps item row ids to raw item ids (None when unknown)."""


def store_name_resolver(store: EmbeddingStore, cache_size: int = 1_000_000) -> NameResolver:
    """Resolve names through the store's metadata hash, remembering them in process.

    An item row's name never changes, so after warm-up a request needs no round trip for it.
    """
    cache: dict[int, str] = {}

    def resolve(ids: IdArray) -> list[str | None]:
        keys = [int(i) for i in ids]
        missing = [k for k in keys if k not in cache]
        if missing:
            raw = store.get_hash_fields(ITEM_NAMES_KEY, [str(k) for k in missing])
            if len(cache) + len(missing) > cache_size:
                cache.clear()
            for key, value in zip(missing, raw, strict=True):
                if value is not None:
                    cache[key] = value.decode()
        return [cache.get(k) for k in keys]

    return resolve


class Recommender:
    """Scores retrieval candidates for a user with the served model."""

    def __init__(
        self,
        tables: Mapping[str, EmbeddingStore],
        retriever: Retriever,
        models: ModelHolder,
        popularity: PopularityTracker,
        *,
        candidates: int = 500,
        item_rows: RowReader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a recommender.

        Args:
            tables: the `user`, `item` and `context` stores.
            retriever: the item index that follows the item table.
            models: the hot-reloaded dense model.
            popularity: fallback candidates.
            candidates: how many items retrieval hands to the ranking model.
            item_rows: where candidates' rows are read (a `RowMirror` kept by the index
                follower); the item store when None.
            clock: wall clock, for row ages.
        """
        self.users, self.items, self.contexts = tables["user"], tables["item"], tables["context"]
        self.retriever = retriever
        self.models = models
        self.popularity = popularity
        self.candidates = candidates
        self.item_rows: RowReader = item_rows if item_rows is not None else self.items
        self._clock = clock
        self._names = store_name_resolver(self.items)

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
            user_keys = hash_features("user", [q.user_id for q in queries])
            users, user_pos = _read_unique(self.users, user_keys)
            contexts = np.stack([self._context_vector(q.context or {}) for q in queries])
        excludes = [hash_features("item", [str(i) for i in q.exclude_item_ids]) for q in queries]
        known = user_pos >= 0
        user_vecs = np.zeros((n, self.items.config.dim), dtype=np.float32)
        user_vecs[known] = users.vectors[user_pos[known]]
        with _stage("retrieval", n):
            candidates = self._candidates(user_vecs, known, excludes)
        with _stage("rows", n):
            items, item_pos = _read_unique(self.item_rows, np.concatenate(candidates))
        with _stage("scoring", n):
            query_of = np.repeat(np.arange(n), [c.shape[0] for c in candidates])
            present = item_pos >= 0  # a candidate whose row expired meanwhile drops out
            rows, query_of = item_pos[present], query_of[present]
            scores = self._score(user_vecs[query_of], items.vectors[rows], contexts[query_of])
        bounds = np.searchsorted(query_of, np.arange(n + 1))
        chosen: list[npt.NDArray[np.int64]] = []
        for i, query in enumerate(queries):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            order = np.argsort(-scores[lo:hi], kind="stable")[: query.k]
            chosen.append(lo + order)
        picked = np.concatenate(chosen)
        names = self._names(items.ids[rows[picked]])
        self._observe_ages(users.wall_time[user_pos[known]], items.wall_time[rows[picked]], chosen)
        model = self.models.current
        model_version = None if model is None else model.version
        index_version = int(self.retriever.version)
        out: list[Recommendation] = []
        start = 0
        for i, positions in enumerate(chosen):
            ids = items.ids[rows[positions]]
            out.append(
                Recommendation(
                    items=[
                        ScoredItem(name if name is not None else str(int(row_id)), float(score))
                        for row_id, name, score in zip(
                            ids, names[start : start + len(ids)], scores[positions], strict=True
                        )
                    ],
                    model_version=model_version,
                    index_version=index_version,
                    fallback=not bool(known[i]),
                )
            )
            start += len(ids)
        return out

    def _candidates(
        self, user_vecs: np.ndarray, known: npt.NDArray[np.bool_], excludes: list[IdArray]
    ) -> list[IdArray]:
        """Retrieval candidates per query; popular and fresh items for unknown users."""
        out: list[IdArray] = [np.zeros(0, dtype=np.uint64)] * len(excludes)
        searched = np.flatnonzero(known)
        if searched.shape[0]:
            found, scores = self.retriever.search(
                user_vecs[searched], self.candidates, exclude=[excludes[i] for i in searched]
            )
            for row, i in enumerate(searched):
                out[i] = found[row][np.isfinite(scores[row])]  # -inf marks padding
        for i in np.flatnonzero(~known):
            FALLBACKS.inc()
            popular = self.popularity.candidates(self.candidates + excludes[i].shape[0])
            out[i] = popular[~np.isin(popular, excludes[i])][: self.candidates]
        return out

    def _observe_ages(
        self,
        user_times: np.ndarray,
        item_times: np.ndarray,
        chosen: list[npt.NDArray[np.int64]],
    ) -> None:
        # per response, the user's row and the top item's row: what most shapes the answer,
        # at two observations per request instead of k + 1
        offsets = np.cumsum([0] + [len(c) for c in chosen[:-1]])
        tops = item_times[[o for o, c in zip(offsets, chosen, strict=True) if len(c)]]
        now = self._clock()
        for age in np.maximum(now - np.concatenate([user_times, tops]), 0.0).tolist():
            SERVED_ROW_AGE.observe(age)

    def _context_vector(self, context: Mapping[str, str | int | float]) -> np.ndarray:
        dim = self.contexts.config.dim
        if not context:
            return np.zeros(dim, dtype=np.float32)
        keys = np.array(context_ids(context), dtype=np.uint64)
        found = self.contexts.lookup(keys)
        return np.asarray(found.vectors.mean(axis=0), dtype=np.float32)

    def _score(self, users: np.ndarray, items: np.ndarray, contexts: np.ndarray) -> np.ndarray:
        """Probabilities (or inner products before the first model) for `(N, D)` row pairs."""
        if items.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        model = self.models.current
        if model is None:
            return np.asarray(np.einsum("nd,nd->n", users, items), dtype=np.float32)
        with torch.inference_mode():
            logits, _ = model.model(
                torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(contexts)
            )
            probs = torch.sigmoid(logits + model.logit_offset)
        return probs.numpy()
