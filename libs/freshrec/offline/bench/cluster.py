"""Cluster benchmark: the Redis Cluster table against raw per-node redis-py, same run.

On an Adagrad table (dim 16, the shipped item table's shape) on a Redis Cluster:

- `lookup_rows_per_s`: `RedisClusterEmbeddingStore.lookup` of 4,096 random existing ids (one
  MGET per shard, every master's MGETs on one connection, all masters sent before any reply
  is read; decode). Baseline `raw_mget_rows_per_s`: redis-py pipelines, one per master, each
  holding one MGET per shard of the same keys, executed master after master.
- `update_rows_per_s`: `push` without a transaction (the guarded apply: WATCH, read, Adagrad,
  MULTI/EXEC per shard) on existing rows. Baseline `raw_set_rows_per_s`: redis-py pipelines,
  one per master, of plain SETs of same-size values to the same keys.
- Each is timed in alternation with its baseline (21 lookup rounds, 9 update rounds); the
  rates are the medians, `lookup_vs_raw_mget` / `update_vs_raw_set` the medians of the rounds'
  ratios, so that a burst of load from elsewhere on the machine weighs on both sides of a
  ratio alike.
- `commands_per_batch` / `round_trips_per_batch`: what one trainer-shaped batch (pull 256 unique
  ids, push them in a transaction with an offsets hash) costs, single server vs cluster:
  commands from INFO `total_commands_processed` summed over the masters; round trips counted
  at redis-py's connection (`send_packed_command` calls: one per connection per round trip,
  so round trips in flight together on several connections count once each); and
  `ms_per_batch`, the median wall time of one batch (where round trips waited on show).
- `lost_updates`: 3 writer processes push the same 200 hot ids for 60 batches each; the
  fraction of occurrences missing from the rows afterwards, for the single-server store
  (last writer wins) and the cluster store (guarded applies).
- `table_writers_events_per_cpu_s`: the same table writers (no model), 1, 2 and 3 of them,
  on the cluster: occurrences applied per CPU-second of the writers (from `/proc` via
  `time.process_time`): the table's own coordination cost, undiluted by any model.
- `trainers` (when a `TrainerScaling` is given): real trainer processes, 1, 2 and 3 of them in
  one group on the cluster, and one on the single node: events per CPU-second of the trainers'
  process trees (`freshrec.offline.bench.trainers`). Two cores cannot show throughput scaling;
  these ratios are what carries to a bigger machine.

Writes `cluster.json` into the output directory.
"""

from __future__ import annotations

import json
import multiprocessing
import platform
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.crc import key_slot

from freshrec.offline.bench.trainers import TrainerScaling
from freshrec.table import TableBackend
from freshrec.table.config import AdagradConfig, TableConfig
from freshrec.table.redis import RedisTableBackend
from freshrec.table.redis_cluster import RedisClusterTableBackend

__all__ = ["run_cluster_bench"]

CONFIG = TableConfig(name="bench", dim=16, optimizer=AdagradConfig(lr=0.05))
BATCH = 4096
ROWS = 50_000
ROUNDS = 21
UPDATE_ROUNDS = 9
TARGETS = {
    "lookup_vs_raw_mget": 0.7,
    "update_vs_raw_set": 0.5,
    "trainers.efficiency_2": 0.8,
    "trainers.efficiency_3": 0.8,
}


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _paired(
    rows: int, fn: Callable[[], object], baseline: Callable[[], object], rounds: int
) -> tuple[float, float, float]:
    """Rows/s of `fn` and of `baseline`, timed in alternation, and the median of the rounds'
    ratios (a round's two timings share the machine's load of that moment)."""
    pairs = [(_timed(fn), _timed(baseline)) for _ in range(rounds)]
    ours, theirs = zip(*pairs, strict=True)
    ratio = statistics.median(base / t for t, base in pairs)
    return rows / statistics.median(ours), rows / statistics.median(theirs), ratio


@contextmanager
def _round_trips() -> Iterator[list[int]]:
    """Count redis-py `send_packed_command` calls (one per connection per round trip)."""
    counter = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        original(self, command, check_health)  # type: ignore[no-untyped-call]

    redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield counter
    finally:
        redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def _commands(clients: list[redis.Redis]) -> int:
    return sum(int(c.info("stats")["total_commands_processed"]) for c in clients)


