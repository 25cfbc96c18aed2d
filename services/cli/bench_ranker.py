"""`freshrec bench ranker`'s processes: the stack and the baseline apps, on free ports.

The services run in a scratch namespace of the given Redis and Kafka; the two baseline apps
of `services.cli.bench_apps` are served by uvicorn as the ranker is (one process each). The
library's `run_ranker_bench` gets their URLs; everything is stopped and the namespace
removed afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from freshrec.offline.bench.ranker import RankerBenchTargets, clear_namespace, run_ranker_bench
from freshrec.retrieval.config import IvfConfig, RetrieverConfig, SplitConfig
from freshrec.retrieval.faiss.ivf import ivf_nlist
from services.cli import stack
from services.cli.paths import checkout_dir
from services.cli.ports import free_port

__all__ = ["ranker_bench"]


def _stack_env(
    redis_url: str, bootstrap: str, namespace: str, key: str, index: RetrieverConfig
) -> dict[str, str]:
    ports = {name: free_port() for name in ("INGEST", "TRAINER", "RANKER")}
    return {
        **os.environ,
        "FRESHREC_REDIS_URL": redis_url,
        "FRESHREC_KAFKA_BOOTSTRAP": bootstrap,
        "FRESHREC_NAMESPACE": namespace,
        "FRESHREC_TRAINER__GROUP": f"{namespace}-group",
        "FRESHREC_API_KEYS": key,
        "FRESHREC_TRAINER__PUBLISH_INTERVAL_S": "1",
        "FRESHREC_MAX_BATCH_WAIT_S": "0.01",
        "FRESHREC_CANDIDATES": "500",
        **{
            f"FRESHREC_INDEX__{name.upper()}": str(value)
            for name, value in index.model_dump(exclude_none=True).items()
        },
        **{f"FRESHREC_{name}_PORT": str(port) for name, port in ports.items()},
    }


def _baseline_servers(ports: Mapping[str, int]) -> list[subprocess.Popen[bytes]]:
    """Serve each `services.cli.bench_apps:<app>` on its port with uvicorn."""
    root = checkout_dir()
    path = os.pathsep.join([str(root / "libs"), str(root), os.environ.get("PYTHONPATH", "")])
    return [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"services.cli.bench_apps:{app}",
             "--port", str(port), "--host", "127.0.0.1", "--log-level", "warning",
             "--no-access-log"],
            env={**os.environ, "PYTHONPATH": path},
        )
        for app, port in ports.items()
    ]  # fmt: skip


def ranker_bench(
    redis_url: str,
    bootstrap: str,
    out: Path,
    index: RetrieverConfig,
    *,
    items: int = 100_000,
    catalog: str = "random",
) -> dict[str, Any]:
    """Start the stack and the baselines, run the ranker bench against them, stop them all."""
    if isinstance(index, IvfConfig | SplitConfig) and index.nlist is None:
        # the ranker trains as the catalog grows (last at half its size or so); a fixed
        # nlist makes its lists those of the index the bench times at the full size
        listed = items if isinstance(index, IvfConfig) else items * (1 - index.head_fraction)
        index = index.model_copy(update={"nlist": ivf_nlist(round(listed))})
    namespace = f"bench-ranker-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    env = _stack_env(redis_url, bootstrap, namespace, key, index)
    workdir = Path(tempfile.mkdtemp(prefix="freshrec-bench-"))
    noop_port, http_port = free_port(), free_port()
    with stack.use_run_dir(workdir / "run"):
        baselines = _baseline_servers({"noop": noop_port, "ranker_http": http_port})
        try:
            urls = stack.start_services(timeout_s=180, env=env)
            targets = RankerBenchTargets(
                ingest=urls["ingest"],
                ranker=urls["ranker"],
                noop=f"http://127.0.0.1:{noop_port}",
                ranker_http=f"http://127.0.0.1:{http_port}",
                api_key=key,
                namespace=namespace,
            )
            return run_ranker_bench(
                targets,
                redis_url,
                out,
                items=items,
                index_kind=index.type,
                index=None if index.type == "flat" else index,
                catalog_kind=catalog,
            )
        finally:
            for server in baselines:
                server.terminate()
                server.wait(timeout=10)
            stack.stop_services()
            clear_namespace(redis_url, namespace)
