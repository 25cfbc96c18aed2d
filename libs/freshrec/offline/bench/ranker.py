"""Ranker and end-to-end freshness benchmarks, against running services whose URLs it is given.

The caller starts the stack (ingest, trainer, ranker in one scratch namespace) and two
baseline servers, and hands their URLs in as `RankerBenchTargets`; this module seeds the
catalog, measures and writes the figures.

`results/bench/ranker.json`:
- the catalog: `random` item rows (N(0, 0.1²), the structureless worst case) or `trained`
  ones (the retrieval bench's cached trained catalog of the same size), recorded as
  `catalog`;
- p50/p99 latency of `POST /v1/recommend` (100,000 items in the index by default, 500
  candidates, k=50) at fixed offered rates — open loop: requests are sent on a fixed
  schedule from a separate process and latency is measured from each request's scheduled
  time, so a slow answer delays no later measurement (no coordinated omission); a 5 s
  unmeasured warm-up at the lowest rate comes first; beside each rate, `breakdown`: where
  the phase's requests spent their time, from the ranker's own `/metrics` read before and
  after it (`freshrec.offline.bench.ranker_costs.stage_breakdown`);
- `latency_under_item_updates`: the same at 300 req/s while the bench rewrites 2,000 random
  item rows a second (ten writes a second, as a trainer's pushes), which the ranker's
  follower applies to its index, row mirror and popularity as it serves; the breakdown's
  `index_changes` counts what it applied;
- `max_qps`: closed loop with a fixed number of concurrent clients, and its
  `max_qps_breakdown` (the same `stage_breakdown`, over the closed loop);
- `noop_max_qps`: the same closed loop against a no-op FastAPI route served by uvicorn the
  same way, measured in the same run — the ceiling this machine puts on any Python route;
- `http_only_max_qps`: the same closed loop against the ranker's HTTP handling alone (its
  middlewares, request model and a reply of the same size, no recommendation work): how
  much of the gap to the no-op route is HTTP and how much the recommendation;
- `exact_search_ms_per_query`: exact top-500 over the same catalog in batches of 32 on one
  thread, timed in this process (best of three); and `exact_ceiling_max_qps`,
  `1 / (1 / http_only_max_qps + exact search time)`: the most an exact ranker could answer
  on this machine if scoring, row reads and batching cost nothing; for an approximate
  index, `index_search_ms_per_query` and `index_ceiling_max_qps` are the same for that
  index's own search (built in this process over the same catalog), with its cost per call
  at batches of 1, 2, 3 and 32 (`index_search_by_batch`) and its recall@100 against exact
  on the catalog's queries (`index_recall_at_100`).

`results/bench/freshness.json`: `e2e_p50_s` / `e2e_p99_s` from posting an event to ingest
until the ranker's row endpoint shows the changed vector.

Seeding and the freshness probe are plain request/response and go through
`freshrec.client` (`send_events`, `row`). The load phases do not: they drive the ranker over
raw keep-alive HTTP/1.1 connections (`_Connection`) with pre-built requests, because a load
generator must cost far less CPU per request than the server it measures (on two cores, a
general client's pool and response models would be a share of the figure), and an open-loop
generator must never retry: a refused or failed request is a failure of its scheduled send,
counted in `errors`, not sent again later.

Run: `freshrec bench ranker` (needs Redis and Kafka up: `make up`); it starts the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import multiprocessing
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from freshrec.client import FreshrecClient
from freshrec.errors import NotFound
from freshrec.offline.bench.catalog import Catalog, make_catalog
from freshrec.offline.bench.ranker_costs import (
    parse_counters,
    recall_at_k,
    search_costs,
    single_query_tail,
    stage_breakdown,
)
from freshrec.offline.bench.retrieval import SEED
from freshrec.offline.bench.updates import ItemUpdates, item_rows
from freshrec.retrieval.config import RetrieverConfig
from freshrec.retrieval.factory import build_retriever
from freshrec.settings import default_table_config_path
from freshrec.table import RedisTableBackend, hash_features, load_tables
from freshrec.table.config import TableConfig

__all__ = [
    "RANKER_CATALOGS",
    "RankerBenchTargets",
    "clear_namespace",
    "ranker_catalog",
    "run_ranker_bench",
]

_T0 = 1_750_000_000.0
_WARMUP_S = 5.0
_CANDIDATES = 500
# The phase under live updates: item rows rewritten per second.
_UPDATE_ROWS_PER_S = 2_000
RANKER_CATALOGS = ("random", "trained")


@dataclass(frozen=True)
class RankerBenchTargets:
    """The running servers the ranker bench measures.

    Attributes:
        ingest: base URL of the ingest service.
        ranker: base URL of the ranker, following the trainer of the same namespace.
        noop: base URL of a no-op FastAPI app (`GET /noop`) served as the ranker is.
        ranker_http: base URL of the ranker's HTTP handling alone (`POST /v1/recommend`
            with the same middlewares, request model and reply size, no recommendation work).
        api_key: a bearer key the services accept.
        namespace: the services' `FRESHREC_NAMESPACE`, where the catalog is seeded.
    """

    ingest: str
    ranker: str
    noop: str
    ranker_http: str
    api_key: str
    namespace: str


def _percentiles(values: list[float]) -> tuple[float, float]:
    array = np.array(values)
    return float(np.percentile(array, 50)), float(np.percentile(array, 99))


class _Connection:
    """One keep-alive HTTP/1.1 connection on raw asyncio streams.

    A load generator must cost far less CPU than the server it drives; a general HTTP client's
    connection pool does too much bookkeeping per request for that on two cores.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(raw)
        await self.writer.drain()
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(status_line.split(b" ", 2)[1])


