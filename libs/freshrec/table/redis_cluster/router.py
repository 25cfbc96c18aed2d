"""Slot routing for the Redis Cluster table backend: which master serves a slot, on which pool.

The router keeps the cluster's slot map (from ``CLUSTER SLOTS``) and one connection pool per
master. Everything that talks to the cluster goes through a `redis.Redis` whose pool is a
`SlotPool`: it hands out a connection to whichever master serves its slot *now*, so the
single-server store code (`freshrec.table.redis.store`) runs unchanged on one shard of the
cluster. After a failover or a resharding, a command fails once (connection refused, MOVED);
the caller calls `SlotRouter.invalidate` and the next connection goes to the new master.

Shards. Each table is split into `shards` shards by id; shard `s` carries the hash tag
`shard_tag(s, shards)`, chosen so that shard `s`'s slot lies in the `s`-th of `shards` equal
slot ranges — with the usual even slot split over the masters, the shards spread evenly. The
tags depend only on the shard count: shard `s` of every table shares one slot, so a trainer
batch's rows of all tables in one shard commit in one MULTI/EXEC.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from functools import cache
from typing import Any, cast

import numpy as np
import redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from freshrec.errors import ConfigError, StoreUnavailable
from freshrec.table.records import IdArray

__all__ = ["PinnedPool", "SlotPool", "SlotRouter", "parse_nodes", "shard_of", "shard_tag"]

Node = tuple[str, int]

# A failing master is looked up again at most this often, so a storm of failing commands
# during a failover does not become a storm of CLUSTER SLOTS calls.
REFRESH_INTERVAL_S = 0.2


def parse_nodes(nodes: str) -> list[Node]:
    """``"host:port,host:port"`` as a list of (host, port) startup nodes."""
    out: list[Node] = []
    for raw in nodes.split(","):
        item = raw.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"a Redis Cluster node is host:port, got {item!r}")
        out.append((host, int(port)))
    if not out:
        raise ConfigError("a Redis Cluster backend needs at least one startup node")
    return out


@cache
def shard_tag(shard: int, shards: int) -> str:
    """The hash tag of shard `shard` of `shards`: ``{s<shard>.<k>}``, first k in its range.

    Shard `shard`'s slot is in ``[shard * 16384 // shards, (shard + 1) * 16384 // shards)``.
    """
    if not 0 <= shard < shards <= REDIS_CLUSTER_HASH_SLOTS:
        raise ConfigError(f"shard {shard} of {shards} does not exist")
    low = shard * REDIS_CLUSTER_HASH_SLOTS // shards
    high = (shard + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
    k = 0
    while True:
        body = f"s{shard}.{k}"
        if low <= key_slot(body.encode()) < high:
            return "{" + body + "}"
        k += 1


def tag_slot(tag: str) -> int:
    """The slot of hash tag `tag` (with its braces)."""
    return int(key_slot(tag.encode()))


def shard_of(ids: IdArray, shards: int) -> np.ndarray:
    """`(B,)` int64 shard of each id: a 64-bit mix of the id, modulo `shards`.

    The mix (splitmix64's finaliser) keeps ids that are sequential or share low bits from all
    landing on one shard.
    """
    x = ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(shards)).astype(np.int64)


class SlotRouter:
    """The cluster's slot map and one connection pool per master.

    Args:
        startup: nodes to ask for the slot map (any reachable one will do).
        socket_timeout_s: per-command socket timeout of every connection; None waits.
        password: the cluster's password, if it has one.
    """

    def __init__(
        self,
        startup: Sequence[Node],
        *,
        socket_timeout_s: float | None = None,
        password: str | None = None,
    ) -> None:
        self._known: list[Node] = list(startup)
        self._kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout_s,
            "socket_connect_timeout": socket_timeout_s or 5.0,
            "password": password,
        }
        self._pools: dict[Node, redis.ConnectionPool] = {}
        self._masters: list[Node] = [("", 0)] * REDIS_CLUSTER_HASH_SLOTS
        self._lock = threading.Lock()
        self._stale = True
        self._refreshed_at = 0.0
        self.refreshes = 0

    # ---- the slot map ------------------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        """Every node known, in the order the next refresh asks them."""
        return list(self._known)

    def invalidate(self) -> None:
        """Look the slot map up again before the next connection (after a failed command)."""
        self._stale = True

    def refresh(self) -> None:
        """Read the slot map from the first node that answers ``CLUSTER SLOTS``.

        Raises:
            StoreUnavailable: no known node answers, or some slot has no master.
        """
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        errors = []
        failed: list[Node] = []
        for node in list(self._known):
            client = redis.Redis(connection_pool=self._pool(node))
            try:
                reply = cast(list[Any], client.execute_command("CLUSTER SLOTS"))  # type: ignore[no-untyped-call]
            except redis.RedisError as exc:
                errors.append(f"{node[0]}:{node[1]}: {exc}")
                failed.append(node)
                continue
            masters: list[Node] = [("", 0)] * REDIS_CLUSTER_HASH_SLOTS
            seen: list[Node] = []
            for start, end, master, *replicas in reply:
                owner = (_text(master[0]) or node[0], int(master[1]))
                for slot in range(int(start), int(end) + 1):
                    masters[slot] = owner
                for peer in (master, *replicas):
                    seen.append((_text(peer[0]) or node[0], int(peer[1])))
            if any(port == 0 for _, port in masters):
                errors.append(f"{node[0]}:{node[1]}: some slots have no master")
                continue
            self._masters = masters
            # a node that did not answer (a killed master) is asked last next time: a host
            # that is gone, not refusing, would cost a connect timeout on every refresh
            answered = [n for n in dict.fromkeys([*seen, *self._known]) if n not in failed]
            self._known = [*answered, *(n for n in failed if n not in answered)]
            self._stale = False
            self._refreshed_at = time.monotonic()
            self.refreshes += 1
            return
        raise StoreUnavailable("no Redis Cluster node gave a slot map: " + "; ".join(errors))

    def _ensure(self) -> None:
        if not self._stale:
            return
        with self._lock:
            if not self._stale:
                return
            wait = self._refreshed_at + REFRESH_INTERVAL_S - time.monotonic()
            if self.refreshes and wait > 0:
                time.sleep(wait)
            self._refresh_locked()

    def master_of(self, slot: int) -> Node:
        """The master serving `slot` (refreshing the map first when it is stale)."""
        self._ensure()
        return self._masters[slot]

    def masters(self) -> list[Node]:
        """Every master, each once."""
        self._ensure()
        return list(dict.fromkeys(self._masters))

    # ---- pools and clients -------------------------------------------------------------

    def _pool(self, node: Node) -> redis.ConnectionPool:
        pool = self._pools.get(node)
        if pool is None:
            pool = redis.ConnectionPool(host=node[0], port=node[1], **self._kwargs)
            self._pools[node] = pool
        return pool

    def pool_at(self, node: Node) -> redis.ConnectionPool:
        """The connection pool of `node`."""
        with self._lock:
            return self._pool(node)

    def node_client(self, node: Node) -> redis.Redis:
        """A client on `node`'s pool (commands for slots it serves)."""
        return redis.Redis(connection_pool=self.pool_at(node))

    def slot_client(self, slot: int) -> redis.Redis:
        """A client whose every connection goes to the master serving `slot` at the time."""
        return redis.Redis(connection_pool=SlotPool(self, slot))

    def ping(self) -> bool:
        """True when every master answers PING; never raises."""
        try:
            return all(bool(self.node_client(node).ping()) for node in self.masters())
        except (redis.RedisError, StoreUnavailable):
            self.invalidate()
            return False

    def close(self) -> None:
        """Close every pool."""
        with self._lock:
            for pool in self._pools.values():
                pool.disconnect()
            self._pools.clear()


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class SlotPool(redis.ConnectionPool):
    """A pool handing out connections to the master that serves one slot.

    Args:
        router: the cluster's router.
        slot: the slot.
    """

    def __init__(self, router: SlotRouter, slot: int) -> None:
        super().__init__()
        self.router = router
        self.slot = slot

    def _current(self) -> redis.ConnectionPool:
        return self.router.pool_at(self.router.master_of(self.slot))

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        return self._current().get_connection()

    def release(self, connection: Any) -> None:
        self.router.pool_at((connection.host, connection.port)).release(connection)

    def disconnect(self, inuse_connections: bool = True) -> None:
        """The router owns the connections; `SlotRouter.close` ends them."""

    def reset(self) -> None:
        """Nothing of its own to reset."""


class PinnedPool(redis.ConnectionPool):
    """A pool that always hands out one connection (WATCH needs every command on it)."""

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self.connection = connection

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        return self.connection

    def release(self, connection: Any) -> None:
        """The connection stays pinned; its owner releases it."""

    def disconnect(self, inuse_connections: bool = True) -> None:
        """The owner of the connection ends it."""

    def reset(self) -> None:
        """Nothing of its own to reset."""
