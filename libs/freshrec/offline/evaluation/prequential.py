"""One prequential replay: the product's `OnlineTrainer` over the stream, scored before training.

For every micro-batch the harness first scores the batch's examples (and ranking queries)
with each serving copy, then hands the batch's messages to `OnlineTrainer.train_batch`, so
no prediction ever sees its own label. The serving copies of one replay share its trainer:

- the live copy (`online`, `hashing`, or a sweep setting) reads the trainer's tables and
  model as they are before the batch;
- a stale copy with sync interval `X` serves, for an example at event time `t`, the newest
  trainer state trained only on events before the last sync boundary
  ``b = floor(t / X) * X`` (state `S_j`, trained on batches `< j`, qualifies when the last
  event of batch `j - 1` is earlier than `b`). A state is snapshotted just before the batch
  that would overwrite it, and only when some later example will be served from it;
- the frozen copy serves the state trained on everything before `frozen_at` (the batch plan
  cuts there) for the rest of the stream; before `frozen_at` it is the live copy;
- popularity serves counts gathered up to the start of the batch, like the live copy;
- the peers (`peers.py`: item-to-item co-occurrence, periodically refitted ALS) are
  updated with each batch's interactions after it trained, like the live copy.

States are identified by the number of batches trained, so copies holding the same state
share their scores instead of recomputing them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from freshrec.models.model import DEFAULT_LIKE_WEIGHT
from freshrec.offline.evaluation.metrics import MethodScores
from freshrec.offline.evaluation.peers import AlsConfig, Cooccurrence, PeriodicAls
from freshrec.offline.evaluation.scoring import (
    LiveRows,
    ScoringState,
    ServingOrder,
    Snapshotter,
    Variant,
    context_means,
    model_scores,
    predict,
    rank_queries,
)
from freshrec.offline.evaluation.stream import EvalStream
from freshrec.table.base import EmbeddingStore
from freshrec.table.tables import Tables
from freshrec.training.auc import StreamingAuc
from freshrec.training.trainer import OnlineTrainer, TrainerConfig

__all__ = ["RunResult", "ServingPlan", "replay_run"]

logger = logging.getLogger(__name__)


def _replay_clock() -> float:
    # The replay has no wall clock: a constant keeps the trainer's wall-clock cadences
    # (publishing, table stats) out of the figures; no table here expires on wall time.
    return 0.0


@dataclass(frozen=True)
class ServingPlan:
    """Which serving copies one replay scores, and how.

    Attributes:
        live: method name of the live copy.
        staleness: (method name, sync interval in seconds of event time) of stale copies.
        frozen: method name of the frozen copy (None: none).
        frozen_at: event time the frozen copy stops learning at (needed with `frozen`).
        popularity: method name of the popularity baseline (None: none).
        popularity_prior: pseudo-count shrinking an item's positive share to the global one.
        ranking: answer the stream's ranking queries.
        k: ranking cut-off.
        trainer_auc_window: window of the trainer's own AUC gauge (None: its default).
        cooccurrence: method name of the item-to-item co-occurrence peer (None: none).
        als: method name of the periodically refitted ALS peer (None: none).
        als_config: the ALS peer's knobs.
        cooccurrence_recent: the co-occurrence peer's history window (None: all).
        seed: seeds the ALS peer.
        variants: (method name, `Variant`) of extra ways to score the live copy (the
            retrieval head alone, zeroed user rows).
        like_weight: the serving order's weight of `log P(like | interact)`.
        candidates: retrieval candidates the ranking head re-orders (None: all items).
    """

    live: str
    staleness: tuple[tuple[str, float], ...] = ()
    frozen: str | None = None
    frozen_at: float | None = None
    popularity: str | None = None
    popularity_prior: float = 10.0
    ranking: bool = True
    k: int = 50
    trainer_auc_window: int | None = None
    cooccurrence: str | None = None
    als: str | None = None
    als_config: AlsConfig = field(default_factory=AlsConfig)
    cooccurrence_recent: int | None = None
    seed: int = 0
    variants: tuple[tuple[str, Variant], ...] = ()
    like_weight: float = DEFAULT_LIKE_WEIGHT
    candidates: int | None = 500

    def methods(self) -> list[str]:
        """Every method name this plan scores."""
        names = [self.live, *(name for name, _ in self.variants)]
        names += [name for name, _ in self.staleness]
        names += [
            n for n in (self.frozen, self.popularity, self.cooccurrence, self.als) if n is not None
        ]
        return names


@dataclass(frozen=True)
class RunResult:
    """What one replay produced.

    Attributes:
        scores: method name -> its predictions.
        rows: table name -> rows kept at the end (after a last event-time expiry pass).
        rows_per_window: user + item rows at the end of each window.
        trainer_auc: the trainer's own streaming AUC at the end (over its gauge's window).
        batches: micro-batches trained.
        seconds: wall time of the replay.
        als_fits: how often the ALS peer was refitted.
    """

    scores: dict[str, MethodScores]
    rows: dict[str, int]
    rows_per_window: list[int]
    trainer_auc: float
    batches: int
    seconds: float
    als_fits: int = 0


def _served_later(after: float, upto: float, upcoming: float, interval: float) -> bool:
    """Whether a copy syncing every `interval` will serve the state trained up to `after`.

    That state is the newest one trained before a sync boundary `b` (a multiple of
    `interval`) when `after < b <= upto`, `upto` being where the next state's training data
    ends; examples from `upcoming` on ask for boundaries `b >= floor(upcoming / interval) *
    interval`.
    """
    if math.isinf(upcoming):
        return False
    lowest = math.floor(upcoming / interval) * interval
    if not math.isinf(after):
        lowest = max(lowest, (math.floor(after / interval) + 1) * interval)
    return lowest <= upto


class _BatchScores:
    """Scores of one batch's examples and queries, cached per trainer state."""

    def __init__(
        self,
        stream: EvalStream,
        *,
        examples: tuple[int, int],
        queries: tuple[int, int],
        config: TrainerConfig,
        k: int,
        ranking: bool,
        serving: ServingOrder,
    ) -> None:
        lo, hi = examples
        qlo, qhi = queries
        self.stream = stream
        self.lo, self.hi, self.qlo, self.qhi = lo, hi, qlo, qhi
        self.ranking = ranking and qhi > qlo
        self.n = hi - lo
        self.users = stream.ex_user[lo:hi]
        self.items = stream.ex_item[lo:hi]
        self.ctx_ids, self.ctx_rows = stream.context_slice(lo, hi)
        asked = stream.queries
        self.q_local = asked.example[qlo:qhi] - lo
        self.available = asked.available[qlo:qhi]
        self.target = asked.target[qlo:qhi]
        self.history = asked.history[qlo:qhi]
        self.sizes = np.maximum(self.available, self.target + 1)
        self.context_dim = config.model.context_dim
        self.offset = config.examples.logit_offset
        self.k = k
        self.serving = serving
        self._context: dict[int, torch.Tensor] = {}
        self._probs: dict[tuple[int, Variant], npt.NDArray[np.float64]] = {}
        self._recall: dict[tuple[int, Variant], npt.NDArray[np.float64]] = {}
        self._ndcg: dict[tuple[int, Variant], npt.NDArray[np.float64]] = {}

    def _context_of(self, state: ScoringState) -> torch.Tensor:
        if state.key not in self._context:
            self._context[state.key] = context_means(
                state.rows, self.ctx_ids, self.ctx_rows, self.n, self.context_dim
            )
        return self._context[state.key]

    def probs(self, state: ScoringState, variant: Variant = "serve") -> npt.NDArray[np.float64]:
        """`(n,)` probabilities of the batch's examples under `state`."""
        key = (state.key, variant)
        if key not in self._probs:
            self._probs[key] = predict(
                state, self.users, self.items, self._context_of(state), self.offset, variant=variant
            )
        return self._probs[key]

    def ranks(
        self, state: ScoringState, which: npt.NDArray[np.bool_], variant: Variant = "serve"
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Recall and NDCG of the batch's queries under `state`, computed where `which`."""
        key = (state.key, variant)
        recall = self._recall.setdefault(key, np.full(self.q_local.shape[0], np.nan))
        ndcg = self._ndcg.setdefault(key, np.full(self.q_local.shape[0], np.nan))
        todo = np.flatnonzero(which & np.isnan(recall))
        if todo.size:
            local = self.q_local[todo]
            scores = model_scores(
                state,
                self.users[local],
                self._context_of(state)[torch.from_numpy(local)],
                self.stream.catalog,
                self.sizes[todo],
                history=[self.history[int(i)] for i in todo],
                serving=self.serving,
                variant=variant,
            )
            recall[todo], ndcg[todo] = rank_queries(
                scores,
                self.available[todo],
                self.target[todo],
                [self.history[int(i)] for i in todo],
                self.k,
            )
        return recall, ndcg

    def record(
        self,
        target: MethodScores,
        state: ScoringState,
        examples: npt.NDArray[np.bool_],
        variant: Variant = "serve",
    ) -> None:
        """Store `state`'s scores of the selected examples, and of their queries, in `target`."""
        target.probs[self.lo : self.hi][examples] = self.probs(state, variant)[examples]
        if self.ranking:
            asked = examples[self.q_local]
            recall, ndcg = self.ranks(state, asked, variant)
            target.recall[self.qlo : self.qhi][asked] = recall[asked]
            target.ndcg[self.qlo : self.qhi][asked] = ndcg[asked]


class _Popularity:
    """Counts gathered so far: interactions per item (ranking) and positive shares (probs)."""

    def __init__(self, stream: EvalStream, prior: float) -> None:
        size = int(stream.catalog.shape[0])
        self.stream = stream
        self.prior = prior
        self.interactions = np.zeros(size, dtype=np.float64)
        self.examples = np.zeros(size, dtype=np.float64)
        self.positives = np.zeros(size, dtype=np.float64)
        self.total = 0.0
        self.total_positive = 0.0

    def probs(self, lo: int, hi: int) -> npt.NDArray[np.float64]:
        index = self.stream.ex_item_index[lo:hi]
        known = index >= 0
        base = (self.total_positive + 1.0) / (self.total + 2.0)
        n = np.zeros(hi - lo)
        pos = np.zeros(hi - lo)
        n[known] = self.examples[index[known]]
        pos[known] = self.positives[index[known]]
        denominator = n + self.prior
        shrunk = (pos + self.prior * base) / np.where(denominator > 0, denominator, 1.0)
        return np.where(denominator > 0, shrunk, base)

    def ranks(
        self, batch: _BatchScores, k: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        scores = [self.interactions[: int(size)] for size in batch.sizes]
        return rank_queries(scores, batch.available, batch.target, batch.history, k)

    def update(self, start: int, end: int, lo: int, hi: int) -> None:
        np.add.at(self.interactions, self.stream.event_item[start:end], 1.0)
        index = self.stream.ex_item_index[lo:hi]
        labels = self.stream.ex_label[lo:hi]
        known = index >= 0
        np.add.at(self.examples, index[known], 1.0)
        np.add.at(self.positives, index[known], labels[known])
        self.total += float(hi - lo)
        self.total_positive += float(labels.sum())


def replay_run(
    stream: EvalStream,
    tables: Tables,
    *,
    trainer_config: TrainerConfig,
    batches: list[tuple[int, int]],
    plan: ServingPlan,
    on_batch: Callable[[int], None] | None = None,
) -> RunResult:
    """Replay the stream through a fresh `OnlineTrainer`, scoring before each batch trains.

    Args:
        stream: the prepared stream.
        tables: empty `user`, `item` and `context` stores on one backend.
        trainer_config: the trainer's knobs.
        batches: `(start, end)` event ranges from `plan_batches` (cut at `plan.frozen_at`).
        plan: the serving copies to score.
        on_batch: called with the number of events of each trained batch (progress).

    Returns:
        Every method's predictions, row counts and timing.

    Raises:
        RuntimeError: the trainer built other examples than the harness scored.
    """
    started = time.perf_counter()
    trainer = OnlineTrainer(tables, trainer_config, clock=_replay_clock)
    serving = ServingOrder(
        like_weight=plan.like_weight,
        logit_offset=trainer_config.examples.logit_offset,
        candidates=plan.candidates,
    )
    snapshotter = (
        Snapshotter(tables.by_name(), stream.universe) if plan.staleness or plan.frozen else None
    )
    if plan.trainer_auc_window is not None:
        trainer.auc = StreamingAuc(window=plan.trainer_auc_window)
    live_rows = LiveRows(tables.by_name())
    n_queries = len(stream.queries) if plan.ranking else 0
    scores = {m: MethodScores.empty(stream.n_examples, n_queries) for m in plan.methods()}
    intervals = [interval for _, interval in plan.staleness]
    frozen_start = stream.n_events
    if plan.frozen is not None:
        if plan.frozen_at is None:
            raise ValueError("a frozen copy needs frozen_at")
        frozen_start = int(np.searchsorted(stream.event_time, plan.frozen_at, side="left"))
    frozen_state: ScoringState | None = None
    snap_ends: list[float] = []
    snap_states: list[ScoringState] = []
    popularity = _Popularity(stream, plan.popularity_prior) if plan.popularity is not None else None
    peers: dict[str, Cooccurrence | PeriodicAls] = {}
    if plan.cooccurrence is not None:
        peers[plan.cooccurrence] = Cooccurrence(stream, plan.cooccurrence_recent)
    if plan.als is not None:
        peers[plan.als] = PeriodicAls(stream, plan.als_config, plan.seed)
    windows = stream.window_edges.shape[0] - 1
    next_window = 1
    rows_per_window: list[int] = []
    previous_end = -math.inf  # last event time the live state has trained on

    for number, (start, end) in enumerate(batches):
        lo, hi = stream.example_range(start, end)
        qlo, qhi = stream.query_range(lo, hi) if plan.ranking else (0, 0)
        batch_end = float(stream.event_time[end - 1])
        live = ScoringState(number, live_rows, trainer.model)
        snapshot: ScoringState | None = None
        if snapshotter is not None and frozen_state is None and start >= frozen_start:
            snapshot = frozen_state = snapshotter.take(number, trainer.model)
        upcoming = float(stream.event_time[end]) if end < stream.n_events else math.inf
        if snapshotter is not None and any(
            _served_later(previous_end, batch_end, upcoming, x) for x in intervals
        ):
            snapshot = snapshot or snapshotter.take(number, trainer.model)
            snap_ends.append(previous_end)
            snap_states.append(snapshot)

        batch = _BatchScores(
            stream,
            examples=(lo, hi),
            queries=(qlo, qhi),
            config=trainer_config,
            k=plan.k,
            ranking=plan.ranking,
            serving=serving,
        )
        everything = np.ones(hi - lo, dtype=np.bool_)
        batch.record(scores[plan.live], live, everything)
        for name, variant in plan.variants:
            batch.record(scores[name], live, everything, variant)
        times = stream.ex_time[lo:hi]
        for name, interval in plan.staleness:
            boundary = np.floor(times / interval) * interval
            fresh = boundary > previous_end
            batch.record(scores[name], live, fresh)
            chosen = np.searchsorted(np.array(snap_ends), boundary, side="left") - 1
            if (chosen[~fresh] < 0).any():
                raise RuntimeError(f"batch {number}: {name} needs a state that was not kept")
            for index in np.unique(chosen[~fresh]).tolist():
                batch.record(scores[name], snap_states[index], (~fresh) & (chosen == index))
        if plan.frozen is not None:
            batch.record(
                scores[plan.frozen], frozen_state if frozen_state is not None else live, everything
            )
        if popularity is not None and plan.popularity is not None:
            target = scores[plan.popularity]
            target.probs[lo:hi] = popularity.probs(lo, hi)
            if batch.ranking:
                target.recall[qlo:qhi], target.ndcg[qlo:qhi] = popularity.ranks(batch, plan.k)
        for name, peer in peers.items():
            if isinstance(peer, PeriodicAls):
                peer.before_batch(start)
            target = scores[name]
            target.probs[lo:hi] = peer.pair_scores(lo, hi)
            if batch.ranking:
                target.recall[qlo:qhi], target.ndcg[qlo:qhi] = peer.ranks(
                    lo,
                    q_local=batch.q_local,
                    sizes=batch.sizes,
                    available=batch.available,
                    target=batch.target,
                    history=batch.history,
                    k=plan.k,
                )

        report = trainer.train_batch(stream.messages[start:end])
        if report.examples != hi - lo or report.dead_letters:
            raise RuntimeError(
                f"batch {number}: the trainer built {report.examples} examples "
                f"({report.dead_letters} dead letters), the harness scored {hi - lo}"
            )
        if popularity is not None:
            popularity.update(start, end, lo, hi)
        for peer in peers.values():
            peer.update(start, end)
        previous_end = batch_end

        if snapshotter is not None and snap_states and end < stream.n_events:
            keep = len(snap_states) - 1
            for interval in intervals:
                # the oldest snapshot any later example of this copy can still ask for
                next_boundary = math.floor(upcoming / interval) * interval
                index = int(np.searchsorted(np.array(snap_ends), next_boundary, side="left")) - 1
                keep = min(keep, max(index, 0))
            for gone in snap_states[:keep]:
                if gone is not frozen_state:
                    snapshotter.release(gone)
            del snap_ends[:keep], snap_states[:keep]
        while next_window <= windows and end >= int(stream.window_edges[next_window]):
            rows_per_window.append(_rows((tables.user, tables.item)))
            next_window += 1
        if on_batch is not None:
            on_batch(end - start)

    watermark = trainer.builder.watermark
    for store in tables:
        if store.config.expiry is not None and store.config.expiry.clock == "event":
            store.expire(watermark)
    rows = {store.config.name: store.stats().rows for store in tables}
    seconds = time.perf_counter() - started
    logger.info(
        "replay %s: %d batches, %d examples, %.1f s",
        plan.live,
        len(batches),
        stream.n_examples,
        seconds,
    )
    return RunResult(
        scores=scores,
        rows=rows,
        rows_per_window=rows_per_window,
        trainer_auc=trainer.auc.value(),
        batches=len(batches),
        seconds=seconds,
        als_fits=sum(p.fits for p in peers.values() if isinstance(p, PeriodicAls)),
    )


def _rows(stores: tuple[EmbeddingStore, ...]) -> int:
    return sum(store.stats().rows for store in stores)
