"""Serving-side scorers: the model and the rows a prediction is made from.

A `ScoringState` pairs a dense model with a source of rows. The live state reads the trainer's
own tables and model (between batches, so before the next batch trains); a snapshot is a
frozen copy of both, taken by looking up every row id the stream touches and deep-copying the
model, which is what a serving replica that synced at that moment would hold. Looking rows up
through `EmbeddingStore.lookup` gives a snapshot exactly the visibility serving has (rows not
admitted or expired read as their initial vectors) for any store, hashing included.

Scores are computed exactly as the trainer's forward pass computes them, with the product's
`RankingModel`: the context input is the mean of the example's context rows, and probabilities
are `sigmoid(ranking_logit + logit_offset)`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch

from freshrec.models.features import mean_pool
from freshrec.models.model import DEFAULT_LIKE_WEIGHT, RankingModel
from freshrec.offline.evaluation.metrics import expected_rank_metrics
from freshrec.table.base import EmbeddingStore, FloatArray, IdArray

__all__ = [
    "LiveRows",
    "RowSource",
    "ScoringState",
    "ServingOrder",
    "SnapshotRows",
    "Snapshotter",
    "Variant",
    "context_means",
    "model_scores",
    "predict",
    "rank_queries",
]


class RowSource(Protocol):
    """Where a scorer reads rows from."""

    def vectors(self, table: str, ids: IdArray) -> FloatArray:
        """`(B, D)` float32 vectors of `(B,)` ids of `table` (initial vectors where no row)."""
        ...


class LiveRows:
    """The trainer's tables as they are now."""

    def __init__(self, tables: Mapping[str, EmbeddingStore]) -> None:
        self.tables = tables

    def vectors(self, table: str, ids: IdArray) -> FloatArray:
        return self.tables[table].lookup(ids).vectors


class SnapshotRows:
    """A frozen copy of the rows of a fixed id universe.

    Args:
        universe: table name -> `(U,)` sorted unique uint64 ids; every id later asked for
            must be among them.
        vectors: table name -> `(U, D)` float32 vectors of those ids (owned by the snapshot).
    """

    def __init__(self, universe: Mapping[str, IdArray], vectors: Mapping[str, FloatArray]):
        self._ids = dict(universe)
        self._vectors = dict(vectors)

    @classmethod
    def lookup(
        cls, tables: Mapping[str, EmbeddingStore], universe: Mapping[str, IdArray]
    ) -> SnapshotRows:
        """Copy the universe's vectors as `tables` serve them now (one lookup per table)."""
        return cls(
            universe,
            {
                name: np.array(tables[name].lookup(ids).vectors, dtype=np.float32, copy=True)
                for name, ids in universe.items()
            },
        )

    def vectors(self, table: str, ids: IdArray) -> FloatArray:
        known = self._ids[table]
        pos = np.searchsorted(known, ids)
        if ids.shape[0] and (
            int(pos.max()) >= known.shape[0] or not np.array_equal(known[pos], ids)
        ):
            raise KeyError(f"snapshot of table {table!r} was asked for ids outside its universe")
        return self._vectors[table][pos]


@dataclass
class ScoringState:
    """A model and its rows, as one serving copy sees them.

    Attributes:
        key: identifies the trainer state this copy holds (the number of batches trained);
            two states with the same key score identically.
        rows: where rows are read.
        model: the dense model.
    """

    key: int
    rows: RowSource
    model: RankingModel

    @classmethod
    def snapshot(
        cls,
        key: int,
        tables: Mapping[str, EmbeddingStore],
        model: RankingModel,
        universe: Mapping[str, IdArray],
    ) -> ScoringState:
        """A frozen copy of `tables` (restricted to `universe`) and `model`.

        The straightforward way: a lookup of every id and a deep copy of the model.
        `Snapshotter` takes the same copy faster, many times over.
        """
        return cls(key, SnapshotRows.lookup(tables, universe), copy.deepcopy(model))


