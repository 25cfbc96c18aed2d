"""`InMemoryEventSource`: the reference consumer-group member the training loop is tested on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from freshrec.errors import BrokerUnavailable
from freshrec.stream import InMemoryEventSource, Partition


class Owner:
    """Records the callbacks and answers with fixed stored offsets."""

    def __init__(self, stored: Mapping[Partition, int] | None = None) -> None:
        self.stored = dict(stored or {})
        self.calls: list[tuple[str, list[Partition]]] = []

    def partitions_assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        self.calls.append(("assigned", list(partitions)))
        return self.stored

    def partitions_revoked(self, partitions: Sequence[Partition]) -> None:
        self.calls.append(("revoked", list(partitions)))


def _filled(partitions: int = 2, per_partition: int = 5) -> InMemoryEventSource:
    source = InMemoryEventSource("t", partitions=partitions)
    for p in range(partitions):
        for n in range(per_partition):
            source.append(p, f"{p}-{n}".encode())
    return source


def test_positions_come_from_the_owner_and_partitions_are_read_in_order() -> None:
    source = _filled()
    owner = Owner({("t", 0): 3})
    source.attach(owner)
    got = source.poll(max_records=4, timeout_s=0.0)
    assert owner.calls == [("assigned", [("t", 0), ("t", 1)])]
    assert [(m.partition, m.offset) for m in got] == [(0, 3), (0, 4), (1, 0), (1, 1)]
    assert source.lag().messages == 3
    assert source.lag().seconds >= 0.0


def test_a_rebalance_revokes_then_assigns_inside_the_next_poll() -> None:
    source = _filled()
    owner = Owner()
    source.attach(owner)
    source.poll(max_records=100, timeout_s=0.0)
    source.revoke([1])
    assert source.assignment() == [("t", 0), ("t", 1)]  # not before the next poll
    owner.stored = {("t", 0): 2}
    got = source.poll(max_records=100, timeout_s=0.0)
    assert owner.calls[1:] == [("revoked", [("t", 0), ("t", 1)]), ("assigned", [("t", 0)])]
    assert [(m.partition, m.offset) for m in got] == [(0, 2), (0, 3), (0, 4)]
    source.commit_async({("t", 0): 5, ("t", 1): 5})
    assert source.committed == {("t", 0): 5}  # partition 1 belongs to another member now


def test_a_restart_over_the_same_log_and_a_start_at_the_end() -> None:
    first = _filled(partitions=1)
    again = InMemoryEventSource("t", log=first.log, start_from_beginning=False)
    again.attach(Owner())
    assert again.poll(max_records=10, timeout_s=0.0) == []
    first.append(0, b"new")
    assert [m.value for m in again.poll(max_records=10, timeout_s=0.0)] == [b"new"]


def test_polling_needs_an_owner_and_an_open_source() -> None:
    source = _filled()
    with pytest.raises(RuntimeError, match="attach"):
        source.poll(max_records=1, timeout_s=0.0)
    owner = Owner()
    source.attach(owner)
    source.poll(max_records=1, timeout_s=0.0)
    assert source.ready()
    source.close()
    assert owner.calls[-1] == ("revoked", [("t", 0), ("t", 1)])
    assert not source.ready()
    with pytest.raises(BrokerUnavailable):
        source.poll(max_records=1, timeout_s=0.0)
