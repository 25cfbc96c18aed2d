"""What the e2e tests on the Redis Cluster and 3-broker Kafka share: the stack's servers and
environment, and wiping a test's keys from every master afterwards."""

from __future__ import annotations

from freshrec.table.redis_cluster import RedisClusterTableBackend
from tests.cluster_servers import ClusterServers
from tests.conftest import Servers

__all__ = ["cluster_stack_env", "cluster_stack_servers", "wipe_cluster_namespace"]


def cluster_stack_servers(servers: Servers, cluster: ClusterServers) -> Servers:
    """The stack's servers: Kafka is the 3-broker cluster (RF 3, min ISR 2)."""
    return Servers(redis_url=servers.redis_url, kafka_bootstrap=cluster.bootstrap)


def cluster_stack_env(cluster: ClusterServers, **extra: str) -> dict[str, str]:
    """The services' environment on the Redis Cluster, plus `extra`."""
    return {"FRESHREC_REDIS_CLUSTER_NODES": cluster.redis_nodes, **extra}


def wipe_cluster_namespace(cluster: ClusterServers, namespace: str) -> None:
    """Delete every key of `namespace` on every master."""
    backend = RedisClusterTableBackend.from_nodes(cluster.redis_nodes, namespace=namespace)
    try:
        for node in backend.router.masters():
            client = backend.router.node_client(node)
            for key in list(client.scan_iter(match=f"{namespace}:*", count=10_000)):
                client.unlink(key)
    finally:
        backend.close()