class Snapshotter:
    """Takes frozen copies of one replay's tables and model, cheaply and many times.

    Create it while the tables are still empty: it looks the whole universe up once, which
    yields every id's default vector exactly as each store defines it (its initial vector,
    or its bucket's for the hashing store). A snapshot is then those defaults overlaid with
    the rows that exist now (`read_rows`, so filtered and expired ids keep their defaults),
    and the model's parameters copied into a recycled model object.

    Args:
        tables: the replay's stores, empty.
        universe: table name -> `(U,)` sorted unique uint64 ids.
    """

    def __init__(self, tables: Mapping[str, EmbeddingStore], universe: Mapping[str, IdArray]):
        self.tables = tables
        self.universe = dict(universe)
        self._defaults = SnapshotRows.lookup(tables, universe)._vectors
        self._spare: list[RankingModel] = []

    def take(self, key: int, model: RankingModel) -> ScoringState:
        """A frozen copy of the tables and of `model`, identified as trainer state `key`."""
        vectors: dict[str, FloatArray] = {}
        for name, ids in self.universe.items():
            out = self._defaults[name].copy()
            rows = self.tables[name].read_rows(ids)
            if len(rows):
                out[np.searchsorted(ids, rows.ids)] = rows.vectors
            vectors[name] = out
        copied = self._spare.pop() if self._spare else RankingModel(model.config)
        copied.load_state_dict(model.state_dict())
        return ScoringState(key, SnapshotRows(self.universe, vectors), copied)

    def release(self, state: ScoringState) -> None:
        """Hand a snapshot's model back for reuse; the snapshot must not be used again."""
        self._spare.append(state.model)


def context_means(
    rows: RowSource,
    ctx_ids: IdArray,
    ctx_rows: npt.NDArray[np.int64],
    n: int,
    context_dim: int,
) -> torch.Tensor:
    """Mean context row of each of `n` examples, as the trainer computes it.

    Args:
        rows: the row source.
        ctx_ids: `(C,)` context row ids.
        ctx_rows: `(C,)` example index (in `[0, n)`) of each context id.
        n: number of examples.
        context_dim: width of context rows.

    Returns:
        `(n, context_dim)` float32; zeros for examples without context.
    """
    if ctx_ids.shape[0] == 0:
        return torch.zeros((n, context_dim))
    return mean_pool(_gather(rows, "context", ctx_ids), ctx_rows, n, context_dim)


def _gather(rows: RowSource, table: str, ids: IdArray) -> torch.Tensor:
    unique, inverse = np.unique(ids, return_inverse=True)
    return torch.from_numpy(rows.vectors(table, unique))[torch.from_numpy(inverse)]


Variant = Literal["serve", "retrieval", "no_user"]
"""How a serving copy scores: `serve` is the product's order (retrieval top-N re-ordered by
the serving score); `retrieval` the retrieval head alone, what FAISS serves before the
ranking head re-orders; `no_user` the serving order with every user row zeroed (what is
left without personalisation)."""


def predict(
    state: ScoringState,
    users: IdArray,
    items: IdArray,
    context: torch.Tensor,
    logit_offset: float,
    *,
    variant: Variant = "serve",
) -> npt.NDArray[np.float64]:
    """Predicted probabilities (preference) of `(user, item, context)` triples.

    Args:
        state: the serving copy.
        users: `(B,)` user row ids.
        items: `(B,)` item row ids.
        context: `(B, C)` mean context rows.
        logit_offset: added to the ranking logit (undoes negative subsampling).
        variant: `serve` and `no_user` give the ranking head's `P(like | interact)` (with
            zero user rows for `no_user`); `retrieval` the retrieval logit (a score, not a
            probability).

    Returns:
        `(B,)` float64 probabilities (scores for `retrieval`).
    """
    with torch.no_grad():
        user_rows = _gather(state.rows, "user", users)
        if variant == "no_user":
            user_rows = torch.zeros_like(user_rows)
        ranking, retrieval = state.model(user_rows, _gather(state.rows, "item", items), context)
        out = retrieval if variant == "retrieval" else torch.sigmoid(ranking + logit_offset)
        values: npt.NDArray[np.float64] = out.numpy().astype(np.float64)
    return values


