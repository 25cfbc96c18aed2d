"""Where a consumer group's trainer state lives: the metadata blobs of the table's backend.

With several trainers in one group (`TrainerOptions.member` set), each member keeps its own
checkpoint, replay ring and item-frequency estimate (``trainer:<group>:<member>:...``); the
offsets hash and the partitions' event-id windows stay per group, so a partition moves between
members with its state.
"""

from __future__ import annotations

__all__ = ["checkpoint_key", "frequency_key", "replay_key"]


def _state(group: str, member: str) -> str:
    return f"trainer:{group}:{member}:" if member else f"trainer:{group}:"


def checkpoint_key(group: str, member: str = "") -> str:
    """Metadata blob holding a trainer's checkpoint (dense state, counters)."""
    return _state(group, member) + "checkpoint"


def replay_key(group: str, member: str = "") -> str:
    """Metadata blob holding a trainer's replay ring."""
    return _state(group, member) + "replay"


def frequency_key(group: str, member: str = "") -> str:
    """Metadata blob holding a trainer's item-frequency buckets."""
    return _state(group, member) + "item_freq"
