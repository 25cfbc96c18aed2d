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

import numpy as np
import torch
from prometheus_client import Counter, Histogram

from freshrec.metrics import LATENCY_BUCKETS_S
from freshrec.models.published import ITEM_NAMES_KEY
from freshrec.ranking.models import ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.retrieval.base import Retriever
from freshrec.table.base import EmbeddingStore, IdArray
from freshrec.table.ids import context_ids, hash_feature, hash_features

__all__ = ["Recommendation", "Recommender", "ScoredItem"]

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
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(name).observe(time.perf_counter() - start)


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a recommender.

        Args:
            tables: the `user`, `item` and `context` stores.
            retriever: the item index that follows the item table.
            models: the hot-reloaded dense model.
            popularity: fallback candidates.
            candidates: how many items retrieval hands to the ranking model.
            clock: wall clock, for row ages.
        """
        self.users, self.items, self.contexts = tables["user"], tables["item"], tables["context"]
        self.retriever = retriever
        self.models = models
        self.popularity = popularity
        self.candidates = candidates
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
        user_key = np.array([hash_feature("user", user_id)], dtype=np.uint64)
        exclude = hash_features("item", [str(i) for i in exclude_item_ids])
        with _stage("user_row"):
            user_rows = self.users.read_rows(user_key)
            ctx_vec = self._context_vector(context or {})
        fallback = len(user_rows) == 0
        with _stage("retrieval"):
            if fallback:
                FALLBACKS.inc()
                cand = self.popularity.candidates(self.candidates + exclude.shape[0])
                cand = cand[~np.isin(cand, exclude)][: self.candidates]
                user_vec = np.zeros(self.items.config.dim, dtype=np.float32)
            else:
                user_vec = user_rows.vectors[0]
                found, scores = self.retriever.search(
                    user_vec[None, :], self.candidates, exclude=[exclude]
                )
                cand = found[0][np.isfinite(scores[0])]  # -inf marks padding
        with _stage("rows"):
            rows = self.items.read_rows(cand.astype(np.uint64))
        with _stage("scoring"):
            ids, scores = self._score(user_vec, rows.vectors, ctx_vec)
            ids = rows.ids[ids] if ids.shape[0] else ids.astype(np.uint64)
        order = np.argsort(-scores, kind="stable")[:k]
        # the user's row and the top item's row: what most shapes the answer, at two
        # observations per request instead of k + 1
        now = self._clock()
        for ages in (user_rows.wall_time, rows.wall_time[order[:1]]):
            for age in now - ages:
                SERVED_ROW_AGE.observe(max(0.0, float(age)))
        names = self._names(ids[order])
        items = [
            ScoredItem(name if name is not None else str(int(row_id)), float(score))
            for row_id, name, score in zip(ids[order], names, scores[order], strict=True)
        ]
        model = self.models.current
        return Recommendation(
            items=items,
            model_version=None if model is None else model.version,
            index_version=int(self.retriever.version),
            fallback=fallback,
        )

    def _context_vector(self, context: Mapping[str, str | int | float]) -> np.ndarray:
        dim = self.contexts.config.dim
        if not context:
            return np.zeros(dim, dtype=np.float32)
        keys = np.array(context_ids(context), dtype=np.uint64)
        found = self.contexts.lookup(keys)
        return np.asarray(found.vectors.mean(axis=0), dtype=np.float32)

    def _score(
        self, user: np.ndarray, items: np.ndarray, context: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (or inner products before the first model) for `(N, D)` items."""
        index = np.arange(items.shape[0])
        if items.shape[0] == 0:
            return index, np.zeros(0, dtype=np.float32)
        model = self.models.current
        if model is None:
            return index, items @ user
        with torch.inference_mode():
            logits = model.model.score_candidates(
                torch.from_numpy(user), torch.from_numpy(items), torch.from_numpy(context)
            )
            probs = torch.sigmoid(logits + model.logit_offset)
        return index, probs.numpy()
