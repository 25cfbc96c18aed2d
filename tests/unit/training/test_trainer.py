"""The trainer over the in-memory table: learning, checkpoint/restore, dead letters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from freshrec.errors import CommitConflict
from freshrec.models import entity_row_ids as entity_ids
from freshrec.models import load_published_dense
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.table import InMemoryTableBackend, Tables, hash_feature, load_tables, open_tables
from freshrec.training import (
    ExampleBuilder,
    ExampleConfig,
    Message,
    OnlineTrainer,
    StreamingAuc,
    TrainerConfig,
)

TABLES = Path(__file__).resolve().parents[3] / "libs" / "freshrec" / "tables.yaml"
T0 = 1_700_000_000.0


def _stores(backend: InMemoryTableBackend) -> Tables:
    return open_tables(load_tables(TABLES), backend)


def _messages(events: list[Event], start: int = 0) -> list[Message]:
    return [
        Message("events", 0, start + n, encode_event(e, e.timestamp)) for n, e in enumerate(events)
    ]


def _ratings(n: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        user, item = int(rng.integers(50)), int(rng.integers(20))
        # items below 10 are good: a pattern the item rows and the MLP pick up quickly
        liked = item < 10
        out.append(
            Event(
                event_id=f"e{k}",
                type="rating",
                user_id=f"u{user}",
                item_id=f"i{item}",
                timestamp=T0 + k,
                value=5.0 if liked else 1.0,
                context={"device": "web"},
            )
        )
    return out


def test_trainer_learns_and_commits_rows_offsets_and_model() -> None:
    backend = InMemoryTableBackend()
    stores = _stores(backend)
    trainer = OnlineTrainer(stores, TrainerConfig(publish_interval_s=0.0, dense_lr=0.01))
    trainer.auc = StreamingAuc(window=2000)  # judge only the latest predictions
    events = _ratings(6000)
    for start in range(0, len(events), 200):
        trainer.train_batch(_messages(events[start : start + 200], start))
    # predictions are made before each update, so this is out-of-sample AUC
    assert trainer.auc.value() > 0.9
    assert backend.get_hash("offsets:freshrec-trainer") == {"events:0": b"6000"}
    user_rows = stores.user.read_rows(np.array([hash_feature("user", "u1")], dtype=np.uint64))
    assert len(user_rows) == 1 and user_rows.count[0] > 0
    published = load_published_dense(backend)
    assert published is not None and published[0] == trainer.published_version >= 1


def test_restore_resumes_exactly_where_the_commit_left_off() -> None:
    events = _ratings(1200, seed=3)
    batches = [_messages(events[s : s + 100], s) for s in range(0, 1200, 100)]

    straight = OnlineTrainer(_stores(InMemoryTableBackend()), TrainerConfig())
    for batch in batches:
        straight.train_batch(batch)

    backend = InMemoryTableBackend()
    first = OnlineTrainer(_stores(backend), TrainerConfig())
    for batch in batches[:5]:
        first.train_batch(batch)
    resumed = OnlineTrainer(_stores(backend), TrainerConfig())
    assert resumed.restore() == {("events", 0): 500}
    for batch in batches[5:]:
        resumed.train_batch(batch)

    for a, b in (
        (straight.tables.user, resumed.tables.user),
        (straight.tables.item, resumed.tables.item),
    ):
        ids = np.concatenate([r.ids for r in a.export()])
        ra, rb = a.read_rows(ids), b.read_rows(ids)
        np.testing.assert_allclose(ra.vectors, rb.vectors, atol=1e-6)
        np.testing.assert_array_equal(ra.count, rb.count)
    for pa, pb in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_poison_messages_are_dead_lettered_and_training_continues() -> None:
    letters: list[tuple[int, str]] = []
    trainer = OnlineTrainer(
        _stores(InMemoryTableBackend()),
        TrainerConfig(max_message_bytes=2048),
        dead_letters=lambda m, reason, detail: letters.append((m.offset, reason)),
    )
    good = _messages(_ratings(3))
    bad = [
        Message("events", 0, 3, b"{not json"),
        Message("events", 0, 4, b'{"v": 1, "event_id": 3}'),
        Message("events", 0, 5, b"x" * 4096),
    ]
    report = trainer.train_batch([*good, *bad])
    assert report.dead_letters == 3 and report.examples == 3
    assert letters == [(3, "not_json"), (4, "schema"), (5, "oversized")]
    assert trainer.offsets == {("events", 0): 6}


def test_impressions_join_clicks_and_close_as_negatives() -> None:
    builder = ExampleBuilder(ExampleConfig(join_window_s=10, sampled_negatives=0))

    def ev(i: int, kind: str, item: str, ts: float, request: str | None) -> Event:
        return Event(
            event_id=f"x{i}",
            type=kind,
            user_id="u",
            item_id=item,
            request_id=request,
            timestamp=T0 + ts,
        )

    out = builder.add(
        [
            ev(0, "impression", "a", 0, "r1"),
            ev(1, "impression", "b", 0, "r1"),
            ev(2, "click", "a", 3, "r1"),
        ],
        [T0] * 3,
    )
    assert [(e.item_id, e.label) for e in out] == [("a", 1.0)]
    out = builder.add([ev(3, "impression", "c", 20, "r2")], [T0])
    assert [(e.item_id, e.label) for e in out] == [("b", 0.0)]  # b's window closed
    state = builder.state()
    clone = ExampleBuilder(ExampleConfig(join_window_s=10, sampled_negatives=0))
    clone.load_state(state)
    assert clone.state() == state


def test_members_of_one_group_fence_a_partition_taken_over() -> None:
    """Member `a` loses partition 0 to `b`; `a`'s late batch is refused, nothing counted twice."""
    backend = InMemoryTableBackend()
    events = _ratings(600, seed=5)
    batches = [_messages(events[s : s + 100], s) for s in range(0, 600, 100)]
    a = OnlineTrainer(_stores(backend), TrainerConfig(member="a"))
    b = OnlineTrainer(_stores(backend), TrainerConfig(member="b"))
    assert a.restore([("events", 0)]) == {}
    a.train_batch(batches[0])
    a.train_batch(batches[1])
    # the rebalance: `b` owns partition 0 and resumes where `a` committed
    assert b.restore([("events", 0)]) == {("events", 0): 200}
    b.train_batch(batches[2])
    # `a` has not noticed: its next batch of the same partition must not commit
    with pytest.raises(CommitConflict):
        a.train_batch(batches[2])
    b.train_batch(batches[3])
    assert backend.get_hash("offsets:freshrec-trainer") == {"events:0": b"400"}
    users = sorted({e.user_id for e in events[:400]})
    rows = b.tables.user.read_rows(entity_ids("user", users))
    want = {u: sum(1 for e in events[:400] if e.user_id == u) for u in users}
    assert dict(zip(users, rows.count.tolist(), strict=True)) == want
    # each member keeps its own checkpoint
    assert backend.get_blob("trainer:freshrec-trainer:a:checkpoint") is not None
    assert backend.get_blob("trainer:freshrec-trainer:b:checkpoint") is not None
    assert backend.get_blob("trainer:freshrec-trainer:checkpoint") is None
