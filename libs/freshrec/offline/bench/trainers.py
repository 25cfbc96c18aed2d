"""Trainer events per CPU-second with 1, 2 and 3 real trainer processes in one consumer group.

For each count n, in a namespace and consumer group of its own: a topic of 6 partitions (made
by `ensure_topics`, the broker's replication factor) holding a pre-produced stream of Zipf
rating events over a few thousand users and items, each user's events on one partition and
every item touched from every partition; then n trainer processes (the service, static members
`trainer-0..n-1`, batch size 256). The CPU of every process of each trainer's tree (utime +
stime + reaped children's, from `/proc/<pid>/stat`) is read when all n answer `/readyz`, when
the trainers are warm (each has committed `WARM_BATCHES` batches and `WARM_SHARE` of the stream
is committed: group joins, first batches and lazy initialisation are behind them) and when the
group's committed offsets reach the end of the stream; events per CPU-second is the events
committed in the steady window (warm to end) over its CPU, and the same from ready to end is
kept beside it (`from_ready`). Then the trainers idle for `IDLE_S`: their
CPU per trainer-second with nothing to train is the part of the cost each process adds by
running at all. Every phase has a deadline; the trainers are
stopped, the namespace's keys wiped and its topics deleted whatever happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from freshrec.offline.bench.soak import ready
from freshrec.offline.bench.trainer import bench_event, zipf_draws
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.stream.topics import ensure_topics, open_admin_client
from freshrec.table import RedisTableBackend, TableBackend, open_backend
from freshrec.table.backends import redis_backend_config
from freshrec.table.redis_cluster import RedisClusterTableBackend

__all__ = ["TrainerScaling", "partitioned_stream", "tree_cpu_s"]

PARTITIONS = 6
USERS = 3_000
ITEMS = 1_000
BATCH = 256
IDLE_S = 5.0
# Share of the stream committed, and batches every trainer committed, before the steady window.
WARM_SHARE = 0.2
WARM_BATCHES = 3
_T0 = 1_700_000_000.0
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and every live descendant, with their reaped children's.

    A child that exits and is reaped moves its time into its parent's cutime/cstime, so the
    sum over the tree only grows while the tree runs.
    """
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone between the listing and the read
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in tree) / _TICK


def partitioned_stream(events: int, seed: int) -> tuple[list[int], list[Event]]:
    """The bench's stream: each event's partition (its user's), and the events.

    Zipf users and items below `USERS` and `ITEMS`; the first `ITEMS * PARTITIONS` events
    put every item on every partition, so every item row is updated from every partition.

    Returns:
        (partitions, events), both of length `events`.
    """
    users, items = zipf_draws(events, seed, users=USERS, items=ITEMS)
    cover = min(events, ITEMS * PARTITIONS)
    k = np.arange(cover)
    items[:cover] = k // PARTITIONS
    users[:cover] = users[:cover] - users[:cover] % PARTITIONS + k % PARTITIONS
    users %= USERS - USERS % PARTITIONS
    made = [bench_event(n, int(users[n]), int(items[n]), _T0 + n * 0.01) for n in range(events)]
    return (users % PARTITIONS).tolist(), made


