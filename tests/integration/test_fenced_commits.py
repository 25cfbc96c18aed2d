"""Fenced commits (`Transaction.expect_hash`) on a real Redis server and a real Redis Cluster.

Members of a trainer group share one offsets hash and each fences its own fields. Another
member's commit writing *other* fields between a commit's WATCH and its EXEC aborts the EXEC;
the commit must check its fields again and go through, and only a change of a field it
expects may refuse it (`CommitConflict`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from freshrec.errors import CommitConflict
from freshrec.table import RedisTableBackend, TableBackend
from freshrec.table.redis.connection import FENCE_ATTEMPTS, RedisTransaction
from freshrec.table.redis_cluster import RedisClusterTableBackend
from tests.cluster_servers import ClusterServers
from tests.conftest import Servers

GROUP = "trainers"


@pytest.fixture(params=["single", "cluster"])
def backend(
    request: pytest.FixtureRequest, servers: Servers, cluster_servers: ClusterServers
) -> Iterator[TableBackend]:
    namespace = f"t-fence-{uuid.uuid4().hex[:10]}"
    made: TableBackend
    if request.param == "single":
        made = RedisTableBackend(redis.Redis.from_url(servers.redis_url), namespace)
        clients = [made.client]
    else:
        made = RedisClusterTableBackend.from_nodes(cluster_servers.redis_nodes, namespace=namespace)
        clients = [made.router.node_client(node) for node in made.router.masters()]
    try:
        yield made
    finally:
        for client in clients:
            for key in list(client.scan_iter(match=f"{namespace}:*", count=10_000)):
                client.unlink(key)
        made.close()


def _offsets(backend: TableBackend, **fields: int) -> None:
    with backend.transaction(group=GROUP) as txn:
        txn.put_hash("offsets", fields)


def _interfere(monkeypatch: pytest.MonkeyPatch, times: int, write: Callable[[], None]) -> list[int]:
    """After each of the first `times` fenced WATCHes, run `write` (another writer's commit)."""
    calls: list[int] = []
    original = RedisTransaction.watch_expected

    def watch_then_write(self: RedisTransaction, conn: Any) -> bool:
        watched = original(self, conn)
        if watched:
            calls.append(1)
            if len(calls) <= times:
                write()
        return watched

    monkeypatch.setattr(RedisTransaction, "watch_expected", watch_then_write)
    return calls


def _fenced_commit(backend: TableBackend, expect: int, value: int) -> None:
    with backend.transaction(group=GROUP) as txn:
        txn.expect_hash("offsets", {"p0": expect})
        txn.put_hash("offsets", {"p0": value})
        txn.put_blob("checkpoint", b"member-0")


def test_another_members_fields_do_not_refuse_a_fenced_commit(
    backend: TableBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offsets(backend, p0=10, p1=20)
    moved = iter(range(21, 100))
    calls = _interfere(monkeypatch, 3, lambda: _offsets(backend, p1=next(moved)))
    _fenced_commit(backend, expect=10, value=11)
    # three aborted EXECs, each checked again, then the fourth went through
    assert len(calls) == 4
    stored = backend.get_hash("offsets", group=GROUP)
    assert {k: int(v) for k, v in stored.items()} == {"p0": 11, "p1": 23}
    assert backend.get_blob("checkpoint", group=GROUP) == b"member-0"


def test_a_moved_expected_field_refuses_the_commit(
    backend: TableBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offsets(backend, p0=10, p1=20)
    _interfere(monkeypatch, 1, lambda: _offsets(backend, p0=15))
    with pytest.raises(CommitConflict):
        _fenced_commit(backend, expect=10, value=11)
    stored = backend.get_hash("offsets", group=GROUP)
    assert {k: int(v) for k, v in stored.items()} == {"p0": 15, "p1": 20}
    assert backend.get_blob("checkpoint", group=GROUP) is None


def test_a_commit_aborted_every_time_ends_as_a_conflict(
    backend: TableBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offsets(backend, p0=10, p1=20)
    moved = iter(range(21, 1000))
    calls = _interfere(monkeypatch, FENCE_ATTEMPTS, lambda: _offsets(backend, p1=next(moved)))
    with pytest.raises(CommitConflict):
        _fenced_commit(backend, expect=10, value=11)
    assert len(calls) == FENCE_ATTEMPTS
    assert int(backend.get_hash("offsets", group=GROUP)["p0"]) == 10
