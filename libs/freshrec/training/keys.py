"""Where a consumer group's trainer state lives: the metadata blobs of the table's backend."""

from __future__ import annotations

__all__ = ["checkpoint_key", "frequency_key", "replay_key"]


def checkpoint_key(group: str) -> str:
    """Metadata blob holding a consumer group's trainer checkpoint."""
    return f"trainer:{group}:checkpoint"


def replay_key(group: str) -> str:
    """Metadata blob holding a consumer group's replay ring."""
    return f"trainer:{group}:replay"


def frequency_key(group: str) -> str:
    """Metadata blob holding a consumer group's item-frequency buckets."""
    return f"trainer:{group}:item_freq"
