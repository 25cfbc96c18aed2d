"""The peers any practitioner tries first, replayed beside `online` on the same queries.

- **Item-to-item co-occurrence** (`Cooccurrence`): an online item-item recommender. Two items
  co-occur when one user interacted with both; the similarity is the cosine of their user
  sets, `C[a, b] / sqrt(n_a n_b)`, and a user's score of item `i` is the sum of `i`'s
  similarities to the items in the user's history. Counts are updated after every batch,
  like the live model, so a query sees every interaction before its batch.
- **Matrix factorisation** (`PeriodicAls`): `implicit`'s ALS (Hu, Koren & Volinsky 2008)
  refitted on every interaction so far once per day of event time (before the first batch
  of a new day); the item factors are served unchanged until the next refit, and a user's
  factors are folded in from their history so far (`recalculate_user`, one least-squares
  solve against the fixed item factors, as a practitioner serves users the last fit has not
  seen: most MovieLens users rate most of their films within a day of arriving). `implicit`
  is an optional dependency (the `eval` extra); `als_unavailable` says why it cannot run.
- **Popularity** lives in `prequential.py` (it predates the peers).

Every peer scores (a) each example's (user, item) pair, for the preference AUC (liked vs not
among rated pairs; the scores are not probabilities, so no log loss), and (b) each ranking
query over the same candidates as the model (every item seen before the query, minus the
user's earlier items), with the same tie-aware Recall@k and NDCG@k.

An interaction is a rating, click, like or purchase (`EvalStream.event_interaction`), of
any value: the peers learn what users interact with, the quantity the queries ask about.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from freshrec.offline.evaluation.scoring import rank_queries
from freshrec.offline.evaluation.stream import EvalStream

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["AlsConfig", "Cooccurrence", "PeriodicAls", "als_unavailable"]

logger = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]

_DAY_S = 86_400.0
MAX_DENSE_ITEMS = 30_000
"""The co-occurrence peer keeps a dense item-item matrix: it refuses larger catalogs."""


@dataclass(frozen=True)
class AlsConfig:
    """Knobs of the periodically refitted ALS peer (chosen on the first half; see
    `docs/evaluation.md`).

    Attributes:
        factors: latent dimension.
        regularization: L2 weight.
        alpha: confidence of an observed interaction (`1 + alpha`).
        iterations: ALS sweeps per refit.
        refit_every_s: refit period in event time.
    """

    factors: int = 64
    regularization: float = 10.0
    alpha: float = 5.0
    iterations: int = 15
    refit_every_s: float = _DAY_S


def als_unavailable() -> str | None:
    """Why the ALS peer cannot run here (None: it can)."""
    try:
        import implicit  # noqa: F401, PLC0415
    except ImportError as exc:
        return (
            f"implicit is not installed ({exc}); install the eval extra: "
            "pip install 'freshrec[eval]' (make eval does)"
        )
    return None


class _Interactions:
    """Distinct (user, item) interactions so far, and each user's history in order."""

    def __init__(self, stream: EvalStream) -> None:
        self.stream = stream
        self.history: dict[int, list[int]] = {}
        self._seen: set[tuple[int, int]] = set()

    def add(self, start: int, end: int) -> Iterator[tuple[int, int, list[int]]]:
        """Record events `[start, end)`; yields each new (user, item, history before it)."""
        s = self.stream
        for e in range(start, end):
            if not s.event_interaction[e]:
                continue
            user, item = int(s.event_user[e]), int(s.event_item[e])
            if (user, item) in self._seen:
                continue
            self._seen.add((user, item))
            past = self.history.setdefault(user, [])
            yield user, item, past
            past.append(item)


def _query_users(stream: EvalStream, lo: int, q_local: npt.NDArray[np.int64]) -> list[int]:
    return [int(u) for u in stream.ex_user_index[lo + q_local]]


