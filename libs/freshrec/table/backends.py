"""Which table backend to open: a pydantic config per backend, picked by its `type`.

backend = open_backend(RedisBackendConfig(url="redis://127.0.0.1:6379/0"))
tables = open_tables(load_tables(path), backend)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from freshrec.table.base import TableBackend
from freshrec.table.memory import InMemoryTableBackend
from freshrec.table.redis import RedisTableBackend
from freshrec.table.redis_cluster import RedisClusterTableBackend

__all__ = [
    "BackendConfig",
    "MemoryBackendConfig",
    "RedisBackendConfig",
    "RedisClusterBackendConfig",
    "open_backend",
    "redis_backend_config",
]


class RedisBackendConfig(BaseModel):
    """A single Redis server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["redis"] = "redis"
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL.")
    namespace: str = Field("freshrec", min_length=1, description="Prefix of every key.")
    socket_timeout_s: float | None = Field(
        None, gt=0, description="Per-command socket timeout; None waits as long as it takes."
    )


class RedisClusterBackendConfig(BaseModel):
    """A Redis Cluster (layout version 2: hash-tagged shards, commit records)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["redis-cluster"] = "redis-cluster"
    nodes: str = Field(
        "127.0.0.1:7000", min_length=3, description="Startup nodes, host:port comma-separated."
    )
    namespace: str = Field("freshrec", min_length=1, description="Prefix of every key.")
    shards: int = Field(12, ge=1, le=1024, description="Shards per table (part of the layout).")
    wait_replicas: int = Field(
        0, ge=0, le=16, description="Replicas every commit waits for (WAIT); 0 does not wait."
    )
    socket_timeout_s: float | None = Field(
        None, gt=0, description="Per-command socket timeout; None waits as long as it takes."
    )


class MemoryBackendConfig(BaseModel):
    """The in-process reference backend (tests, offline tools)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["memory"] = "memory"
    namespace: str = Field("freshrec", min_length=1, description="A label only.")


AnyBackendConfig = RedisBackendConfig | RedisClusterBackendConfig | MemoryBackendConfig
BackendConfig = Annotated[AnyBackendConfig, Field(discriminator="type")]


def redis_backend_config(
    url: str,
    namespace: str,
    *,
    cluster_nodes: str = "",
    shards: int = 12,
    wait_replicas: int = 0,
    socket_timeout_s: float | None = None,
) -> RedisBackendConfig | RedisClusterBackendConfig:
    """The Redis backend a process's settings name: the cluster when `cluster_nodes` is set.

    Args:
        url: the single Redis server (used when `cluster_nodes` is empty).
        namespace: prefix of every key.
        cluster_nodes: Redis Cluster startup nodes, ``host:port,...``; empty for one server.
        shards: shards per table on the cluster.
        wait_replicas: replicas a cluster commit waits for.
        socket_timeout_s: per-command socket timeout (None waits).
    """
    if cluster_nodes:
        return RedisClusterBackendConfig(
            nodes=cluster_nodes,
            namespace=namespace,
            shards=shards,
            wait_replicas=wait_replicas,
            socket_timeout_s=socket_timeout_s,
        )
    return RedisBackendConfig(url=url, namespace=namespace, socket_timeout_s=socket_timeout_s)


def open_backend(config: AnyBackendConfig) -> TableBackend:
    """The backend `config` describes; close it with `TableBackend.close`.

    Args:
        config: one of the configs of `BackendConfig`.

    Returns:
        A `RedisTableBackend` (owning its new client), a `RedisClusterTableBackend` (owning
        its router) or an `InMemoryTableBackend`.
    """
    if isinstance(config, RedisBackendConfig):
        return RedisTableBackend.from_url(
            config.url, config.namespace, socket_timeout_s=config.socket_timeout_s
        )
    if isinstance(config, RedisClusterBackendConfig):
        return RedisClusterTableBackend.from_nodes(
            config.nodes,
            config.namespace,
            socket_timeout_s=config.socket_timeout_s,
            shards=config.shards,
            wait_replicas=config.wait_replicas,
        )
    return InMemoryTableBackend(config.namespace)
