"""The training loop on the in-memory source and table: batching, positions, rebalances."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client import REGISTRY

from freshrec.errors import StoreUnavailable
from freshrec.models.published import PUBLISHED_VERSION_KEY
from freshrec.stream.events import Event
from freshrec.stream.memory import InMemoryEventSource
from freshrec.stream.messages import encode_event
from freshrec.table import InMemoryTableBackend, Transaction, load_tables, open_tables
from freshrec.training import BatchReport, Message, OnlineTrainer, TrainerConfig, TrainingLoop
from tests.waiting import wait_until

TABLES = Path(__file__).resolve().parents[3] / "libs" / "freshrec" / "tables.yaml"
T0 = 1_700_000_000.0


class Crash(Exception):
    """Stands for the process dying inside a batch, before its commit."""


class Recorder:
    """Wraps a trainer's `train_batch`, keeping the (partition, offset) of committed messages."""

    def __init__(self, trainer: OnlineTrainer, crash_at_call: int | None = None) -> None:
        self.committed: list[tuple[int, int]] = []
        self.sizes: list[int] = []
        self._train = trainer.train_batch
        self._calls = 0
        self._crash_at = crash_at_call
        trainer.train_batch = self  # type: ignore[method-assign]

    def __call__(self, messages: Sequence[Message]) -> BatchReport:
        self._calls += 1
        if self._calls == self._crash_at:
            raise Crash
        report = self._train(messages)
        self.committed += [(m.partition, m.offset) for m in messages]
        self.sizes.append(len(messages))
        return report


def _trainer(backend: InMemoryTableBackend, **config: float) -> OnlineTrainer:
    stores = open_tables(load_tables(TABLES), backend)
    return OnlineTrainer(stores, TrainerConfig(group="g", **config))


def _event(k: int) -> bytes:
    event = Event(
        event_id=f"e{k}", type="rating", user_id=f"u{k % 7}", item_id=f"i{k % 5}",
        timestamp=T0 + k, value=float(1 + k % 5),
    )  # fmt: skip
    return encode_event(event, event.timestamp)


def _rate(source: InMemoryEventSource, partition: int, n: int) -> None:
    for _ in range(n):
        source.append(partition, _event(sum(len(p) for p in source.log)))


def _drain(loop: TrainingLoop) -> None:
    stop = threading.Event()
    while loop.step(stop) is not None:
        pass


def _rows(trainer: OnlineTrainer, table: str) -> dict[int, tuple[npt.NDArray[np.float32], int]]:
    out: dict[int, tuple[npt.NDArray[np.float32], int]] = {}
    store = trainer.tables.get(table)
    assert store is not None
    for rows in store.export():
        for n, key in enumerate(rows.ids.tolist()):
            out[int(key)] = (rows.vectors[n], int(rows.count[n]))
    return out


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_batches_are_cut_at_batch_size_and_offsets_reach_the_source() -> None:
    source = InMemoryEventSource("events", partitions=2)
    _rate(source, 0, 25)
    _rate(source, 1, 3)
    trainer = _trainer(InMemoryTableBackend())
    record = Recorder(trainer)
    loop = TrainingLoop(trainer, source, batch_size=10, max_wait_s=0.05)
    assert not source.ready()
    loop.step(threading.Event())
    assert source.ready()
    assert _gauge("freshrec_trainer_assigned_partitions") == 2
    assert source.lag().messages == 18
    _drain(loop)
    assert record.sizes == [10, 10, 8]
    assert sorted(record.committed) == [(0, o) for o in range(25)] + [(1, o) for o in range(3)]
    assert trainer.offsets == {("events", 0): 25, ("events", 1): 3}
    assert source.committed == trainer.offsets  # what lag tools see
    assert source.lag().messages == 0
    assert _gauge("freshrec_trainer_consumer_lag_messages") == 0


def test_a_partial_batch_waits_max_wait_s_for_more() -> None:
    source = InMemoryEventSource("events")
    _rate(source, 0, 3)
    trainer = _trainer(InMemoryTableBackend())
    loop = TrainingLoop(trainer, source, batch_size=100, max_wait_s=0.4)
    late = threading.Timer(0.05, _rate, args=(source, 0, 4))
    late.start()
    started = time.monotonic()
    report = loop.step(threading.Event())
    waited = time.monotonic() - started
    late.join()
    assert report is not None and report.messages == 7  # the late messages joined the batch
    assert waited >= 0.4