def _requests(url: str, body: Mapping[str, Any] | None, n: int) -> tuple[str, int, list[bytes]]:
    parsed = httpx.URL(url)
    host, port = parsed.host, parsed.port or 80
    out = []
    for i in range(n):
        if body is None:
            out.append(f"GET {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            continue
        payload = json.dumps({**body, "user_id": f"u{i % 1000}"}).encode()
        head = (
            f"POST {parsed.raw_path.decode()} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        out.append(head.encode() + payload)
    return host, port, out


async def _open_loop(
    url: str, body: Mapping[str, Any], rate: float, seconds: float
) -> tuple[list[float], list[float]]:
    """Latencies (s) measured from each request's scheduled send time (NaN for failures),
    and each request's send lag (s): how late the generator itself wrote it."""
    n = int(rate * seconds)
    host, port, raws = _requests(url, body, n)
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    latencies: list[float] = []
    lags: list[float] = []
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        conn = _Connection(host, port)
        while True:
            due, raw = await queue.get()
            lags.append(loop.time() - due)
            try:
                ok = await conn.request(raw) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                conn = _Connection(host, port)
                ok = False
            latencies.append(loop.time() - due if ok else float("nan"))
            queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(64)]
    start = loop.time() + 0.05
    for i, raw in enumerate(raws):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        queue.put_nowait((due, raw))  # a request waits in the queue only if all 64 are busy
    await queue.join()
    for task in workers:
        task.cancel()
    return latencies, lags


async def _closed_loop(
    url: str, body: Mapping[str, Any] | None, clients: int, seconds: float
) -> float:
    """Completed requests per second with `clients` connections sending back to back."""
    host, port, raws = _requests(url, body, 1000)
    done = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        conn = _Connection(host, port)
        i = w
        while loop.time() < end:
            if await conn.request(raws[i % len(raws)]) == 200:
                done += 1
            i += clients

    await asyncio.gather(*(worker(w) for w in range(clients)))
    return done / seconds


def _load_process(kind: str, url: str, args: dict[str, Any], out: Any) -> None:
    """Child process: run one load phase and send its figures back."""
    # A collection in the generator would pause sending and be counted as server latency
    # (measured here at 15-60 ms per full collection); one phase allocates a bounded amount.
    gc.collect()
    gc.freeze()
    gc.disable()
    if kind == "open":
        out.send(asyncio.run(_open_loop(url, args["body"], args["rate"], args["seconds"])))
    else:
        out.send(asyncio.run(_closed_loop(url, args["body"], args["clients"], args["seconds"])))


def _in_child(kind: str, url: str, **args: Any) -> Any:
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_load_process, args=(kind, url, args, send))
    child.start()
    result = receive.recv()
    child.join(timeout=30)
    return result


def _wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f}s")


def _index_gauge(ranker: str, name: str) -> float | None:
    """The ranker's gauge `name` (e.g. `freshrec_index_items`); None while it cannot say."""
    try:
        text = httpx.get(f"{ranker}/metrics", timeout=5).text
    except httpx.TimeoutException:
        return None  # busy building a large index: asked again until the deadline
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _index_settled(ranker: str, items: int) -> bool:
    """The index holds the catalog and no rebuild runs in the background: a retrain at the
    full size takes a core for a minute or more, and the figures describe steady state."""
    held = _index_gauge(ranker, "freshrec_index_items")
    return (
        held is not None
        and held >= items
        and _index_gauge(ranker, "freshrec_index_rebuilding") == 0.0
    )


