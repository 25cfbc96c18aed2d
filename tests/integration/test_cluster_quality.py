"""MovieLens through three trainers on the Redis Cluster learns as well as through one.

The same MovieLens-100K stream, split into 6 partitions by user as Kafka would, is trained by
one trainer and by three members of one group (2 partitions each, their batches interleaved
in event-time order as concurrent trainers would commit them), each on the real Redis Cluster
in a namespace of its own. The three share every row update (guarded applies) and, at every
publish, sum their dense deltas over a common anchor (`training/members.py`). The preference
AUC of the predictions made before each update (the trainers' streaming AUC, one window over
all members' predictions) must be within 0.01 of the single trainer's.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator

import pytest

from freshrec.offline.data.movielens import load_movielens, movielens_events
from freshrec.settings import default_table_config_path
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.table import load_tables, open_tables
from freshrec.table.redis_cluster import RedisClusterTableBackend
from freshrec.training import Message, OnlineTrainer, StreamingAuc, TrainerConfig
from tests.cluster_servers import ClusterServers

PARTITIONS = 6
TRAINERS = 3
BATCH = 256
AUC_BUDGET = 0.01


def _messages() -> list[Message]:
    ml = load_movielens()
    offsets = [0] * PARTITIONS
    out = []
    for body in movielens_events(ml):
        event = Event(**body)
        partition = zlib.crc32(event.user_id.encode()) % PARTITIONS
        value = encode_event(event, event.timestamp)
        out.append(Message("events", partition, offsets[partition], value))
        offsets[partition] += 1
    return out


@pytest.fixture
def backends(cluster_servers: ClusterServers) -> Iterator[list[RedisClusterTableBackend]]:
    made = [
        RedisClusterTableBackend.from_nodes(
            cluster_servers.redis_nodes, namespace=f"q{uuid.uuid4().hex[:10]}"
        )
        for _ in range(TRAINERS + 1)
    ]
    try:
        yield made
    finally:
        namespaces = {b.namespace for b in made}
        for node in made[0].router.masters():
            client = made[0].router.node_client(node)
            for namespace in namespaces:
                for key in list(client.scan_iter(match=f"{namespace}:*", count=10_000)):
                    client.unlink(key)
        for backend in made:
            backend.close()


def _trainer(backend: RedisClusterTableBackend, member: str, auc: StreamingAuc) -> OnlineTrainer:
    tables = open_tables(load_tables(default_table_config_path()), backend)
    trainer = OnlineTrainer(tables, TrainerConfig(member=member, publish_interval_s=0.0))
    trainer.auc = auc
    return trainer


def test_three_trainers_on_the_cluster_reach_the_auc_of_one(
    backends: list[RedisClusterTableBackend],
) -> None:
    messages = _messages()
    one_auc, three_auc = StreamingAuc(), StreamingAuc()

    single = _trainer(backends[0], "", one_auc)
    single.restore([("events", p) for p in range(PARTITIONS)])
    for start in range(0, len(messages), BATCH):
        single.train_batch(messages[start : start + BATCH])

    # the three members share one namespace: open it once per member, as three processes do
    shared = backends[1]
    members = [_trainer(shared, f"m{n}", three_auc) for n in range(TRAINERS)]
    owner = {p: p % TRAINERS for p in range(PARTITIONS)}
    for n, member in enumerate(members):
        member.restore([("events", p) for p in range(PARTITIONS) if owner[p] == n])
    pending: list[list[Message]] = [[] for _ in members]
    for message in messages:
        mine = pending[owner[message.partition]]
        mine.append(message)
        if len(mine) == BATCH:
            members[owner[message.partition]].train_batch(mine)
            mine.clear()
    for n, rest in enumerate(pending):
        if rest:
            members[n].train_batch(rest)

    one, three = one_auc.value(), three_auc.value()
    print(
        f"MovieLens on the Redis Cluster: preference AUC (last 20,000 predictions) one trainer "
        f"{one:.4f}, three trainers {three:.4f} (difference {three - one:+.4f})"
    )
    assert abs(three - one) <= AUC_BUDGET
