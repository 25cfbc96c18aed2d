"""Where a consumer group's trainer state lives: the metadata blobs of the table's backend.

With several trainers in one group (`TrainerOptions.member` set), each member keeps its own
checkpoint, replay ring and item-frequency estimate (``trainer:<group>:<member>:...``); the
offsets hash and the partitions' event-id windows stay per group, so a partition moves between
members with its state.
"""

from __future__ import annotations

__all__ = [
    "DENSE_ANCHOR_KEY",
    "DENSE_MEMBERS_KEY",
    "checkpoint_key",
    "frequency_key",
    "member_delta_key",
    "replay_key",
]

# Hash: member name → unix seconds of its last shared dense parameters.
DENSE_MEMBERS_KEY = "dense:members"
# Blob: the dense model the members' deltas are summed onto (the first publisher's start).
DENSE_ANCHOR_KEY = "dense:anchor"


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


def member_delta_key(member: str) -> str:
    """Metadata blob holding a member's delta: every change its training made to the dense
    parameters (tensor blob, float64)."""
    return f"dense:delta:{member}"
