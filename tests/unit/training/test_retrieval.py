"""The retrieval objective: streaming item frequencies, the logQ-corrected sampled softmax,
the servable item bias, and their state in the trainer's checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.models import RankingModel, retrieval_query, retrieval_softmax_loss
from freshrec.models.model import ModelConfig
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.table import InMemoryTableBackend, Tables, load_tables, open_tables
from freshrec.training import ExampleBuilder, ExampleConfig, Message, OnlineTrainer, TrainerConfig
from freshrec.training.frequency import ItemFrequency
from freshrec.training.replay import InteractionReplay
from freshrec.training.softmax import same_user_pairs

TABLES = Path(__file__).resolve().parents[3] / "libs" / "freshrec" / "tables.yaml"
T0 = 1_700_000_000.0


def test_frequency_estimate_follows_the_stream() -> None:
    rng = np.random.default_rng(0)
    shares = np.array([0.5, 0.3, 0.15, 0.05])
    ids = rng.choice(4, size=20_000, p=shares).astype(np.uint64)
    freq = ItemFrequency(buckets=1024, alpha=0.01, key="f")
    for start in range(0, ids.shape[0], 64):
        freq.update(ids[start : start + 64])
    estimate = freq.probability(np.arange(4, dtype=np.uint64))
    np.testing.assert_allclose(estimate, shares, rtol=0.2)
    assert freq.step == 20_000
    # never seen: at most once so far
    assert freq.probability(np.array([999], dtype=np.uint64))[0] == pytest.approx(1 / 20_001)
    # drift: the estimate moves to a new distribution
    for _ in range(300):
        freq.update(np.full(64, 3, dtype=np.uint64))
    assert freq.probability(np.array([3], dtype=np.uint64))[0] > 0.9


def test_frequency_writes_rebuild_the_same_estimate() -> None:
    freq = ItemFrequency(buckets=64, alpha=0.1, key="f")
    stored = bytearray()
    rng = np.random.default_rng(1)
    for _ in range(20):
        freq.update(rng.integers(0, 1000, size=16).astype(np.uint64))
        for write in freq.drain_writes():
            end = write.start + len(write.data)
            stored.extend(bytes(max(0, end - len(stored))))
            stored[write.start : end] = write.data
    assert list(freq.drain_writes()) == []  # drained
    copy = ItemFrequency(buckets=64, alpha=0.1, key="f")
    copy.load(bytes(stored), freq.step)
    np.testing.assert_array_equal(copy.last, freq.last)
    np.testing.assert_array_equal(copy.gap, freq.gap)
    assert bytes(stored) == freq.state()[: len(stored)]
    fresh = ItemFrequency(buckets=64, alpha=0.1, key="f")
    fresh.load(None, 0)
    assert fresh.step == 0 and not fresh.gap.any()


def test_sampled_softmax_is_cross_entropy_of_logq_corrected_logits() -> None:
    torch.manual_seed(0)
    queries, items = torch.randn(3, 4), torch.randn(5, 4)
    target = torch.tensor([0, 2, 4])
    log_q = torch.log(torch.tensor([0.5, 0.1, 0.2, 0.1, 0.1]))
    # user 0 also interacted with item 1 in this batch
    masked = (torch.tensor([0]), torch.tensor([1]))
    loss = retrieval_softmax_loss(queries, items, target, log_q, masked)
    logits = queries @ items.T - log_q
    expected = 0.0
    for p in range(3):
        row = logits[p].clone()
        if p == 0:
            row = torch.cat([row[:1], row[2:]])  # item 1 is no negative for user 0
            pos = 0
        else:
            pos = int(target[p])
        expected += float(-(row[pos] - torch.logsumexp(row, 0)))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # the correction favours rarely sampled items: without it, the popular item 0 is the
    # easier positive
    flat = retrieval_softmax_loss(queries, items, target, torch.zeros(5))
    assert float(flat) != pytest.approx(float(loss))


def test_item_bias_rides_in_the_row_so_inner_products_serve_the_model() -> None:
    model = RankingModel(ModelConfig(user_dim=6, item_dim=6, context_dim=2, hidden=4))
    users, items, ctx = torch.randn(3, 6), torch.randn(3, 7, 6), torch.randn(3, 2)
    grid = model.retrieval_grid(users, items)
    # FAISS: the inner product of the query (last component 1) with the raw item row
    expected = torch.einsum("bd,bmd->bm", retrieval_query(users), items)
    torch.testing.assert_close(grid, expected)
    assert torch.all(retrieval_query(users)[:, -1] == 1.0)
    _, retrieval = model(users, items[:, 0], ctx)
    torch.testing.assert_close(retrieval, grid[:, 0])
    # serving: retrieval plus like_weight * log P(like | interact)
    serve = model.serving_grid(users, items, ctx, like_weight=0.5, logit_offset=0.0)
    ranking = model.score_grid(users, items, ctx)
    torch.testing.assert_close(
        serve, grid + 0.5 * torch.nn.functional.logsigmoid(ranking), rtol=1e-5, atol=1e-5
    )
    only = model.serving_grid(users, items, ctx, like_weight=0.0, logit_offset=0.0)
    torch.testing.assert_close(only, grid)


def _stores(backend: InMemoryTableBackend) -> Tables:
    return open_tables(load_tables(TABLES), backend)


def _events(n: int) -> list[Message]:
    rng = np.random.default_rng(5)
    out = []
    for k in range(n):
        user, item = int(rng.integers(40)), int(rng.zipf(1.5)) % 30
        event = Event(
            event_id=f"e{k}",
            type="rating",
            user_id=f"u{user}",
            item_id=f"i{item}",
            timestamp=T0 + k,
            value=float(1 + (user + item) % 5),
        )
        out.append(Message("events", 0, k, encode_event(event, event.timestamp)))
    return out


def test_checkpoint_carries_the_frequency_estimate_exactly() -> None:
    messages = _events(900)
    config = TrainerConfig(
        frequency_buckets=128, retrieval_negatives=8, replay_capacity=300, replay_samples=16
    )
    straight = OnlineTrainer(_stores(InMemoryTableBackend()), config)
    for s in range(0, 900, 60):
        straight.train_batch(messages[s : s + 60])

    backend = InMemoryTableBackend()
    first = OnlineTrainer(_stores(backend), config)
    for s in range(0, 420, 60):
        first.train_batch(messages[s : s + 60])
    # a batch trained in memory but never committed must not leak into the estimate
    first.frequency.update(np.arange(50, dtype=np.uint64))
    resumed = OnlineTrainer(_stores(backend), config)
    assert resumed.restore() == {("events", 0): 420}
    assert resumed.frequency.step == 420
    for s in range(420, 900, 60):
        resumed.train_batch(messages[s : s + 60])

    assert resumed.frequency.step == straight.frequency.step == 900
    assert resumed.replay.count == straight.replay.count == 900
    np.testing.assert_array_equal(resumed.replay.items, straight.replay.items)
    np.testing.assert_array_equal(resumed.frequency.gap, straight.frequency.gap)
    np.testing.assert_array_equal(resumed.frequency.last, straight.frequency.last)
    for pa, pb in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
    ids = np.concatenate([r.ids for r in straight.tables.item.export()])
    np.testing.assert_allclose(
        straight.tables.item.read_rows(ids).vectors,
        resumed.tables.item.read_rows(ids).vectors,
        atol=1e-6,
    )


def test_examples_say_which_are_interactions() -> None:
    builder = ExampleBuilder(ExampleConfig(join_window_s=10.0, sampled_negatives=2))
    events = [
        Event(event_id="r", type="rating", user_id="u", item_id="a", timestamp=T0, value=1.0),
        Event(
            event_id="i", type="impression", user_id="u", item_id="b", request_id="q", timestamp=T0
        ),
        Event(event_id="c", type="click", user_id="u", item_id="c", timestamp=T0 + 1),
        Event(
            event_id="late", type="rating", user_id="v", item_id="a", timestamp=T0 + 100, value=5
        ),
    ]
    out = builder.add(events, [T0] * 4)
    kinds = {(e.item_id, e.label, e.interaction) for e in out}
    assert ("a", 0.0, True) in kinds  # a low rating is still an interaction
    assert ("c", 1.0, True) in kinds
    assert ("b", 0.0, False) in kinds  # the unanswered impression
    assert all(not e.interaction for e in out if e.label == 0.0 and e.item_id != "a")


def test_replay_ring_keeps_the_latest_and_draws_by_salt() -> None:
    ring = InteractionReplay(capacity=8, key="r")
    assert ring.sample(4, "b0")[0].shape == (0,)
    stored = bytearray(16 * 8)
    for start in range(0, 20, 5):
        ids = np.arange(start, start + 5, dtype=np.uint64)
        ring.add(ids + 1000, ids)
        for write in ring.drain_writes():
            stored[write.start : write.start + len(write.data)] = write.data
    assert ring.count == 20
    assert sorted(ring.items.tolist()) == list(range(12, 20))  # the last 8
    users, items = ring.sample(50, "b1")
    assert set(items.tolist()) <= set(range(12, 20))
    np.testing.assert_array_equal(users, items + 1000)
    again = InteractionReplay(capacity=8, key="r")
    again.load(bytes(stored), 20)
    np.testing.assert_array_equal(again.sample(50, "b1")[1], items)  # same salt, same draw
    assert not np.array_equal(again.sample(50, "b2")[1], items)


def test_the_ranker_queries_faiss_with_the_model_retrieval_query() -> None:
    from freshrec.ranking.recommender import retrieval_queries  # noqa: PLC0415

    users = np.random.default_rng(2).normal(size=(4, 6)).astype(np.float32)
    queries = retrieval_queries(users)
    np.testing.assert_array_equal(queries[:, :-1], users[:, :-1])
    assert (queries[:, -1] == 1.0).all() and (users[:, -1] != 1.0).all()  # not in place
    expected = retrieval_query(torch.from_numpy(users)).numpy()
    np.testing.assert_array_equal(queries, expected)


def test_a_checkpoint_of_the_old_model_format_is_refused_with_a_way_out() -> None:
    from freshrec.errors import ConfigError  # noqa: PLC0415
    from freshrec.models.serialization import decode_tensors, encode_tensors  # noqa: PLC0415
    from freshrec.training.trainer import checkpoint_key  # noqa: PLC0415

    backend = InMemoryTableBackend()
    trainer = OnlineTrainer(_stores(backend), TrainerConfig())
    trainer.train_batch(_events(60))
    key = checkpoint_key(trainer.config.group)
    blob = backend.get_blob(key)
    assert blob is not None
    tensors, meta = decode_tensors(blob)
    del meta["model_format"]  # what a trainer before the two objectives wrote
    txn = backend.transaction()
    txn.put_blob(key, encode_tensors(tensors, meta))
    txn.commit()
    with pytest.raises(ConfigError, match="new consumer group"):
        OnlineTrainer(_stores(backend), TrainerConfig()).restore()


def test_same_user_pairs_hide_the_other_items_of_each_positives_user() -> None:
    rng = np.random.default_rng(5)
    users = rng.zipf(1.3, size=300).astype(np.uint64) % np.uint64(40)
    target = rng.integers(0, 120, size=300)
    rows, columns = same_user_pairs(users, target)
    expected = {
        (p, int(target[q]))
        for p in range(300)
        for q in range(300)
        if users[p] == users[q] and target[q] != target[p]
    }
    found = list(zip(rows.tolist(), columns.tolist(), strict=True))
    assert len(found) == len(set(found))  # each pair once
    assert set(found) == expected
    assert rows.tolist() == sorted(rows.tolist())
    empty = same_user_pairs(users[:0], target[:0])
    assert empty[0].shape == empty[1].shape == (0,)


def test_frequency_writes_are_one_range_per_run_of_changed_buckets() -> None:
    frequency = ItemFrequency(64, 0.5, "f")
    frequency.update(np.array([3, 4, 5, 9, 63, 4], dtype=np.uint64))
    writes = list(frequency.drain_writes())
    assert [(w.start // 16, len(w.data) // 16) for w in writes] == [(3, 3), (9, 1), (63, 1)]
    stored = frequency.state()
    for write in writes:
        assert write.data == stored[write.start : write.start + len(write.data)]
    assert list(frequency.drain_writes()) == []
