"""The Redis Cluster table backend: hash-tagged shards, commit records, guarded applies.

See `backend` for the commit protocol and `store` for the layout (`docs/specs/table.md`,
version 2).
"""

from freshrec.table.redis_cluster.backend import ClusterTransaction, RedisClusterTableBackend
from freshrec.table.redis_cluster.router import SlotRouter, parse_nodes, shard_of, shard_tag
from freshrec.table.redis_cluster.store import ClusterCursor, RedisClusterEmbeddingStore

__all__ = [
    "ClusterCursor",
    "ClusterTransaction",
    "RedisClusterEmbeddingStore",
    "RedisClusterTableBackend",
    "SlotRouter",
    "parse_nodes",
    "shard_of",
    "shard_tag",
]