def _seed_catalog(
    client: redis.Redis,
    namespace: str,
    urls: Mapping[str, str],
    key: str,
    *,
    catalog: Catalog,
    config: TableConfig,
) -> None:
    """1,000 users with history through the real pipeline, then the catalog's item rows
    imported."""
    events = [
        {
            "event_id": f"seed{n}",
            "type": "rating",
            "user_id": f"u{n % 1000}",
            "item_id": f"i{(n * 7919) % 5000}",
            "timestamp": _T0 + n,
            "value": float(1 + n % 5),
        }
        for n in range(5000)
    ]
    with FreshrecClient(urls["ingest"], api_key=key, timeout_s=30.0) as poster:
        poster.send_events(events)  # in batches of ingest's limit, retried if refused
    store = RedisTableBackend(client, namespace).store(config)
    items = catalog.items.shape[0]
    for start in range(0, items, 20_000):
        picked = np.arange(start, min(start + 20_000, items))
        store.import_rows(item_rows(catalog, picked, catalog.items[picked], _T0))
    # the ranker builds (and for IVF trains) its index as the rows arrive: a million items
    # take minutes on two busy cores
    wait_s = 120 + items / 2_000
    deadline = time.monotonic() + wait_s
    while not _index_settled(urls["ranker"], items):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the ranker's index did not reach the catalog size and finish its rebuilds "
                f"in {wait_s} s"
            )
        time.sleep(0.5)


def ranker_catalog(kind: str, items: int, dim: int, queries: int = 256) -> Catalog:
    """The ranker bench's item rows and the queries its index is timed with.

    Args:
        kind: `random` (N(0, 0.1²) vectors, the structureless worst case) or `trained` (the
            item rows of `freshrec.offline.bench.catalog.trained_catalog`, a sample of its
            trained users as queries).
        items: catalog size.
        dim: the item table's dimension (a `trained` catalog has the shipped tables' 32).
        queries: queries drawn for timing the index.

    Returns:
        The catalog: `(N,)` ids, `(N, D)` item rows, `(queries, D)` queries.
    """
    if kind == "trained":
        # the retrieval bench's seed: both benches share one cached catalog per size
        return make_catalog("trained", items, queries, dim, SEED)
    if kind != "random":
        raise ValueError(f"unknown ranker catalog {kind!r}; expected one of {RANKER_CATALOGS}")
    ids = np.concatenate(
        [hash_features("item", [f"c{j}" for j in range(s, min(s + 20_000, items))])
         for s in range(0, items, 20_000)]
    )  # fmt: skip
    vectors = (np.random.default_rng(0).standard_normal((items, dim)) * 0.1).astype(np.float32)
    probes = (np.random.default_rng(1).standard_normal((queries, dim)) * 0.3).astype(np.float32)
    return Catalog(kind, ids, vectors, probes, {"how": "iid N(0, 0.1^2)"})


def _index_costs(catalog: Catalog, index: RetrieverConfig | None) -> dict[str, Any]:
    """Exact search and the configured index's own search over the catalog, per call at the
    ranker's batch sizes, and the index's recall@100 against exact (same queries)."""
    vectors, queries = catalog.items, catalog.queries
    exact = search_costs(None, vectors, queries, _CANDIDATES)
    costs: dict[str, Any] = {"exact": exact, "index": exact, "index_recall_at_100": 1.0}
    if index is not None:
        started = time.perf_counter()
        retriever = build_retriever(index, vectors.shape[1])
        retriever.replace(np.arange(vectors.shape[0], dtype=np.uint64), vectors)
        costs["index_build_s"] = round(time.perf_counter() - started, 1)
        costs["index"] = search_costs(retriever, vectors, queries, _CANDIDATES)
        costs["index_single_query"] = single_query_tail(retriever, queries, _CANDIDATES)
        costs["index_recall_at_100"] = round(recall_at_k(retriever, vectors, queries, 100), 4)
    return costs


def _vector(client: FreshrecClient, user: str) -> list[float] | None:
    try:
        return client.row("user", user).vector
    except NotFound:
        return None


