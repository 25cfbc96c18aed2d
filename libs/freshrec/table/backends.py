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

__all__ = ["BackendConfig", "MemoryBackendConfig", "RedisBackendConfig", "open_backend"]


class RedisBackendConfig(BaseModel):
    """A single Redis server."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["redis"] = "redis"
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL.")
    namespace: str = Field("freshrec", min_length=1, description="Prefix of every key.")
    socket_timeout_s: float | None = Field(
        None, gt=0, description="Per-command socket timeout; None waits as long as it takes."
    )


class MemoryBackendConfig(BaseModel):
    """The in-process reference backend (tests, offline tools)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["memory"] = "memory"
    namespace: str = Field("freshrec", min_length=1, description="A label only.")


BackendConfig = Annotated[RedisBackendConfig | MemoryBackendConfig, Field(discriminator="type")]


def open_backend(config: RedisBackendConfig | MemoryBackendConfig) -> TableBackend:
    """The backend `config` describes; close it with `TableBackend.close`.

    Args:
        config: a `RedisBackendConfig` or `MemoryBackendConfig` (see `BackendConfig`).

    Returns:
        A `RedisTableBackend` (owning its new client) or an `InMemoryTableBackend`.
    """
    if isinstance(config, RedisBackendConfig):
        return RedisTableBackend.from_url(
            config.url, config.namespace, socket_timeout_s=config.socket_timeout_s
        )
    return InMemoryTableBackend(config.namespace)