class _Peer:
    """What both peers share: ranking one batch's queries from their per-user item scores."""

    stream: EvalStream

    def query_scores(self, users: list[int], sizes: npt.NDArray[np.int64]) -> list[Float64Array]:
        """Each query user's scores of the first `size` items (the items seen so far)."""
        raise NotImplementedError

    def ranks(
        self,
        lo: int,
        *,
        q_local: npt.NDArray[np.int64],
        sizes: npt.NDArray[np.int64],
        available: npt.NDArray[np.int64],
        target: npt.NDArray[np.int64],
        history: list[npt.NDArray[np.int64]],
        k: int,
    ) -> tuple[Float64Array, Float64Array]:
        """Recall@k and NDCG@k of one batch's queries."""
        scores = self.query_scores(_query_users(self.stream, lo, q_local), sizes)
        return rank_queries(scores, available, target, history, k)


class Cooccurrence(_Peer):
    """Online item-to-item co-occurrence with cosine normalisation.

    Args:
        stream: the replayed stream.
        recent: score from the user's last `recent` items only (None: the whole history);
            co-occurrence is counted over whole histories either way.
    """

    def __init__(self, stream: EvalStream, recent: int | None = None) -> None:
        size = int(stream.catalog.shape[0])
        if size > MAX_DENSE_ITEMS:
            raise ValueError(
                f"the co-occurrence peer keeps a dense {size} x {size} matrix; "
                f"catalogs over {MAX_DENSE_ITEMS:,} items are not supported"
            )
        self.stream = stream
        self.recent = recent
        self.counts = np.zeros((size, size), dtype=np.float32)
        self.users_of = np.zeros(size, dtype=np.float64)
        self.seen = _Interactions(stream)

    def _history(self, user: int) -> list[int]:
        history = self.seen.history.get(user, [])
        return history if self.recent is None else history[-self.recent :]

    def _user_scores(self, user: int, size: int) -> Float64Array:
        history = self._history(user)
        if not history:
            return np.zeros(size)
        h = np.asarray(history, dtype=np.int64)
        weights = 1.0 / np.sqrt(self.users_of[h])
        summed = weights @ self.counts[h, :size].astype(np.float64)
        norm = np.sqrt(self.users_of[:size])
        return np.divide(summed, norm, out=np.zeros(size), where=norm > 0)

    def pair_scores(self, lo: int, hi: int) -> Float64Array:
        """`(hi - lo,)` scores of examples `[lo, hi)`'s (user, item) pairs."""
        s = self.stream
        out = np.zeros(hi - lo)
        for x in range(lo, hi):
            item = int(s.ex_item_index[x])
            history = self._history(int(s.ex_user_index[x]))
            if item < 0 or not history or self.users_of[item] == 0:
                continue
            h = np.asarray(history, dtype=np.int64)
            out[x - lo] = float(
                (self.counts[h, item] / np.sqrt(self.users_of[h] * self.users_of[item])).sum()
            )
        return out

    def query_scores(self, users: list[int], sizes: npt.NDArray[np.int64]) -> list[Float64Array]:
        return [self._user_scores(u, int(n)) for u, n in zip(users, sizes, strict=True)]

    def update(self, start: int, end: int) -> None:
        """Add the interactions of events `[start, end)`."""
        for _, item, past in self.seen.add(start, end):
            if past:
                h = np.asarray(past, dtype=np.int64)
                self.counts[item, h] += 1.0
                self.counts[h, item] += 1.0
            self.users_of[item] += 1.0


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    with threadpool_limits(1), warnings.catch_warnings():
        # implicit warns about BLAS thread settings it cannot see we already limited
        warnings.simplefilter("ignore")
        yield