def _trainer_batch(backend: TableBackend, rng: np.random.Generator, step: int) -> None:
    store = backend.store(CONFIG)
    ids = np.unique(rng.integers(0, ROWS, size=256)).astype(np.uint64)
    grads = rng.normal(size=(ids.size, CONFIG.dim)).astype(np.float32) * 0.01
    pulled = store.pull(ids)
    with backend.transaction(group="bench") as txn:
        txn.put_hash("offsets", {"events/0": step})
        store.push(pulled, grads, np.ones(ids.size, np.int64), np.full(ids.size, 1.0), txn)


def _batch_cost(backend: TableBackend, clients: list[redis.Redis]) -> dict[str, float]:
    rng = np.random.default_rng(3)
    for step in range(3):
        _trainer_batch(backend, rng, step)
    batches = 20
    before = _commands(clients)
    times = []
    with _round_trips() as trips:
        for step in range(batches):
            started = time.perf_counter()
            _trainer_batch(backend, rng, step)
            times.append(time.perf_counter() - started)
        counted = trips[0]
    after = _commands(clients)
    # INFO itself is one command per client
    return {
        "commands_per_batch": (after - before - len(clients)) / batches,
        "round_trips_per_batch": counted / batches,
        "ms_per_batch": 1000.0 * statistics.median(times),
    }


def _writer(kind: str, where: str, namespace: str, worker: int, *, batches: int, out: Any) -> None:
    backend: TableBackend
    if kind == "cluster":
        backend = RedisClusterTableBackend.from_nodes(where, namespace=namespace)
    else:
        backend = RedisTableBackend.from_url(where, namespace)
    store = backend.store(CONFIG)
    rng = np.random.default_rng(100 + worker)
    sent = 0
    started = time.process_time()
    for step in range(batches):
        ids = rng.integers(0, 200, size=128).astype(np.uint64)
        unique, counts = np.unique(ids, return_counts=True)
        pulled = store.pull(unique)
        grads = rng.normal(size=(unique.size, CONFIG.dim)).astype(np.float32) * 0.01
        with backend.transaction(group=f"writer-{worker}") as txn:
            txn.put_hash("offsets", {"events/0": step + 1})
            store.push(pulled, grads, counts.astype(np.int64), np.full(unique.size, 1.0), txn)
        sent += int(ids.size)
    out.put((sent, time.process_time() - started))
    backend.close()


def _writers(kind: str, where: str, backend: TableBackend, count: int) -> dict[str, float]:
    namespace = backend.namespace
    store = backend.store(CONFIG)
    store.clear()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_writer, args=(kind, where, namespace, w), kwargs={"batches": 60, "out": out}
        )
        for w in range(count)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    sent = sum(r[0] for r in results)
    cpu = sum(r[1] for r in results)
    rows = store.read_rows(np.arange(200, dtype=np.uint64))
    applied = int(rows.count.sum())
    store.clear()
    return {
        "writers": count,
        "occurrences_sent": sent,
        "occurrences_applied": applied,
        "lost_fraction": (sent - applied) / sent,
        "events_per_cpu_s": sent / cpu,
    }