def rank_queries(
    scores_of: Sequence[npt.NDArray[np.floating]],
    available: npt.NDArray[np.int64],
    target: npt.NDArray[np.int64],
    history: list[npt.NDArray[np.int64]],
    k: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Recall@k and NDCG@k of held items among their candidates.

    Args:
        scores_of: per query, `(M,)` scores of catalog items `[0, M)`, `M > target`.
        available: `(Q,)` catalog items `[0, available)` are candidates.
        target: `(Q,)` catalog index of the held item (always a candidate).
        history: per query, catalog indexes excluded (the user's earlier items).
        k: the cut-off.

    Returns:
        `(Q,)` recall and `(Q,)` NDCG, expected over random tie-breaking.
    """
    q = len(scores_of)
    recall = np.empty(q, dtype=np.float64)
    ndcg = np.empty(q, dtype=np.float64)
    for i in range(q):
        scores = scores_of[i]
        valid = np.zeros(scores.shape[0], dtype=np.bool_)
        valid[: int(available[i])] = True
        valid[history[i]] = False
        held = int(target[i])
        valid[held] = False
        own = scores[held]
        greater = int(np.count_nonzero(valid & (scores > own)))
        ties = int(np.count_nonzero(valid & (scores == own)))
        recall[i], ndcg[i] = expected_rank_metrics(greater, ties, k)
    return recall, ndcg


def model_scores(
    state: ScoringState,
    users: IdArray,
    context: torch.Tensor,
    catalog: IdArray,
    sizes: npt.NDArray[np.int64],
    *,
    history: Sequence[npt.NDArray[np.int64]],
    serving: ServingOrder,
    variant: Variant = "serve",
) -> list[npt.NDArray[np.float32]]:
    """Serving scores of catalog prefixes, one batched pass per query.

    With `serving.candidates`, only the retrieval head's top candidates (the user's
    earlier items excluded, as the ranker asks FAISS) keep their serving score; the rest
    score `-inf`, which is what the live ranker does by never seeing them.

    Args:
        state: the serving copy.
        users: `(Q,)` user row ids.
        context: `(Q, C)` mean context rows.
        catalog: `(I,)` item row ids.
        sizes: `(Q,)` how many leading catalog items each query scores.
        history: per query, catalog indexes the user interacted with (not candidates).
        serving: how the serving score combines the heads.
        variant: see `Variant`.

    Returns:
        Per query, `(sizes[q],)` float32 scores.
    """
    if users.shape[0] == 0:
        return []
    longest = int(sizes.max())
    out: list[npt.NDArray[np.float32]] = []
    with torch.no_grad():
        items = torch.from_numpy(state.rows.vectors("item", catalog[:longest]))
        user_rows = _gather(state.rows, "user", users)
        if variant == "no_user":
            user_rows = torch.zeros_like(user_rows)
        weight = 0.0 if variant == "retrieval" else serving.like_weight
        for q in range(users.shape[0]):
            size = int(sizes[q])
            grid_items = items[:size].unsqueeze(0)
            user = user_rows[q : q + 1]
            scores = state.model.serving_grid(
                user,
                grid_items,
                context[q : q + 1],
                like_weight=weight,
                logit_offset=serving.logit_offset,
            )[0].numpy()
            if serving.candidates is not None and weight != 0.0 and size > serving.candidates:
                retrieval = state.model.retrieval_grid(user, grid_items)[0].numpy().copy()
                retrieval[history[q]] = -np.inf
                kept = np.argpartition(-retrieval, serving.candidates - 1)[: serving.candidates]
                cut = np.full(size, -np.inf, dtype=np.float32)
                cut[kept] = scores[kept]
                scores = cut
            out.append(scores)
    return out


@dataclass(frozen=True)
class ServingOrder:
    """How served candidates are ordered (the ranker's settings, mirrored).

    Attributes:
        like_weight: weight of `log P(like | interact)` against `log P(interact)`.
        logit_offset: added to ranking logits (undoes negative subsampling).
        candidates: retrieval candidates the ranking head re-orders (None: every item).
    """

    like_weight: float = DEFAULT_LIKE_WEIGHT
    logit_offset: float = 0.0
    candidates: int | None = 500
