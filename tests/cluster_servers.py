"""The cluster topology of `deploy/local/servers.sh` for tests: start it, find it, break it.

A Redis Cluster of 6 nodes (3 masters + 3 replicas) and a 3-node KRaft Kafka (each node broker
and controller) on loopback ports counted from a base port each (docs/scaling.md, "Topology").
Failover tests kill a Redis master or a broker with SIGKILL and restart it with `servers.sh up`,
which starts only the nodes that do not answer: a restarted Redis node rejoins on its
nodes.conf as a replica of the master that took its place, a restarted broker on its log
directory.

`ClusterServers` fails the test (`pytest.fail`, never a skip) when a server cannot be started
or a wait runs out.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode

from tests.private_servers import port_answers
from tests.waiting import wait_until

__all__ = [
    "CLUSTER_EVENTS_PARTITIONS",
    "KAFKA_NODE_IDS",
    "REDIS_NODES",
    "REDIS_SLOTS",
    "ClusterServers",
    "RedisNode",
    "free_port_run",
    "pid_alive",
]

ROOT = Path(__file__).resolve().parents[1]
SERVERS_SH = ROOT / "deploy" / "local" / "servers.sh"
KAFKA_BROKERS_PY = ROOT / "deploy" / "local" / "kafka-brokers.py"

REDIS_NODES = 6
REDIS_SLOTS = 16384
KAFKA_NODE_IDS = (1, 2, 3)
CLUSTER_EVENTS_PARTITIONS = 6
"""`FRESHREC_EVENTS_TOPIC_PARTITIONS` on the cluster topology (docs/scaling.md): the broker's
`num.partitions`, room for up to 6 trainers in one group."""


def free_port_run(count: int, *, low: int = 20000, high: int = 30000) -> int:
    """The first of `count` consecutive loopback ports that are all free now.

    Below the kernel's ephemeral range (32768 and up), so a client's outgoing connection does
    not take one of them between this check and the server's bind.

    Raises:
        RuntimeError: no such run was found in 200 tries.
    """
    for _ in range(200):
        base = random.randrange(low, high - count)
        if all(_port_free(port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {low}..{high}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _default_run_dir() -> Path:
    cache = os.environ.get("FRESHREC_CACHE_DIR")
    if cache:
        return Path(cache) / "run"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "freshrec" / "run"


@dataclass(frozen=True)
class RedisNode:
    """One line of `CLUSTER NODES`, as a live node sees it."""

    node_id: str
    port: int
    role: str  # "master" or "replica"
    master_id: str | None  # the master a replica follows
    failed: bool  # flagged fail or pfail
    slots: int  # slots it serves (masters)


def _slot_count(fields: list[str]) -> int:
    count = 0
    for item in fields:
        if item.startswith("["):  # a slot being migrated
            continue
        first, _, last = item.partition("-")
        count += int(last or first) - int(first) + 1
    return count


class ClusterServers:
    """The cluster topology on one run directory and one set of base ports."""

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        redis_port: int = 7000,
        redis_bus_port: int | None = None,
        kafka_port: int = 9192,
        start_timeout_s: float = 90.0,
    ) -> None:
        """Describe (not start) a cluster topology.

        Args:
            run_dir: `FRESHREC_RUN_DIR` for servers.sh; None is its default.
            redis_port: first Redis node's port; the nodes use `redis_port .. redis_port + 5`.
            redis_bus_port: first node's cluster bus port; None is `redis_port + 10000`.
            kafka_port: node 1's broker port; node n uses `kafka_port + 2 (n - 1)` and the
                port after it for its controller.
            start_timeout_s: `FRESHREC_START_TIMEOUT`.
        """
        self.run_dir = run_dir or _default_run_dir()
        self.redis_ports = [redis_port + i for i in range(REDIS_NODES)]
        self.redis_bus_port = redis_port + 10000 if redis_bus_port is None else redis_bus_port
        self.kafka_ports = {n: kafka_port + 2 * (n - 1) for n in KAFKA_NODE_IDS}
        self.start_timeout_s = start_timeout_s
        self.env = {
            **os.environ,
            "FRESHREC_TOPOLOGY": "cluster",
            "FRESHREC_RUN_DIR": str(self.run_dir),
            "FRESHREC_REDIS_CLUSTER_PORT": str(redis_port),
            "FRESHREC_REDIS_CLUSTER_BUS_PORT": str(self.redis_bus_port),
            "FRESHREC_KAFKA_CLUSTER_PORT": str(kafka_port),
            "FRESHREC_START_TIMEOUT": str(int(start_timeout_s)),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ClusterServers:
        """The topology the `FRESHREC_*` knobs of servers.sh describe (their defaults if unset)."""
        run_dir = environ.get("FRESHREC_RUN_DIR")
        redis_port = int(environ.get("FRESHREC_REDIS_CLUSTER_PORT", "7000"))
        bus = environ.get("FRESHREC_REDIS_CLUSTER_BUS_PORT")
        return cls(
            Path(run_dir) if run_dir else None,
            redis_port=redis_port,
            redis_bus_port=int(bus) if bus else None,
            kafka_port=int(environ.get("FRESHREC_KAFKA_CLUSTER_PORT", "9192")),
            start_timeout_s=float(environ.get("FRESHREC_START_TIMEOUT", "90")),
        )

    # ------------------------------------------------------------------ addresses

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        """Every Redis node, for `redis.cluster.RedisCluster(startup_nodes=...)`."""
        return [ClusterNode("127.0.0.1", port) for port in self.redis_ports]  # type: ignore[no-untyped-call]

    @property
    def redis_nodes(self) -> str:
        """Every Redis node as `host:port,...` (`FRESHREC_REDIS_CLUSTER_NODES`)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.redis_ports)

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers: every broker, `host:port,...`."""
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports.values())

    # ------------------------------------------------------------------ servers.sh

    def servers(self, action: str, which: str = "all", *, check: bool = True) -> str:
        """Run `servers.sh action which` on this topology; returns its log (stderr).

        With `check`, a failure fails the test with servers.sh's own reason.
        """
        args = ["bash", str(SERVERS_SH), action] + ([] if which == "all" else [which])
        try:
            proc = subprocess.run(
                args,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=2 * self.start_timeout_s + 60,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            log = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr
            pytest.fail(f"servers.sh {action} {which} (cluster) hung:\n{log}", pytrace=False)
        if check and proc.returncode != 0 and action != "status":
            pytest.fail(
                f"servers.sh {action} {which} (cluster topology) failed:\n{proc.stderr}",
                pytrace=False,
            )
        return proc.stderr

    def up(self, which: str = "all") -> str:
        """Start what does not answer and wait until the cluster(s) are healthy."""
        return self.servers("up", which)

    def down(self, which: str = "all", *, check: bool = True) -> str:
        """Stop the processes whose pid files servers.sh wrote in this run directory."""
        return self.servers("down", which, check=check)

    def answering(self, which: str = "all") -> bool:
        """Every node of `which` (all, redis or kafka) accepts connections."""
        ports: list[int] = []
        if which != "kafka":
            ports += self.redis_ports
        if which != "redis":
            ports += self.kafka_ports.values()
        return all(port_answers(port) for port in ports)

    def pids(self) -> dict[str, int]:
        """Live processes by name (`redis-<port>`, `kafka-<node id>`), from the pid files."""
        found: dict[str, int] = {}
        names = [f"redis-{p}" for p in self.redis_ports] + [f"kafka-{n}" for n in KAFKA_NODE_IDS]
        for name in names:
            pidfile = self.run_dir / "cluster" / f"{name}.pid"
            try:
                pid = int(pidfile.read_text())
            except (OSError, ValueError):
                continue
            if pid_alive(pid):
                found[name] = pid
        return found

    # ------------------------------------------------------------------ Redis Cluster

    def _redis(self, port: int, *command: str) -> str | None:
        client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)
        try:
            reply = client.execute_command(*command)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        finally:
            client.close()
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def cluster_info(self, port: int) -> dict[str, str]:
        """`CLUSTER INFO` of one node as a dict; empty when the node does not answer."""
        reply = self._redis(port, "CLUSTER", "INFO")
        if reply is None:
            return {}
        pairs = (line.split(":", 1) for line in reply.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    def cluster_nodes(self, port: int) -> list[RedisNode]:
        """`CLUSTER NODES` as the node on `port` sees them; empty when it does not answer."""
        reply = self._redis(port, "CLUSTER", "NODES")
        nodes = []
        for line in (reply or "").splitlines():
            fields = line.split()
            flags = fields[2].split(",")
            role = "master" if "master" in flags else "replica"
            nodes.append(
                RedisNode(
                    node_id=fields[0],
                    port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                    role=role,
                    master_id=None if fields[3] == "-" else fields[3],
                    failed="fail" in flags or "fail?" in flags,
                    slots=_slot_count(fields[8:]),
                )
            )
        return nodes

    def role(self, port: int) -> str | None:
        """The role the node itself reports (`ROLE`): master or replica; None when down."""
        client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=1)
        try:
            reply = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        finally:
            client.close()
        first = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return "replica" if first == "slave" else first

    def redis_masters(self) -> list[int]:
        """Ports of the masters serving slots, as the first live node sees them."""
        for port in self.redis_ports:
            nodes = self.cluster_nodes(port)
            if nodes:
                return sorted(
                    n.port for n in nodes if n.role == "master" and n.slots and not n.failed
                )
        return []

    def replicas_of(self, master_port: int) -> list[int]:
        """Ports of the live replicas following the master on `master_port`."""
        for port in self.redis_ports:
            nodes = self.cluster_nodes(port)
            if nodes:
                ids = [n.node_id for n in nodes if n.port == master_port]
                return sorted(
                    n.port for n in nodes if ids and n.master_id == ids[0] and not n.failed
                )
        return []

    def cluster_ok(self, ports: list[int] | None = None) -> bool:
        """Every node of `ports` (default all) reports `cluster_state:ok`."""
        return all(
            self.cluster_info(port).get("cluster_state") == "ok"
            for port in (self.redis_ports if ports is None else ports)
        )

    def redis_pid(self, port: int) -> int:
        pids = self.pids()
        if f"redis-{port}" not in pids:
            pytest.fail(f"no live Redis node on port {port} with a pid file in {self.run_dir}")
        return pids[f"redis-{port}"]

    def kill_redis_master(self, port: int, timeout_s: float = 30.0) -> int:
        """SIGKILL the master on `port`; wait until a replica took its slots and all is ok.

        Returns:
            The port of the replica promoted in its place.
        """
        if port not in self.redis_masters():
            pytest.fail(f"Redis on port {port} is not a master: {self.redis_masters()}")
        replicas = self.replicas_of(port)
        if not replicas:
            pytest.fail(f"the master on port {port} has no replica to take over")
        pid = self.redis_pid(port)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10, f"Redis master {port} (pid {pid}) to die")
        others = [p for p in self.redis_ports if p != port]

        def promoted() -> int | None:
            if not self.cluster_ok(others):
                return None
            return next((r for r in replicas if self.role(r) == "master"), None)

        found = wait_until(
            promoted,
            timeout_s,
            f"a replica of killed master {port} ({replicas}) promoted, cluster_state:ok",
            interval_s=0.2,
            detail=lambda: {p: self.cluster_info(p).get("cluster_state") for p in others},
        )
        assert found is not None  # wait_until returns only a truthy value
        return found

    def restart_redis_node(self, port: int) -> None:
        """Start the stopped node on `port` on its data; return once it is a synced replica.

        `servers.sh up redis` starts only the nodes that do not answer and waits until every
        master has a synced replica again: the restarted node is that replica.
        """
        self.up("redis")
        role = self.role(port)
        if role != "replica":
            pytest.fail(f"restarted Redis node {port} is {role}, not a replica", pytrace=False)

    # ------------------------------------------------------------------ Kafka

    def live_brokers(self, node_id: int) -> list[int]:
        """Node ids of the live brokers the broker `node_id` reports; empty if it is down."""
        proc = subprocess.run(
            [sys.executable, str(KAFKA_BROKERS_PY), str(self.kafka_ports[node_id])],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return [int(line) for line in proc.stdout.split()] if proc.returncode == 0 else []

    def kafka_pid(self, node_id: int) -> int:
        pids = self.pids()
        if f"kafka-{node_id}" not in pids:
            pytest.fail(f"no live Kafka node {node_id} with a pid file in {self.run_dir}")
        return pids[f"kafka-{node_id}"]

    def kill_broker(
        self, node_id: int, *, wait_fenced: bool = True, timeout_s: float = 30.0
    ) -> None:
        """SIGKILL Kafka node `node_id` and wait until it is gone.

        Args:
            node_id: 1, 2 or 3.
            wait_fenced: also wait until the other nodes no longer list it as a live broker
                (the controller fences it after `broker.session.timeout.ms`, 9 s).
            timeout_s: bound on that wait.
        """
        pid = self.kafka_pid(node_id)
        os.kill(pid, signal.SIGKILL)
        port = self.kafka_ports[node_id]
        wait_until(
            lambda: not pid_alive(pid) and not port_answers(port),
            10,
            f"Kafka node {node_id} (pid {pid}) to die",
        )
        if not wait_fenced:
            return
        others = [n for n in KAFKA_NODE_IDS if n != node_id]
        wait_until(
            lambda: all(node_id not in self.live_brokers(n) for n in others),
            timeout_s,
            f"Kafka nodes {others} to fence node {node_id}",
            interval_s=0.5,
        )

    def restart_broker(self, node_id: int) -> None:
        """Start Kafka node `node_id` on its log directory; return once 3 brokers are live."""
        if port_answers(self.kafka_ports[node_id]):
            pytest.fail(f"Kafka node {node_id} is still running", pytrace=False)
        self.up("kafka")
