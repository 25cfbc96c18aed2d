"""One replay: predictions made before training, stale and frozen serving copies."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from freshrec.offline.evaluation import ServingPlan, plan_batches, prepare_stream, replay_run
from freshrec.offline.evaluation.scoring import ScoringState, context_means, predict
from freshrec.offline.evaluation.stream import EvalStream
from freshrec.settings import default_table_config_path
from freshrec.table import InMemoryTableBackend, Tables, load_tables, open_tables
from freshrec.training import OnlineTrainer, TrainerConfig, auc

CONFIG = TrainerConfig()
BATCH_SIZE = 4
TABLES = load_tables(default_table_config_path())


def _stream(ratings: Any, n: int = 240) -> EvalStream:
    return prepare_stream(
        ratings(n, days=6.0), examples=CONFIG.examples, windows=2, rank_sample=0.5, seed=0
    )


def _tables() -> Tables:
    return open_tables(TABLES, InMemoryTableBackend())


def _reference(
    stream: EvalStream, batches: list[tuple[int, int]], pick: Any
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Probabilities from a snapshot of every trainer state, chosen per example by `pick`.

    `pick(t, ends)` gets an example's event time and the data end of every state so far
    (state j has trained on events up to ends[j]) and returns the state to score with.
    """
    tables = _tables()
    trainer = OnlineTrainer(tables, CONFIG, clock=lambda: 0.0)
    states: list[ScoringState] = []
    ends: list[float] = []
    out = np.full(stream.n_examples, np.nan)
    for number, (start, end) in enumerate(batches):
        states.append(
            ScoringState.snapshot(number, tables.by_name(), trainer.model, stream.universe)
        )
        ends.append(float(stream.event_time[start - 1]) if start else -math.inf)
        lo, hi = stream.example_range(start, end)
        ctx_ids, ctx_rows = stream.context_slice(lo, hi)
        for x in range(lo, hi):
            state = states[pick(float(stream.ex_time[x]), ends)]
            mine = ctx_rows == x - lo
            context = context_means(
                state.rows, ctx_ids[mine], np.zeros(int(mine.sum()), dtype=np.int64), 1, 8
            )
            out[x] = predict(
                state, stream.ex_user[x : x + 1], stream.ex_item[x : x + 1], context, 0.0
            )[0]
        trainer.train_batch(stream.messages[start:end])
    return out


def test_online_scores_match_the_trainers_own_pre_update_auc(ratings: Any) -> None:
    stream = _stream(ratings)
    batches = plan_batches(stream.event_time, BATCH_SIZE, None)
    run = replay_run(
        stream,
        _tables(),
        trainer_config=CONFIG,
        batches=batches,
        plan=ServingPlan(live="online", ranking=False),
    )
    probs = run.scores["online"].probs
    assert not np.isnan(probs).any()
    # the trainer keeps an AUC of its own forward pass before each update (last 20k
    # examples, so all of these): the harness's scores must be those same predictions
    assert auc(probs, stream.ex_label) == run.trainer_auc
    assert run.batches == len(batches)
    assert sum(run.rows[t] for t in ("user", "item")) == run.rows_per_window[-1]


def test_stale_copies_serve_the_newest_state_trained_before_their_last_sync(
    ratings: Any,
) -> None:
    stream = _stream(ratings)
    batches = plan_batches(stream.event_time, BATCH_SIZE, None)
    plan = ServingPlan(
        live="online", staleness=(("stale_10min", 600.0), ("stale_1d", 86400.0)), ranking=True
    )
    torch.manual_seed(0)
    run = replay_run(stream, _tables(), trainer_config=CONFIG, batches=batches, plan=plan)
    online = run.scores["online"].probs
    for name, interval in plan.staleness:

        def pick(t: float, ends: list[float], interval: float = interval) -> int:
            boundary = math.floor(t / interval) * interval
            return max(j for j, end in enumerate(ends) if end < boundary)

        expected = _reference(stream, batches, pick)
        got = run.scores[name].probs
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
        stale = ~np.isclose(got, online, rtol=1e-5, atol=1e-7)
        # sessions span several 4-event batches, so both copies really lag
        assert stale.mean() > 0.2, (name, stale.mean())
        assert not np.isnan(run.scores[name].recall).any()
    assert (run.scores["stale_1d"].probs != online).sum() > (
        run.scores["stale_10min"].probs != online
    ).sum()


def test_frozen_copy_serves_the_state_trained_before_the_cut(ratings: Any) -> None:
    stream = _stream(ratings)
    cut = float(stream.event_time[0] + 0.5 * (stream.event_time[-1] - stream.event_time[0]))
    batches = plan_batches(stream.event_time, BATCH_SIZE, None, cuts=[cut])
    plan = ServingPlan(live="online", frozen="frozen", frozen_at=cut, ranking=False)
    run = replay_run(stream, _tables(), trainer_config=CONFIG, batches=batches, plan=plan)

    def pick(t: float, ends: list[float]) -> int:
        if t < cut:
            return len(ends) - 1
        return max(j for j, end in enumerate(ends) if end < cut)

    expected = _reference(stream, batches, pick)
    np.testing.assert_allclose(run.scores["frozen"].probs, expected, rtol=1e-5, atol=1e-7)
    before = stream.ex_time < cut
    assert np.array_equal(run.scores["frozen"].probs[before], run.scores["online"].probs[before])
    assert not np.allclose(run.scores["frozen"].probs[~before], run.scores["online"].probs[~before])