def _freshness(urls: Mapping[str, str], key: str, probes: int) -> list[float]:
    """Seconds from posting one event to the ranker's row endpoint showing the changed row."""
    out: list[float] = []
    with FreshrecClient(urls["ingest"], urls["ranker"], api_key=key, timeout_s=10.0) as client:
        for n in range(probes):
            vector = _vector(client, "probe-user")
            event = {
                "event_id": f"probe{n}-{uuid.uuid4().hex[:6]}",
                "type": "rating",
                "user_id": "probe-user",
                "item_id": f"i{n % 50}",
                "timestamp": _T0 + 10_000 + n,
                "value": 5.0 if n % 2 else 1.0,
            }
            start = time.perf_counter()
            client.send_events([event])
            deadline = start + 10
            while time.perf_counter() < deadline:
                seen = _vector(client, "probe-user")
                if seen is not None and seen != vector:
                    out.append(time.perf_counter() - start)
                    break
                time.sleep(0.002)
            else:
                out.append(float("inf"))
    return out


def clear_namespace(redis_url: str, namespace: str) -> None:
    """Delete every Redis key of a scratch namespace (`<namespace>:*`), in batches.

    Args:
        redis_url: the Redis the namespace lives in.
        namespace: the prefix the bench's services wrote under.
    """
    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=5000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start : start + 5000])


def _counters(ranker: str) -> dict[str, float]:
    return parse_counters(httpx.get(f"{ranker}/metrics", timeout=10).text)


def _latency_by_rate(
    ranker: str, body: Mapping[str, Any], rates: tuple[float, ...], seconds: float
) -> dict[str, dict[str, Any]]:
    """p50/p99 per offered rate, and where the phase's requests spent their time."""
    latency: dict[str, dict[str, Any]] = {}
    for rate in rates:
        before, started = _counters(ranker), time.monotonic()
        samples, lags = _in_child(
            "open", f"{ranker}/v1/recommend", body=body, rate=rate, seconds=seconds
        )
        wall_s = time.monotonic() - started
        after = _counters(ranker)
        finite = [s for s in samples if np.isfinite(s)]
        p50, p99 = _percentiles(finite) if finite else (float("nan"), float("nan"))
        mean_s = float(np.mean(finite)) if finite else float("nan")
        latency[f"{rate:g}"] = {
            "p50_ms": round(p50 * 1000, 2),
            "p99_ms": round(p99 * 1000, 2),
            "requests": len(samples),
            "errors": len(samples) - len(finite),
            # the generator's own tail: a late send is counted as server latency
            "send_lag_p99_ms": round(float(np.percentile(lags, 99)) * 1000, 2),
            "breakdown": stage_breakdown(before, after, mean_s, wall_s),
        }
    return latency