def test_an_idle_step_trains_nothing_and_publishes_pending_updates() -> None:
    now = [0.0]
    backend = InMemoryTableBackend()
    stores = open_tables(load_tables(TABLES), backend)
    trainer = OnlineTrainer(
        stores, TrainerConfig(group="g", publish_interval_s=5.0), clock=lambda: now[0]
    )
    source = InMemoryEventSource("events")
    loop = TrainingLoop(trainer, source, batch_size=4, max_wait_s=0.01)
    _rate(source, 0, 8)
    loop.step(threading.Event())
    loop.step(threading.Event())
    assert trainer.published_version == 1  # the second batch was not due
    assert loop.step(threading.Event()) is None
    assert trainer.published_version == 1
    now[0] = 10.0
    assert loop.step(threading.Event()) is None
    assert trainer.published_version == 2
    assert backend.get_hash(PUBLISHED_VERSION_KEY) == {"version": b"2"}


def test_a_restart_resumes_at_the_stored_offsets() -> None:
    backend = InMemoryTableBackend()
    first = InMemoryEventSource("events")
    _rate(first, 0, 30)
    trainer = _trainer(backend)
    before = Recorder(trainer, crash_at_call=3)
    loop = TrainingLoop(trainer, first, batch_size=10, max_wait_s=0.01)
    with pytest.raises(Crash):
        _drain(loop)  # the third batch was fetched, never committed

    again = InMemoryEventSource("events", log=first.log)
    resumed = _trainer(backend)
    after = Recorder(resumed)
    _drain(TrainingLoop(resumed, again, batch_size=10, max_wait_s=0.01))
    assert before.committed == [(0, o) for o in range(20)]
    assert after.committed == [(0, o) for o in range(20, 30)]
    assert resumed.batches == 3 and resumed.offsets == {("events", 0): 30}

    straight = _trainer(InMemoryTableBackend())
    _drain(
        TrainingLoop(
            straight, InMemoryEventSource("events", log=first.log), batch_size=10, max_wait_s=0.01
        )
    )
    for name in ("user", "item", "context"):
        want, got = _rows(straight, name), _rows(resumed, name)
        assert want.keys() == got.keys()
        for key, (vector, count) in want.items():
            assert got[key][1] == count  # a batch applied twice would inflate the counts
            np.testing.assert_array_equal(got[key][0], vector)


def test_a_rebalance_resumes_every_partition_at_its_stored_offset() -> None:
    source = InMemoryEventSource("events", partitions=2)
    _rate(source, 0, 6)
    _rate(source, 1, 6)
    trainer = _trainer(InMemoryTableBackend())
    record = Recorder(trainer)
    loop = TrainingLoop(trainer, source, batch_size=4, max_wait_s=0.01)
    stop = threading.Event()
    loop.step(stop)
    loop.step(stop)  # p0 done, p1 up to offset 2
    source.revoke([1])
    assert loop.step(stop) is None  # p1's remaining messages are not ours any more
    assert source.assignment() == [("events", 0)]
    _rate(source, 0, 2)
    _rate(source, 1, 3)
    _drain(loop)
    assert not any(p == 1 and o >= 2 for p, o in record.committed)
    source.assign([0, 1])
    _drain(loop)
    assert sorted(record.committed) == [(0, o) for o in range(8)] + [(1, o) for o in range(9)]
    assert trainer.offsets == {("events", 0): 8, ("events", 1): 9}


def test_messages_of_revoked_partitions_collected_for_a_batch_are_dropped() -> None:
    source = InMemoryEventSource("events", partitions=2)
    _rate(source, 0, 2)
    _rate(source, 1, 2)
    trainer = _trainer(InMemoryTableBackend())
    record = Recorder(trainer)
    loop = TrainingLoop(trainer, source, batch_size=100, max_wait_s=0.5)
    # while the loop waits to fill its batch, partition 1 moves to another member
    revoke = threading.Timer(0.05, source.revoke, args=([1],))
    revoke.start()
    report = loop.step(threading.Event())
    revoke.join()
    assert report is not None
    assert record.committed == [(0, 0), (0, 1)]  # read again from the stored offsets
    assert trainer.offsets == {("events", 0): 2}


def test_run_finishes_the_batch_in_progress_when_stopped() -> None:
    source = InMemoryEventSource("events")
    _rate(source, 0, 5)
    trainer = _trainer(InMemoryTableBackend())
    loop = TrainingLoop(trainer, source, batch_size=100, max_wait_s=30.0)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    time.sleep(0.1)
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert trainer.offsets == {("events", 0): 5}
    source.close()
    assert not source.ready()


def test_bad_batching_knobs_are_refused() -> None:
    trainer = _trainer(InMemoryTableBackend())
    with pytest.raises(ValueError, match="batch_size"):
        TrainingLoop(trainer, InMemoryEventSource(), batch_size=0, max_wait_s=0.1)


def _counts(trainer: OnlineTrainer) -> dict[str, dict[int, int]]:
    return {
        name: {key: count for key, (_, count) in _rows(trainer, name).items()}
        for name in ("user", "item", "context")
    }