def run_cluster_bench(
    cluster_nodes: str,
    redis_url: str,
    out_dir: Path,
    trainers: tuple[TrainerScaling, str, str] | None = None,
) -> dict[str, Any]:
    """Measure the cluster table against raw per-node redis-py; write `cluster.json`.

    Args:
        cluster_nodes: Redis Cluster startup nodes, ``host:port,...``.
        redis_url: a single Redis server, for the single-server side of the comparisons.
        out_dir: where `cluster.json` goes.
        trainers: the trainer processes' phase with the multi-broker Kafka's and the single
            Kafka's bootstrap servers; None leaves it out.
    """
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    cluster = RedisClusterTableBackend.from_nodes(cluster_nodes, namespace=namespace)
    single = RedisTableBackend.from_url(redis_url, namespace)
    try:
        store = cluster.store(CONFIG)
        rng = np.random.default_rng(0)
        all_ids = np.arange(ROWS, dtype=np.uint64)
        for start in range(0, ROWS, BATCH):
            chunk = all_ids[start : start + BATCH]
            store.push(
                store.pull(chunk),
                np.zeros((chunk.size, CONFIG.dim), np.float32),
                np.ones(chunk.size, np.int64),
                np.ones(chunk.size),
            )
        ids = rng.choice(all_ids, size=BATCH, replace=False)
        shard = cluster.shard_of(ids)
        masters = cluster.router.masters()
        node_clients = {m: cluster.router.node_client(m) for m in masters}
        # the raw side reads and writes keys of the same length in the same slots (the first
        # byte of the namespace changed), holding values of the same size
        keys_by_shard = {
            s: [b"~" + k[1:] for k in store.parts[s].row_keys(ids[shard == s])]
            for s in np.unique(shard).tolist()
        }
        value = b"x" * store.parts[0].dtype.itemsize

        def raw_mget() -> None:
            by_node: dict[Any, list[list[bytes]]] = {}
            for s, keys in keys_by_shard.items():
                node = cluster.router.master_of(key_slot(cluster.tag(s).encode()))
                by_node.setdefault(node, []).append(keys)
            for node, groups in by_node.items():
                pipe = node_clients[node].pipeline(transaction=False)
                for keys in groups:
                    pipe.mget(keys)
                pipe.execute()

        def raw_set() -> None:
            by_node: dict[Any, list[bytes]] = {}
            for s, keys in keys_by_shard.items():
                node = cluster.router.master_of(key_slot(cluster.tag(s).encode()))
                by_node.setdefault(node, []).extend(keys)
            for node, keys in by_node.items():
                pipe = node_clients[node].pipeline(transaction=False)
                for key in keys:
                    pipe.set(key, value)
                pipe.execute()

        grads = np.zeros((BATCH, CONFIG.dim), np.float32)
        sorted_ids = np.sort(ids)

        def update() -> None:
            store.push(store.pull(sorted_ids), grads, np.ones(BATCH, np.int64), np.ones(BATCH))

        raw_set()
        lookup, mget, lookup_ratio = _paired(BATCH, lambda: store.lookup(ids), raw_mget, ROUNDS)
        push, set_, update_ratio = _paired(BATCH, update, raw_set, UPDATE_ROUNDS)
        figures: dict[str, Any] = {
            "lookup_rows_per_s": lookup,
            "raw_mget_rows_per_s": mget,
            "update_rows_per_s": push,
            "raw_set_rows_per_s": set_,
            "lookup_vs_raw_mget": lookup_ratio,
            "update_vs_raw_set": update_ratio,
        }
        store.clear()

        figures["batch_cost"] = {
            "single": _batch_cost(single, [single.client]),
            "cluster": _batch_cost(cluster, list(node_clients.values())),
        }
        single.store(CONFIG).clear()
        cluster.store(CONFIG).clear()

        figures["lost_updates"] = {
            "single_last_writer_wins": _writers("single", redis_url, single, 3),
            "cluster_guarded": _writers("cluster", cluster_nodes, cluster, 3),
        }
        scaling = [_writers("cluster", cluster_nodes, cluster, n) for n in (1, 2, 3)]
        figures["table_writers_events_per_cpu_s"] = scaling
        base = scaling[0]["events_per_cpu_s"]
        figures["table_writers_cpu_efficiency_3"] = scaling[2]["events_per_cpu_s"] / base
        if trainers is not None:
            scaling_run, cluster_bootstrap, bootstrap = trainers
            figures["trainers"] = scaling_run.run(
                cluster_nodes, cluster_bootstrap, redis_url, bootstrap
            )
        figures["targets"] = TARGETS
        figures["shards"] = cluster.shards
        figures["masters"] = len(masters)
        figures["machine"] = {
            "cpus": multiprocessing.cpu_count(),
            "python": platform.python_version(),
        }
    finally:
        masters_now = cluster.router.masters()
        for client in [single.client, *(cluster.router.node_client(m) for m in masters_now)]:
            for pattern in (f"{namespace}:*", f"~{namespace[1:]}:*"):
                for key in list(client.scan_iter(match=pattern, count=10_000)):
                    client.unlink(key)
        single.close()
        cluster.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cluster.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
