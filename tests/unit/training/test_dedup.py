"""The event-id window that keeps producer retries from being trained twice."""

from __future__ import annotations

import pytest

from freshrec.training.dedup import DedupWindow, RingWrite, slot_runs


def _apply(ring: bytearray, writes: list[RingWrite]) -> bytearray:
    """What Redis's SETRANGE would make of `ring`."""
    for write in writes:
        end = write.start + len(write.data)
        if len(ring) < end:
            ring.extend(bytes(end - len(ring)))
        ring[write.start : end] = write.data
    return ring


def test_a_second_copy_within_the_window_is_a_duplicate() -> None:
    window = DedupWindow(size=4, key_prefix="dedup:g")
    assert window.admit("t", 0, 0, "a")
    assert window.admit("t", 0, 1, "b")
    assert not window.admit("t", 0, 2, "a")
    assert window.admit("t", 1, 0, "a"), "partitions have separate windows"


def test_a_copy_older_than_the_window_is_forgotten() -> None:
    window = DedupWindow(size=3, key_prefix="dedup:g")
    for offset, event in enumerate(["a", "b", "c", "d"]):
        assert window.admit("t", 0, offset, event)
    assert window.admit("t", 0, 4, "a"), "'a' left the window three messages ago"
    assert not window.admit("t", 0, 5, "d")


def test_messages_without_an_event_id_take_a_slot() -> None:
    window = DedupWindow(size=2, key_prefix="dedup:g")
    assert window.admit("t", 0, 0, "a")
    assert window.admit("t", 0, 1, None)
    assert window.admit("t", 0, 2, None)
    assert window.admit("t", 0, 3, "a")


def test_the_stored_ring_restores_the_same_window() -> None:
    live = DedupWindow(size=5, key_prefix="dedup:g")
    ring = bytearray()
    for offset, event in enumerate(["a", "b", "a", "c", "d", "e", "f"]):
        live.admit("t", 0, offset, event)
    writes = list(live.drain_writes())
    assert {w.key for w in writes} == {"dedup:g:t:0"}
    assert list(live.drain_writes()) == [], "drained once"
    _apply(ring, writes)

    restored = DedupWindow(size=5, key_prefix="dedup:g")
    restored.load("t", 0, bytes(ring), next_offset=7)
    for event in ["c", "d", "e", "f"]:
        assert not restored.admit("t", 0, 7, event)  # each still inside the window
    assert restored.admit("t", 0, 8, "b"), "'b' (offset 1) left the window"


def test_writes_are_contiguous_runs_split_at_the_ring_end() -> None:
    window = DedupWindow(size=4, key_prefix="k")
    window.load("t", 0, None, next_offset=2)
    for offset in range(2, 7):
        window.admit("t", 0, offset, f"e{offset}")
    starts = sorted((w.start, len(w.data)) for w in window.drain_writes())
    assert starts == [(0, 32)], "offsets 2..6 cover every slot of a 4-slot ring"
    window.admit("t", 0, 7, "e7")
    window.admit("t", 0, 8, "e8")
    runs = sorted((w.start, len(w.data)) for w in window.drain_writes())
    assert runs == [(0, 8), (24, 8)], "slot 3 then slot 0: two runs, not one across the end"


def test_skipped_offsets_are_cleared() -> None:
    window = DedupWindow(size=4, key_prefix="k")
    for offset, event in enumerate(["a", "b", "c", "d"]):
        window.admit("t", 0, offset, event)
    window.admit("t", 0, 6, "z")  # offsets 4 and 5 never arrive
    # the window before offset 7 is offsets 3..6; without clearing, slot 0 would still hold 'a'
    assert window.admit("t", 0, 7, "a")
    assert not window.admit("t", 0, 8, "z"), "offset 6 is inside the window 4..7"


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one"):
        DedupWindow(size=0, key_prefix="k")


def test_slot_runs_are_the_maximal_consecutive_runs() -> None:
    assert list(slot_runs([])) == []
    assert list(slot_runs([5])) == [(5, 6)]
    assert list(slot_runs([3, 1, 2, 2, 7, 9, 8, 12])) == [(1, 4), (7, 10), (12, 13)]