def _duplicates() -> float:
    return _gauge("freshrec_trainer_duplicate_events_total") or 0.0


def test_a_retried_batch_is_trained_once() -> None:
    source = InMemoryEventSource("events")
    for k in [*range(30), *range(10, 30), *range(30, 40)]:  # events 10..29 posted twice
        source.append(0, _event(k))
    once = InMemoryEventSource("events")
    for k in range(40):
        once.append(0, _event(k))
    before = _duplicates()
    retried = _trainer(InMemoryTableBackend())
    _drain(TrainingLoop(retried, source, batch_size=8, max_wait_s=0.01))
    assert _duplicates() - before == 20
    assert retried.offsets == {("events", 0): 60}, "the copies' offsets are consumed too"
    straight = _trainer(InMemoryTableBackend())
    _drain(TrainingLoop(straight, once, batch_size=8, max_wait_s=0.01))
    assert _counts(retried) == _counts(straight)


def test_a_retry_arriving_after_a_restart_is_caught_from_the_stored_window() -> None:
    backend = InMemoryTableBackend()
    first = InMemoryEventSource("events")
    for k in range(20):
        first.append(0, _event(k))
    _drain(TrainingLoop(_trainer(backend), first, batch_size=8, max_wait_s=0.01))
    for k in [*range(12, 20), *range(20, 25)]:  # a half-applied batch retried, then new events
        first.append(0, _event(k))
    before = _duplicates()
    resumed = _trainer(backend)  # a new process: the window comes from the backend
    _drain(TrainingLoop(resumed, InMemoryEventSource("events", log=first.log), batch_size=8,
                        max_wait_s=0.01))  # fmt: skip
    assert _duplicates() - before == 8
    straight = _trainer(InMemoryTableBackend())
    once = InMemoryEventSource("events")
    for k in range(25):
        once.append(0, _event(k))
    _drain(TrainingLoop(straight, once, batch_size=8, max_wait_s=0.01))
    assert _counts(resumed) == _counts(straight)


def test_a_copy_older_than_the_window_is_trained_again() -> None:
    source = InMemoryEventSource("events")
    for k in [*range(10), 0]:  # event 0 again, ten messages later
        source.append(0, _event(k))
    trainer = _trainer(InMemoryTableBackend(), dedup_window=5)
    before = _duplicates()
    _drain(TrainingLoop(trainer, source, batch_size=4, max_wait_s=0.01))
    assert _duplicates() - before == 0


class FlakyBackend(InMemoryTableBackend):
    """An in-memory backend whose commits and metadata reads fail while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()

    def _check(self) -> None:
        if self.down.is_set():
            raise StoreUnavailable("the store is down (test)")

    def get_hash(self, key: str, *, group: str | None = None) -> dict[str, bytes]:
        self._check()
        return super().get_hash(key, group=group)

    def transaction(self, group: str | None = None, *, writer: str | None = None) -> Transaction:
        txn = super().transaction(group, writer=writer)
        commit = txn.commit

        def failing_commit() -> None:
            self._check()
            commit()

        txn.commit = failing_commit  # type: ignore[method-assign]
        return txn


def test_training_rides_through_a_store_outage_and_applies_every_batch_once() -> None:
    backend = FlakyBackend()
    source = InMemoryEventSource("events")
    for k in range(20):
        source.append(0, _event(k))
    trainer = _trainer(backend)
    loop = TrainingLoop(trainer, source, batch_size=8, max_wait_s=0.01)
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    try:
        wait_until(lambda: trainer.offsets.get(("events", 0)) == 20, 30, "the first 20 trained")
        backend.down.set()
        for k in range(20, 40):  # arrive while the store is down: batches fail at commit
            source.append(0, _event(k))
        wait_until(lambda: loop.outage is not None, 30, "the loop to notice the outage")
        assert loop.outage is not None and loop.outage.startswith("redis")
        assert _gauge("freshrec_trainer_dependency_up", dependency="redis") == 0
        assert runner.is_alive(), "an outage never ends the loop"
        backend.down.clear()
        wait_until(lambda: loop.outage is None, 30, "training to resume")
        wait_until(lambda: trainer.offsets.get(("events", 0)) == 40, 30, "everything trained")
    finally:
        stop.set()
        runner.join(timeout=30)
    assert _gauge("freshrec_trainer_dependency_up", dependency="redis") == 1
    straight = _trainer(InMemoryTableBackend())
    once = InMemoryEventSource("events")
    for k in range(40):
        once.append(0, _event(k))
    _drain(TrainingLoop(straight, once, batch_size=8, max_wait_s=0.01))
    assert _counts(trainer) == _counts(straight), "no batch lost or applied twice"