def run_ranker_bench(
    targets: RankerBenchTargets,
    redis_url: str,
    out: Path,
    *,
    items: int = 100_000,
    rates: tuple[float, ...] = (100.0, 300.0, 600.0),
    seconds: float = 10.0,
    probes: int = 40,
    index_kind: str = "flat",
    index: RetrieverConfig | None = None,
    catalog_kind: str = "random",
    live_rate: float = 300.0,
) -> dict[str, Any]:
    """Run the ranker and freshness benchmarks; writes `ranker.json` and `freshness.json`.

    Args:
        targets: the running services and baseline servers to measure.
        redis_url: the Redis the services use; the catalog's item rows are imported there.
        out: output directory.
        items: catalog size in the index.
        rates: offered request rates of the open-loop phases.
        seconds: length of each load phase.
        probes: end-to-end freshness probes.
        index_kind: the ranker's `FRESHREC_INDEX__TYPE` (flat = exact, ivf/hnsw =
            approximate); names the output file and is recorded in it.
        index: the ranker's index config when approximate: its own search time over a
            catalog of the same size gives `index_ceiling_max_qps`, as exact search gives
            `exact_ceiling_max_qps`.
        catalog_kind: the item rows seeded, `random` (the worst case) or `trained` (see
            `ranker_catalog`); recorded, and named in the output file when trained.
        live_rate: offered rate of the phase under live item updates.

    Returns:
        `{"ranker": ..., "freshness": ...}`, the two JSON documents written.
    """
    urls = {"ingest": targets.ingest, "ranker": targets.ranker}
    key = targets.api_key
    client = redis.Redis.from_url(redis_url)
    item_config = load_tables(default_table_config_path())["item"]
    catalog = ranker_catalog(catalog_kind, items, item_config.dim)
    try:
        _seed_catalog(client, targets.namespace, urls, key, catalog=catalog, config=item_config)
        body = {"k": 50}
        # warm-up, not measured: the trainer is still digesting the seed events and the
        # ranker loads their model; steady state is what the figures describe
        _in_child(
            "open", f"{urls['ranker']}/v1/recommend", body=body, rate=rates[0], seconds=_WARMUP_S
        )
        latency = _latency_by_rate(urls["ranker"], body, rates, seconds)
        store = RedisTableBackend(client, targets.namespace).store(item_config)
        started = time.monotonic()
        with ItemUpdates(store, catalog, _UPDATE_ROWS_PER_S, _T0) as updates:
            live = _latency_by_rate(urls["ranker"], body, (live_rate,), seconds)[f"{live_rate:g}"]
        live["item_rows_written_per_s"] = round(updates.rows / (time.monotonic() - started))
    finally:
        client.close()
    before = _counters(urls["ranker"])
    max_qps = _in_child(
        "closed", f"{urls['ranker']}/v1/recommend", body=body, clients=32, seconds=seconds
    )
    # where the gap to the ceiling goes, stage by stage (client latency by Little's law;
    # the ranker idles while the child starts, so its CPU share is over the load's length)
    max_qps_breakdown = stage_breakdown(
        before, _counters(urls["ranker"]), 32 / max_qps if max_qps else 0.0, seconds
    )
    _wait_http(f"{targets.noop}/noop")
    noop_qps = _in_child("closed", f"{targets.noop}/noop", body=None, clients=32, seconds=seconds)
    _wait_http(f"{targets.ranker_http}/healthz")
    http_qps = _in_child(
        "closed", f"{targets.ranker_http}/v1/recommend", body=body, clients=32, seconds=seconds
    )
    fresh = _freshness(urls, key, probes)
    fresh_p50, fresh_p99 = _percentiles(fresh)
    costs = _index_costs(catalog, index)
    # the ceilings take the per-query cost in batches of 32: a closed loop's batches
    search_s = costs["exact"]["32"]["ms_per_query"] / 1e3
    ceiling = 1.0 / (1.0 / http_qps + search_s) if http_qps else 0.0
    own_s = costs["index"]["32"]["ms_per_query"] / 1e3
    own_ceiling = 1.0 / (1.0 / http_qps + own_s) if http_qps else 0.0
    ranker = {
        "index_kind": index_kind,
        "catalog": catalog_kind,
        "items": items,
        "candidates": _CANDIDATES,
        "k": 50,
        "seconds_per_rate": seconds,
        "warmup_s": _WARMUP_S,
        "latency_by_offered_rate": latency,
        "latency_under_item_updates": {"offered_rate": live_rate, **live},
        "max_qps": round(max_qps, 1),
        "max_qps_breakdown": max_qps_breakdown,
        "noop_max_qps": round(noop_qps, 1),
        "max_qps_vs_noop": round(max_qps / noop_qps, 3) if noop_qps else None,
        "http_only_max_qps": round(http_qps, 1),
        "exact_search_ms_per_query": round(search_s * 1e3, 4),
        "exact_ceiling_max_qps": round(ceiling, 1),
        "exact_ceiling_vs_noop": round(ceiling / noop_qps, 3) if noop_qps else None,
        "index": index.model_dump() if index else {"type": index_kind},
        "index_search_ms_per_query": round(own_s * 1e3, 4),
        "index_search_by_batch": costs["index"],
        "exact_search_by_batch": costs["exact"],
        "index_recall_at_100": costs["index_recall_at_100"],
        # one-query calls alone in the bench's process: the floor under the ranker's p99
        "index_single_query": costs.get("index_single_query"),
        "index_build_s_in_bench": costs.get("index_build_s"),
        "index_ceiling_max_qps": round(own_ceiling, 1),
        "max_qps_vs_index_ceiling": round(max_qps / own_ceiling, 3) if own_ceiling else None,
        "targets": {
            "p99_ms_at_300": "< 25 (< 15 at 1,000,000 items)",
            "max_qps_vs_noop": ">= 0.4",
            "max_qps_vs_index_ceiling": ">= 0.7",
        },
    }
    freshness = {
        "probes": probes,
        "e2e_p50_s": round(fresh_p50, 4),
        "e2e_p99_s": round(fresh_p99, 4),
        "target": {"e2e_p99_s": "< 1.0"},
    }
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if index_kind == "flat" else f"_{index_kind}"
    suffix += "" if items == 100_000 else f"_{items}"
    suffix += "" if catalog_kind == "random" else f"_{catalog_kind}"
    (out / f"ranker{suffix}.json").write_text(json.dumps(ranker, indent=2))
    (out / "freshness.json").write_text(json.dumps(freshness, indent=2))
    return {"ranker": ranker, "freshness": freshness}