@dataclass
class _Phase:
    """One count of trainers on one topology: its namespace, processes and logs."""

    redis_url: str
    cluster_nodes: str
    bootstrap: str
    command: Sequence[str]
    logs: Path
    namespace: str = field(default_factory=lambda: f"bench-tr-{uuid.uuid4().hex[:8]}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    group: str = ""
    topic: str = ""

    def __post_init__(self) -> None:
        # the group the trainers are given; the events topic the service names after the namespace
        self.group = f"{self.namespace}-group"
        self.topic = f"{self.namespace}.events"

    def backend(self) -> TableBackend:
        return open_backend(
            redis_backend_config(self.redis_url, self.namespace, cluster_nodes=self.cluster_nodes)
        )

    def produce(self, events: int) -> None:
        ensure_topics(self.bootstrap, {self.topic: PARTITIONS}, timeout_s=30)
        partitions, stream = partitioned_stream(events, seed=11)
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
        )
        try:
            for partition, event in zip(partitions, stream, strict=True):
                producer.send(
                    self.topic,
                    key=str(event.user_id).encode(),
                    value=encode_event(event, _T0 + events),
                    partition=partition,
                )
            producer.flush(timeout=120)
        finally:
            producer.close(timeout=10)

    def start(self, n: int, port: int) -> None:
        env = {
            **os.environ,
            "FRESHREC_REDIS_URL": self.redis_url,
            "FRESHREC_REDIS_CLUSTER_NODES": self.cluster_nodes,
            "FRESHREC_KAFKA_BOOTSTRAP": self.bootstrap,
            "FRESHREC_NAMESPACE": self.namespace,
            "FRESHREC_TRAINER__GROUP": self.group,
            "FRESHREC_EVENTS_TOPIC_PARTITIONS": str(PARTITIONS),
            "FRESHREC_BATCH_SIZE": str(BATCH),
            "FRESHREC_TRAINER__MEMBER": f"trainer-{n}",
            "FRESHREC_CONSUMER__GROUP_INSTANCE_ID": f"trainer-{n}",
            "FRESHREC_TRAINER_PORT": str(port),
        }
        with (self.logs / f"{self.namespace}-trainer-{n}.log").open("ab") as log:
            self.procs.append(subprocess.Popen(list(self.command), env=env, stdout=log, stderr=log))
        self.urls.append(f"http://127.0.0.1:{port}")

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text()[-1500:]}"
            for log in sorted(self.logs.glob(f"{self.namespace}-*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def clean(self) -> None:
        backend = self.backend()
        try:
            clients = (
                [backend.router.node_client(m) for m in backend.router.masters()]
                if isinstance(backend, RedisClusterTableBackend)
                else [backend.client]
                if isinstance(backend, RedisTableBackend)
                else []
            )
            for client in clients:
                for key in list(client.scan_iter(match=f"{self.namespace}:*", count=10_000)):
                    client.unlink(key)
        finally:
            backend.close()
        admin = open_admin_client(self.bootstrap, client_id="freshrec-bench", timeout_s=30)
        try:
            mine = [t for t in admin.list_topics() if t.startswith(f"{self.namespace}.")]
            if mine:
                admin.delete_topics(mine)
        finally:
            admin.close()


def _committed(backend: TableBackend, group: str) -> int:
    return sum(int(v) for v in backend.get_hash(f"offsets:{group}", group=group).values())


def _batches(url: str) -> float:
    """The batches the trainer at `url` has committed (its `/metrics`; 0 if it does not answer)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "freshrec_trainer_batches":
            return sum(sample.value for sample in family.samples if sample.name.endswith("_total"))
    return 0.0


@dataclass(frozen=True)
class _Mark:
    """The trainers' CPU so far, the group's committed events and the time, read together."""

    cpu_s: float
    committed: int
    at: float


def _mark(phase: _Phase, backend: TableBackend) -> _Mark:
    committed = _committed(backend, phase.group)
    return _Mark(sum(tree_cpu_s(p.pid) for p in phase.procs), committed, time.perf_counter())


def _window(start: _Mark, end: _Mark) -> dict[str, Any]:
    """Events, CPU and wall time between two marks, and events per CPU-second."""
    events, cpu_s = end.committed - start.committed, end.cpu_s - start.cpu_s
    return {
        "events_measured": events,
        "cpu_s": round(cpu_s, 2),
        "wall_s": round(end.at - start.at, 2),
        "events_per_cpu_s": round(events / cpu_s, 1),
    }


def _wait(phase: _Phase, what: str, done: Callable[[], bool], deadline: float) -> None:
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within the phase's deadline\n{phase.log_tail()}")
        if any(proc.poll() is not None for proc in phase.procs):
            raise RuntimeError(f"{what}: a trainer exited\n{phase.log_tail()}")
        time.sleep(0.2)


@dataclass(frozen=True)
class TrainerScaling:
    """The trainer processes' events per CPU-second, 1 to 3 of them, on the cluster and one node.

    Args:
        command: the trainer service's command line (e.g. `python -m services.trainer`).
        ports: a free loopback port per trainer, asked for each time one starts.
        events: the stream's length per count of trainers.
        phase_timeout_s: bound on each phase (start, produce, train).
    """

    command: Sequence[str]
    ports: Callable[[], int]
    events: int = 60_000
    phase_timeout_s: float = 300.0

    def measure(
        self,
        redis_url: str,
        cluster_nodes: str,
        bootstrap: str,
        n: int,
        shown: Callable[[int], None] = lambda _: None,
    ) -> dict[str, Any]:
        """Stream `events` through `n` trainers on the given servers; their CPU and wall time.

        Args:
            shown: called with the committed count while the trainers train (progress).
        """

        with tempfile.TemporaryDirectory(prefix="freshrec-bench-trainers-") as logs:
            phase = _Phase(redis_url, cluster_nodes, bootstrap, self.command, Path(logs))
            backend = phase.backend()
            try:
                phase.produce(self.events)
                for member in range(n):
                    phase.start(member, self.ports())
                deadline = time.monotonic() + self.phase_timeout_s
                _wait(phase, f"{n} trainers ready", lambda: all(map(ready, phase.urls)), deadline)
                marks = self._train(phase, backend, n, shown)
                # what the trainers burn with nothing to train: polls, heartbeats, publishing
                time.sleep(IDLE_S)
                idle_s = _mark(phase, backend).cpu_s - marks[-1].cpu_s
            finally:
                phase.stop()
                backend.close()
                phase.clean()
        ready_at, warm, end = marks
        return {
            "trainers": n,
            **_window(warm, end),
            "committed_when_ready": ready_at.committed,
            "committed_when_warm": warm.committed,
            "from_ready": _window(ready_at, end),
            "idle_cpu_s_per_trainer_s": round(idle_s / (n * IDLE_S), 4),
        }

    def _train(
        self, phase: _Phase, backend: TableBackend, n: int, shown: Callable[[int], None]
    ) -> tuple[_Mark, _Mark, _Mark]:
        """Marks when the trainers are ready, warm (each committed `WARM_BATCHES` batches and
        `WARM_SHARE` of the stream is committed) and done."""

        def warm() -> bool:
            count = _committed(backend, phase.group)
            shown(count)
            return count >= warm_at and all(_batches(url) >= WARM_BATCHES for url in phase.urls)

        def done() -> bool:
            count = _committed(backend, phase.group)
            shown(count)
            return count >= self.events

        warm_at = int(self.events * WARM_SHARE)
        ready_at = _mark(phase, backend)
        deadline = time.monotonic() + self.phase_timeout_s
        _wait(phase, f"{n} trainers warm", warm, deadline)
        warmed = _mark(phase, backend)
        _wait(phase, f"{n} trainers: {self.events} events committed", done, deadline)
        return ready_at, warmed, _mark(phase, backend)

    def run(
        self, cluster_nodes: str, cluster_bootstrap: str, redis_url: str, bootstrap: str
    ) -> dict[str, Any]:
        """1, 2 and 3 trainers on the cluster, and one on the single Redis and Kafka.

        Returns:
            `cluster` (one entry per count), `single_node` (one trainer), the ratios of 2 and 3
            trainers' events per CPU-second to one's, and the target.
        """
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as bar:

            def phase(nodes: str, kafka: str, n: int, where: str) -> dict[str, Any]:
                task = bar.add_task(f"{n} trainer(s), {where}", total=self.events)
                return self.measure(
                    redis_url, nodes, kafka, n, lambda done: bar.update(task, completed=done)
                )

            cluster = [phase(cluster_nodes, cluster_bootstrap, n, "cluster") for n in (1, 2, 3)]
            single = phase("", bootstrap, 1, "single node")
        base = cluster[0]["events_per_cpu_s"]
        return {
            "cluster": cluster,
            "single_node": single,
            "efficiency_2": round(cluster[1]["events_per_cpu_s"] / base, 3),
            "efficiency_3": round(cluster[2]["events_per_cpu_s"] / base, 3),
            "efficiency_from_ready": [
                round(
                    c["from_ready"]["events_per_cpu_s"]
                    / cluster[0]["from_ready"]["events_per_cpu_s"],
                    3,
                )
                for c in cluster
            ],
            "cluster_vs_single_node_1": round(base / single["events_per_cpu_s"], 3),
            "target_efficiency": 0.8,
            "events": self.events,
            "partitions": PARTITIONS,
            "batch_size": BATCH,
        }