class PeriodicAls(_Peer):
    """`implicit` ALS refitted on all interactions so far once per `refit_every_s`."""

    def __init__(self, stream: EvalStream, config: AlsConfig, seed: int) -> None:
        reason = als_unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        self.stream = stream
        self.config = config
        self.seed = seed
        self.seen = _Interactions(stream)
        self.users: list[int] = []
        self.items: list[int] = []
        self.item_factors = np.zeros((0, config.factors))
        self.fitted_period = -math.inf
        self.fits = 0
        self._model: Any = None
        self._folded: dict[int, Float64Array | None] = {}  # per batch: user -> factors

    def before_batch(self, start: int) -> None:
        """Refit when event `start` opens a new period (on everything before it)."""
        period = math.floor(float(self.stream.event_time[start]) / self.config.refit_every_s)
        self._folded.clear()  # histories grew with the last batch
        if period <= self.fitted_period:
            return
        self.fitted_period = period
        if self.users:
            self._fit()

    def _fit(self) -> None:
        from implicit.cpu.als import AlternatingLeastSquares  # noqa: PLC0415
        from scipy.sparse import csr_matrix  # noqa: PLC0415

        n_users = max(self.users) + 1
        n_items = max(self.items) + 1
        matrix = csr_matrix(
            (np.ones(len(self.users), dtype=np.float32), (self.users, self.items)),
            shape=(n_users, n_items),
        )
        c = self.config
        with _one_thread():
            model: Any = AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                num_threads=1,
                random_state=self.seed,
            )
            model.fit(matrix, show_progress=False)
        self._model = model
        self.item_factors = np.asarray(model.item_factors, dtype=np.float64)
        self.fits += 1

    def _fold_in(self, users: list[int]) -> None:
        """Factors of `users` from their histories so far against the fitted items."""
        from scipy.sparse import csr_matrix  # noqa: PLC0415

        todo = [u for u in dict.fromkeys(users) if u not in self._folded]
        if not todo:
            return
        fitted = self.item_factors.shape[0]
        histories = [
            [i for i in self.seen.history.get(u, []) if i < fitted] if self._model else []
            for u in todo
        ]
        ask = [k for k, h in enumerate(histories) if h]
        for u in todo:
            self._folded[u] = None
        if not ask:
            return
        rows = np.repeat(np.arange(len(ask)), [len(histories[k]) for k in ask])
        cols = np.concatenate([np.asarray(histories[k], dtype=np.int64) for k in ask])
        matrix = csr_matrix(
            (np.ones(cols.shape[0], dtype=np.float32), (rows, cols)), shape=(len(ask), fitted)
        )
        with _one_thread():
            factors = self._model.recalculate_user(np.arange(len(ask)), matrix)
        for j, k in enumerate(ask):
            self._folded[todo[k]] = np.asarray(factors[j], dtype=np.float64)

    def _user_row(self, user: int) -> Float64Array | None:
        self._fold_in([user])
        return self._folded[user]

    def _item_scores(self, row: Float64Array | None, size: int) -> Float64Array:
        out = np.zeros(size)
        if row is None:
            return out
        known = min(size, self.item_factors.shape[0])
        out[:known] = self.item_factors[:known] @ row
        return out

    def pair_scores(self, lo: int, hi: int) -> Float64Array:
        """`(hi - lo,)` scores of examples `[lo, hi)`'s (user, item) pairs."""
        s = self.stream
        out = np.zeros(hi - lo)
        self._fold_in([int(u) for u in s.ex_user_index[lo:hi]])
        for x in range(lo, hi):
            row = self._user_row(int(s.ex_user_index[x]))
            item = int(s.ex_item_index[x])
            if row is not None and 0 <= item < self.item_factors.shape[0]:
                out[x - lo] = float(self.item_factors[item] @ row)
        return out

    def query_scores(self, users: list[int], sizes: npt.NDArray[np.int64]) -> list[Float64Array]:
        self._fold_in(users)
        return [
            self._item_scores(self._user_row(u), int(n)) for u, n in zip(users, sizes, strict=True)
        ]

    def update(self, start: int, end: int) -> None:
        """Add the interactions of events `[start, end)` (used from the next refit on)."""
        for user, item, _ in self.seen.add(start, end):
            self.users.append(user)
            self.items.append(item)
