"""Table benchmark: both Redis layouts against plain redis-py, at one or two table sizes, one run.

Everything runs on a private `redis-server` the benchmark starts on a free port (no
persistence, `scratch.LISTPACK_SETTINGS`) and stops at the end, so a ten-million-row table never
lands on a shared server. For each dimension of an Adagrad table with event-time expiry (the
shipped defaults' shape), for each size (the default 200,000 rows and, with ``--rows N``, N
too), and for each layout (`key`: one Redis key per row; `packed`: rows in small hashes, sized
to about 32 rows per hash), at batch 4096:

- `bytes_per_row`: growth of INFO `used_memory` per row while the rows are loaded through the
  store's own batch path (`import_rows`: rows, expiry index, change feed, counters), each size
  into a server holding no other rows of that layout. `row_bytes_sampled`: the rows alone, from
  `MEMORY USAGE` of sampled keys (a key per row, or a hash per bucket divided by its rows).
  Baseline `raw_payload_bytes_per_row`: the same growth for plain SETs of `payload_bytes`-sized
  values (vector + optimizer state, no header) under keys of a row key's length, into an empty
  server. `payload_bytes` is the bare ``4 * (D + S)``.
- `lookup_rows_per_s`: `lookup` of random existing ids (vectors decoded to `(B, D)` float32).
  Baseline `raw_mget_rows_per_s`: `client.mget` of plain keys holding values of the encoded
  row's size, as many keys as the table has rows, on the same server.
- `update_rows_per_s`: `apply_gradients` on existing rows: read, Adagrad, one MULTI/EXEC with
  the rows, expiry index, change-feed XADD and counters. Baselines `raw_set_rows_per_s` (a
  non-transactional pipeline of plain SETs) and `raw_mset_rows_per_s` (one plain MSET).

Both sizes of a layout and both sizes' raw keys are on the server together while timed, and
every operation at every size alternates with the others in short rounds (the median round is
reported), so load from other processes on the machine hits all of them alike. `scaling` holds
each layout's rate at the largest size over its rate at the smallest, from those same rounds.
Writes `table.json` and `table.png`.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import redis
from rich.progress import track

from freshrec.offline.bench.plots import plot_table
from freshrec.offline.bench.scratch import LISTPACK_SETTINGS, scratch_redis
from freshrec.table.base import EmbeddingStore, Rows
from freshrec.table.config import AdagradConfig, ExpiryConfig, NormalInit, TableConfig
from freshrec.table.redis import RedisEmbeddingStore, RedisTableBackend
from freshrec.table.redis.keys import id_bytes
from freshrec.table.resp import execute_packed, rows_concat

__all__ = ["DIMS", "ROWS", "bulk_load", "run_table_bench"]

logger = logging.getLogger(__name__)

DIMS = (16, 64)
BATCH = 4096
ROWS = 200_000
LAYOUTS: tuple[Literal["key", "packed"], ...] = ("key", "packed")
# Rows per hash the packed layout is sized for (`packed_buckets` = rows / this): at ten
# million rows, 16 looked up 0.78x raw MGET against 0.70x for 32 (8: 0.85x) in the same run,
# at 205 bytes per row against 206 (8: 211).
ROWS_PER_BUCKET = 16
# Rows per bulk-load call: big enough that a round trip is amortised, small enough to show progress.
LOAD_CHUNK = 65_536
TARGETS = {
    "lookup_vs_raw_mget": 0.8,
    "update_vs_raw_set": 0.5,
    "bytes_vs_raw_payload": 1.5,
    "packed_bytes_vs_payload": 1.4,
    "packed_lookup_vs_raw_mget": 0.6,
    "large_vs_small_rate": 0.8,
}
NAMESPACE = "bench"
EVENT_TIME = 1.7e9


def _used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def _flush(client: redis.Redis) -> None:
    """Empty the server and wait until it has freed everything (a synchronous FLUSHALL of ten
    million keys outlasts a client's read timeout)."""
    client.flushall(asynchronous=True)
    _wait_freed(client)


def _wait_freed(client: redis.Redis) -> None:
    """Wait until Redis has freed what FLUSHALL ASYNC or UNLINK handed to its lazy-free thread,
    so the next memory measurement does not see it shrinking."""
    while int(client.info("memory").get("lazyfree_pending_objects", 0)):
        time.sleep(0.2)


def _timed(fn: Callable[[int], None], calls: int, first: int) -> float:
    started = time.perf_counter()
    for k in range(first, first + calls):
        fn(k)
    return time.perf_counter() - started


def _config(dim: int, layout: Literal["key", "packed"], rows: int) -> TableConfig:
    return TableConfig(
        name=f"bench{dim}",
        dim=dim,
        initializer=NormalInit(std=0.05, seed=1),
        optimizer=AdagradConfig(lr=0.05, initial_accumulator=0.1),
        expiry=ExpiryConfig(clock="event", expire_after_s=30 * 86400.0),
        layout=layout,
        packed_buckets=max(1, rows // ROWS_PER_BUCKET),
    )


def _ids(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(1, 2**64 - 1, size=rows + rows // 10, dtype=np.uint64))
    return rng.permutation(ids)[:rows]


def bulk_load(store: EmbeddingStore, ids: np.ndarray, label: str, seed: int = 0) -> None:
    """Write a row for every id through the store's batch path (`import_rows`), with progress.

    Args:
        store: the table.
        ids: `(N,)` unique uint64.
        label: progress-bar text.
        seed: seeds the vectors.
    """
    rng = np.random.default_rng(seed)
    dim, width = store.config.dim, store.optimizer.state_width(store.config.dim)
    for start in track(range(0, len(ids), LOAD_CHUNK), description=label):
        part = ids[start : start + LOAD_CHUNK]
        n = len(part)
        store.import_rows(
            Rows(
                ids=part,
                vectors=rng.normal(0, 0.05, size=(n, dim)).astype(np.float32),
                state=np.full((n, width), 0.1, dtype=np.float32),
                event_time=np.full(n, EVENT_TIME),
                wall_time=np.zeros(n),
                count=np.ones(n, dtype=np.int64),
            )
        )


class _RawKeys:
    """Plain string keys, one per id, as long as a row key; written with whole-batch MSETs."""

    def __init__(self, client: redis.Redis, key_len: int, tag: str) -> None:
        self.client = client
        self.prefix = f"raw{tag}:".encode()
        self.prefix += b"_" * max(key_len - len(self.prefix) - 8, 0)
        self.head = b"$%d\r\n" % (len(self.prefix) + 8) + self.prefix

    def keys(self, ids: np.ndarray) -> list[bytes]:
        raw = ids.astype("<u8").tobytes()
        return [self.prefix + raw[i : i + 8] for i in range(0, len(raw), 8)]

    def load(self, ids: np.ndarray, value: bytes, label: str) -> None:
        tail = b"\r\n$%d\r\n%s\r\n" % (len(value), value)
        for start in track(range(0, len(ids), LOAD_CHUNK), description=label):
            part = ids[start : start + LOAD_CHUNK]
            n = len(part)
            command = b"*%d\r\n$4\r\nMSET\r\n" % (2 * n + 1) + rows_concat(
                n, [self.head, id_bytes(part), tail]
            )
            execute_packed(self.client, [command], 1)


def _sampled_row_bytes(client: redis.Redis, store: RedisEmbeddingStore, ids: np.ndarray) -> float:
    """Memory of the rows alone, from MEMORY USAGE of the keys holding 500 sampled ids."""
    keys = sorted(set(store.row_keys(ids[:500])))
    used = sum(int(client.memory_usage(k, samples=0) or 0) for k in keys)
    if store.config.layout == "packed":
        return used / sum(int(client.hlen(k)) for k in keys)
    return used / len(keys)


def _timed_rounds(phases: dict[str, Callable[[int], None]], seconds: float) -> dict[str, float]:
    """Median seconds per call of each phase, phases alternating in short rounds of 5 calls."""
    for fn in phases.values():  # warm up connections, scripts and caches
        fn(0)
    calls = 5
    rounds: dict[str, list[float]] = {name: [] for name in phases}
    deadline = time.monotonic() + seconds * len(phases)
    k = 1
    while time.monotonic() < deadline or len(next(iter(rounds.values()))) < 3:
        for name, fn in phases.items():
            rounds[name].append(_timed(fn, calls, k))
        k += calls
    return {name: statistics.median(r) / calls for name, r in rounds.items()}


@dataclass
class _Size:
    """One table size of a dimension: its ids, raw keys and sampled batches."""

    rows: int
    ids: np.ndarray
    raw: _RawKeys
    id_batches: list[np.ndarray]
    key_batches: list[list[bytes]]


def _phases(
    client: redis.Redis,
    stores: dict[int, RedisEmbeddingStore],
    sizes: list[_Size],
    row_value: bytes,
    grads: np.ndarray,
) -> dict[str, Callable[[int], None]]:
    """Every timed operation at every size, named ``<op>@<rows>``."""
    phases: dict[str, Callable[[int], None]] = {}
    for size in sizes:
        store, ids, keys = stores[size.rows], size.id_batches, size.key_batches

        def lookup(k: int, store: RedisEmbeddingStore = store, ids: list[Any] = ids) -> None:
            store.lookup(ids[k % 16])

        def update(k: int, store: RedisEmbeddingStore = store, ids: list[Any] = ids) -> None:
            store.apply_gradients(ids[k % 16], grads, EVENT_TIME + k)

        def raw_mget(k: int, keys: list[list[bytes]] = keys) -> None:
            client.mget(keys[k % 16])

        def raw_set(k: int, keys: list[list[bytes]] = keys) -> None:
            pipe = client.pipeline(transaction=False)
            for key in keys[k % 16]:
                pipe.set(key, row_value)
            pipe.execute()

        def raw_mset(k: int, keys: list[list[bytes]] = keys) -> None:
            client.mset(dict.fromkeys(keys[k % 16], row_value))

        for name, fn in (
            ("lookup", lookup),
            ("raw_mget", raw_mget),
            ("update", update),
            ("raw_set", raw_set),
            ("raw_mset", raw_mset),
        ):
            phases[f"{name}@{size.rows}"] = fn
    return phases


def _load_layout(
    client: redis.Redis, dim: int, layout: Literal["key", "packed"], sizes: list[_Size]
) -> tuple[dict[int, RedisEmbeddingStore], dict[int, dict[str, Any]]]:
    """Load every size of `layout` (smallest first), measuring the memory each one adds."""
    stores: dict[int, RedisEmbeddingStore] = {}
    figures: dict[int, dict[str, Any]] = {}
    for k, size in enumerate(sizes):
        config = _config(dim, layout, size.rows)
        store = RedisTableBackend(client, f"{NAMESPACE}{k}").store(config)
        before = _used_memory(client)
        bulk_load(store, size.ids, f"dim {dim}, {size.rows:,} rows, {layout} layout")
        figures[size.rows] = {
            "bytes_per_row": (_used_memory(client) - before) / size.rows,
            "row_bytes_sampled": _sampled_row_bytes(client, store, size.ids),
        }
        if layout == "packed":
            figures[size.rows]["packed_buckets"] = config.packed_buckets
        stores[size.rows] = store
    return stores, figures


def _raw_payload(client: redis.Redis, rows: int, payload: int, key_len: int) -> float:
    """INFO used_memory growth per plain SET of a bare payload, into an empty server."""
    _flush(client)
    raw = _RawKeys(client, key_len, "p")
    before = _used_memory(client)
    raw.load(_ids(rows, seed=rows), np.random.default_rng(1).bytes(payload), "raw payload keys")
    grown = (_used_memory(client) - before) / rows
    _flush(client)
    return grown


def _bench_dim(
    client: redis.Redis, dim: int, rows: list[int], *, batch: int, seconds: float
) -> list[dict[str, Any]]:
    """Both layouts at every size of one dimension; sizes and raw baselines timed interleaved.

    Each layout's sizes are loaded into a server holding nothing else of that layout, the
    memory measured as each one loads; the raw keys of every size are loaded after the first
    layout's memory is measured and stay for both layouts' timing.
    """
    probe = RedisTableBackend(client, f"{NAMESPACE}0").store(_config(dim, "key", 1))
    payload = 4 * (dim + probe.width)
    key_len = len(probe.row_keys(np.ones(1, dtype=np.uint64))[0])
    cells: dict[int, dict[str, Any]] = {
        n: {
            "dim": dim,
            "rows": n,
            "state_width": probe.width,
            "row_bytes": probe.dtype.itemsize,
            "payload_bytes": payload,
            "raw_payload_bytes_per_row": _raw_payload(client, n, payload, key_len),
            "layouts": {},
        }
        for n in rows
    }
    rng = np.random.default_rng(dim)
    sizes = []
    for k, n in enumerate(rows):
        ids = _ids(n, seed=dim * 100 + k)
        picks = [ids[rng.choice(n, size=min(batch, n), replace=False)] for _ in range(16)]
        raw = _RawKeys(client, key_len, f"{dim}.{k}")
        sizes.append(_Size(n, ids, raw, picks, [raw.keys(p) for p in picks]))
    row_value = rng.bytes(probe.dtype.itemsize)
    grads = rng.normal(0, 0.1, size=(min(batch, rows[0]), dim)).astype(np.float32)
    for layout in LAYOUTS:
        stores, memory = _load_layout(client, dim, layout, sizes)
        if layout == LAYOUTS[0]:
            for size in sizes:
                size.raw.load(size.ids, row_value, f"dim {dim}, {size.rows:,} raw keys")
        per_call = _timed_rounds(_phases(client, stores, sizes, row_value, grads), seconds)
        for size in sizes:
            figures = memory[size.rows]
            for name in ("lookup", "raw_mget", "update", "raw_set", "raw_mset"):
                figures[f"{name}_rows_per_s"] = len(grads) / per_call[f"{name}@{size.rows}"]
            figures["lookup_vs_raw_mget"] = (
                figures["lookup_rows_per_s"] / figures["raw_mget_rows_per_s"]
            )
            figures["update_vs_raw_set"] = (
                figures["update_rows_per_s"] / figures["raw_set_rows_per_s"]
            )
            figures["bytes_vs_payload"] = figures["bytes_per_row"] / payload
            raw_payload = cells[size.rows]["raw_payload_bytes_per_row"]
            figures["bytes_vs_raw_payload"] = figures["bytes_per_row"] / raw_payload
            cells[size.rows]["layouts"][layout] = figures
        for store in stores.values():
            store.clear()
        _wait_freed(client)
    _flush(client)
    return [cells[n] for n in rows]


def _scaling(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dim and layout: the largest size's rates over the smallest size's."""
    out: dict[str, Any] = {}
    for dim in sorted({c["dim"] for c in cells}):
        mine = sorted((c for c in cells if c["dim"] == dim), key=lambda c: c["rows"])
        if len(mine) < 2:
            continue
        small, large = mine[0], mine[-1]
        out[f"dim{dim}"] = {
            layout: {
                f"{what}_large_vs_small": large["layouts"][layout][f"{what}_rows_per_s"]
                / small["layouts"][layout][f"{what}_rows_per_s"]
                for what in ("lookup", "update", "raw_mget")
            }
            | {"rows": [small["rows"], large["rows"]]}
            for layout in LAYOUTS
        }
    return out


def run_table_bench(
    out: Path,
    *,
    rows: int = ROWS,
    batch: int = BATCH,
    seconds: float = 2.0,
    dims: tuple[int, ...] = DIMS,
    small_rows: int = ROWS,
) -> dict[str, Any]:
    """Measure both layouts against plain redis-py on a private Redis; write `out/table.json`.

    Args:
        out: output directory (`table.json`, `table.png`).
        rows: the largest table size measured; a size above `small_rows` is measured beside it.
        batch: ids per lookup / update call.
        seconds: time per timed phase, dimension, size and layout.
        dims: table dimensions to measure.
        small_rows: the reference size the larger one is compared with.

    Returns:
        What was written to `table.json`.
    """
    sizes = sorted({small_rows, rows})
    with scratch_redis(LISTPACK_SETTINGS) as url:
        # Loading and freeing ten million rows takes seconds per command at times.
        client = redis.Redis.from_url(url, socket_timeout=300)
        server: dict[str, Any] = client.info("server")
        try:
            cells = [
                cell
                for d in dims
                for cell in _bench_dim(client, d, sizes, batch=batch, seconds=seconds)
            ]
        finally:
            client.close()
    report: dict[str, Any] = {
        "benchmark": "table",
        "optimizer": "adagrad",
        "expiry": "event",
        "batch": batch,
        "sizes": sizes,
        "rows_per_packed_bucket": ROWS_PER_BUCKET,
        "server": {"redis_version": server.get("redis_version"), **LISTPACK_SETTINGS},
        "python": platform.python_version(),
        "machine": platform.machine(),
        "definitions": _DEFINITIONS,
        "targets": TARGETS,
        "cells": cells,
        "scaling": _scaling(cells),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(report, indent=2))
    plot_table(cells, out / "table.png")
    logger.info("table benchmark written to %s", out / "table.json")
    return report


_DEFINITIONS = {
    "bytes_per_row": "INFO used_memory growth per row loaded through the store into an empty "
    "server: rows, expiry index, change feed, counters",
    "row_bytes_sampled": "MEMORY USAGE of the keys holding 500 sampled rows, per row: the rows "
    "alone (a packed hash divided by the rows it holds)",
    "raw_payload_bytes_per_row": "INFO used_memory growth per plain SET of a payload_bytes value "
    "(vector + state, no header) under a key as long as a row key",
    "payload_bytes": "4 * (dim + state_width)",
    "lookup_rows_per_s": "store.lookup of random existing ids, batch ids per call",
    "raw_mget_rows_per_s": "client.mget of plain keys holding row_bytes values, as many keys as "
    "the table has rows",
    "update_rows_per_s": "apply_gradients on existing rows: read + Adagrad + MULTI/EXEC (rows, "
    "expiry index, XADD, counters)",
    "raw_set_rows_per_s": "non-transactional pipeline of plain SETs, values of row_bytes",
    "raw_mset_rows_per_s": "one plain client.mset of the batch, values of row_bytes",
    "scaling": "rate at the largest size / rate at the smallest size, same run",
}
