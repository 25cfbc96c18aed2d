"""Table benchmark: the Redis store against plain redis-py on the same server, same run.

For each dimension (16 and 64) of an Adagrad table with event-time expiry (the shipped
defaults' shape), at batch 4096:

- `lookup_rows_per_s`: `RedisEmbeddingStore.lookup` of random existing ids (one MGET, decode to
  a `(B, D)` float32 array). Baseline `raw_mget_rows_per_s`: `client.mget` of prebuilt keys
  whose values have the same size as an encoded row.
- `update_rows_per_s`: `apply_gradients` on existing rows: the whole read-modify-write (MGET,
  Adagrad, one MULTI/EXEC with MSET, expiry index, change-feed XADD, counters). Baseline
  `raw_set_rows_per_s`: one non-transactional pipeline of plain SETs of same-size values;
  `raw_mset_rows_per_s` (one plain MSET of the batch) is recorded as a stricter reference.

The store builds its MGET / MSET commands as one numpy byte matrix (`freshrec.table.resp`)
instead of packing each argument through redis-py, which is why it can beat the raw figures.
- `bytes_per_row`: growth of INFO `used_memory` per row while 200,000 rows are created through
  the store (keys, values, expiry index, feed, counters). Baseline
  `raw_payload_bytes_per_row`: the same measurement for plain SETs of `payload_bytes`-sized
  values (vector + optimizer state only, no header) under keys of the same length as the
  store's row keys. `payload_bytes` is the bare ``4 * (D + S)``.
- `bytes_per_row_sampled`: cross-check from `MEMORY USAGE` of 500 sampled row keys plus the
  expiry index, unaffected by other clients writing to the same server meanwhile.

Timed phases alternate ours/raw in short rounds and report the median round, so load from
other processes on the machine hits both sides alike. Everything lives in a scratch namespace
that is deleted afterwards. Writes `table.json` into the output directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import redis
from rich.console import Console
from rich.table import Table

from freshrec.table.config import AdagradConfig, ExpiryConfig, NormalInit, TableConfig
from freshrec.table.redis import RedisTableBackend

__all__ = ["run_table_bench"]

logger = logging.getLogger(__name__)

DIMS = (16, 64)
BATCH = 4096
ROWS = 200_000
TARGETS = {"lookup_vs_raw_mget": 0.8, "update_vs_raw_set": 0.5, "bytes_vs_raw_payload": 1.5}


def _used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def _rate(rounds: list[float], rows_per_call: int, calls: int) -> float:
    return rows_per_call * calls / statistics.median(rounds)


def _timed(fn: Callable[[int], None], calls: int) -> float:
    started = time.perf_counter()
    for k in range(calls):
        fn(k)
    return time.perf_counter() - started


def _delete_keys(client: redis.Redis, keys: list[bytes]) -> None:
    for start in range(0, len(keys), 10_000):
        client.unlink(*keys[start : start + 10_000])


def _bench_dim(
    client: redis.Redis, namespace: str, dim: int, *, rows: int, batch: int, seconds: float
) -> dict[str, Any]:
    config = TableConfig(
        name=f"bench{dim}",
        dim=dim,
        initializer=NormalInit(std=0.05, seed=1),
        optimizer=AdagradConfig(lr=0.05, initial_accumulator=0.1),
        expiry=ExpiryConfig(clock="event", expire_after_s=30 * 86400.0),
    )
    store = RedisTableBackend(client, namespace).store(config)
    rng = np.random.default_rng(dim)
    ids = np.unique(rng.integers(0, 2**64 - 1, size=rows + rows // 10, dtype=np.uint64))
    ids = rng.permutation(ids)[:rows]
    width = store.width
    payload = 4 * (dim + width)
    row_size = store.dtype.itemsize
    grads = rng.normal(0, 0.1, size=(batch, dim)).astype(np.float32)
    event_time = 1.7e9

    # Memory: rows created through the store.
    before = _used_memory(client)
    for start in range(0, rows, batch):
        part = ids[start : start + batch]
        store.apply_gradients(part, grads[: part.shape[0]], event_time)
    ours_bytes = (_used_memory(client) - before) / rows
    sample = store.row_keys(ids[:500])
    sampled = [int(client.memory_usage(k, samples=0) or 0) for k in sample]
    buckets = cast(list[bytes], client.zrange(store.index_set_key, 0, -1))
    sizes: list[int] = [client.strlen(f"{namespace}:t:{config.name}:x:{int(b)}") for b in buckets]
    index_bytes = sum(sizes)
    sampled_per_row = statistics.mean(sampled) + index_bytes / rows

    # Memory: plain SETs of bare payloads under keys of the same length.
    raw_prefix = f"{namespace}:raw{dim}:".encode()
    pad = len(store.row_keys(ids[:1])[0]) - len(raw_prefix) - 8
    raw_prefix += b"_" * max(pad, 0)
    raw = ids.astype("<u8").tobytes()
    raw_keys = [raw_prefix + raw[i : i + 8] for i in range(0, len(raw), 8)]
    payload_value = rng.bytes(payload)
    before = _used_memory(client)
    for start in range(0, rows, batch):
        pipe = client.pipeline(transaction=False)
        for key in raw_keys[start : start + batch]:
            pipe.set(key, payload_value)
        pipe.execute()
    raw_payload_bytes = (_used_memory(client) - before) / rows
    raw_sampled = statistics.mean(
        int(client.memory_usage(k, samples=0) or 0) for k in raw_keys[:500]
    )

    # Throughput baselines use values of the encoded row's size.
    row_value = rng.bytes(row_size)
    for start in range(0, rows, batch):
        pipe = client.pipeline(transaction=False)
        for key in raw_keys[start : start + batch]:
            pipe.set(key, row_value)
        pipe.execute()

    batches = [rng.choice(rows, size=batch, replace=False) for _ in range(16)]
    id_batches = [ids[b] for b in batches]
    key_batches = [[raw_keys[i] for i in b.tolist()] for b in batches]

    def lookup(k: int) -> None:
        store.lookup(id_batches[k % 16])

    def raw_mget(k: int) -> None:
        client.mget(key_batches[k % 16])

    def update(k: int) -> None:
        store.apply_gradients(id_batches[k % 16], grads, event_time + k)

    def raw_set(k: int) -> None:
        pipe = client.pipeline(transaction=False)
        for key in key_batches[k % 16]:
            pipe.set(key, row_value)
        pipe.execute()

    def raw_mset(k: int) -> None:
        client.mset(dict.fromkeys(key_batches[k % 16], row_value))

    phases = {
        "lookup": lookup,
        "raw_mget": raw_mget,
        "update": update,
        "raw_set": raw_set,
        "raw_mset": raw_mset,
    }
    for fn in phases.values():  # warm up connections, scripts and caches
        fn(0)
    calls = 5
    rounds: dict[str, list[float]] = {name: [] for name in phases}
    deadline = time.monotonic() + seconds * len(phases)
    while time.monotonic() < deadline or len(rounds["lookup"]) < 3:
        for name, fn in phases.items():
            rounds[name].append(_timed(fn, calls))

    store.clear()
    _delete_keys(client, raw_keys)
    result = {
        "dim": dim,
        "state_width": width,
        "row_bytes": row_size,
        "payload_bytes": payload,
        "lookup_rows_per_s": _rate(rounds["lookup"], batch, calls),
        "raw_mget_rows_per_s": _rate(rounds["raw_mget"], batch, calls),
        "update_rows_per_s": _rate(rounds["update"], batch, calls),
        "raw_set_rows_per_s": _rate(rounds["raw_set"], batch, calls),
        "raw_mset_rows_per_s": _rate(rounds["raw_mset"], batch, calls),
        "bytes_per_row": ours_bytes,
        "raw_payload_bytes_per_row": raw_payload_bytes,
        "bytes_per_row_sampled": sampled_per_row,
        "raw_payload_bytes_per_row_sampled": raw_sampled,
        "rounds": len(rounds["lookup"]),
    }
    result["lookup_vs_raw_mget"] = result["lookup_rows_per_s"] / result["raw_mget_rows_per_s"]
    result["update_vs_raw_set"] = result["update_rows_per_s"] / result["raw_set_rows_per_s"]
    result["bytes_vs_raw_payload"] = result["bytes_per_row"] / result["raw_payload_bytes_per_row"]
    result["bytes_vs_payload"] = result["bytes_per_row"] / payload
    return result


def run_table_bench(
    redis_url: str,
    out: Path,
    *,
    rows: int = ROWS,
    batch: int = BATCH,
    seconds: float = 2.0,
    dims: tuple[int, ...] = DIMS,
) -> dict[str, Any]:
    """Measure the Redis store against plain redis-py and write `out/table.json`.

    Args:
        redis_url: the Redis server to measure (a scratch namespace is used and removed).
        out: output directory.
        rows: rows created per dimension for the memory figures.
        batch: ids per lookup / update call.
        seconds: time per timed phase and dimension.
        dims: table dimensions to measure.

    Returns:
        What was written to `table.json`.
    """
    client = redis.Redis.from_url(redis_url)
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    server: dict[str, Any] = client.info("server")
    try:
        per_dim = [
            _bench_dim(client, namespace, d, rows=rows, batch=batch, seconds=seconds) for d in dims
        ]
    finally:
        leftovers = list(client.scan_iter(match=f"{namespace}:*", count=10_000))
        _delete_keys(client, leftovers)
        client.close()
    report: dict[str, Any] = {
        "benchmark": "table",
        "optimizer": "adagrad",
        "expiry": "event",
        "batch": batch,
        "rows": rows,
        "namespace": namespace,
        "redis_version": server.get("redis_version"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "definitions": {
            "update_rows_per_s": "apply_gradients on existing rows: MGET + Adagrad + MULTI/EXEC "
            "(MSET, expiry index, XADD, counters)",
            "raw_set_rows_per_s": "non-transactional pipeline of plain SETs, values of row_bytes",
            "raw_mset_rows_per_s": "one plain client.mset of the batch, values of row_bytes "
            "(a stricter write baseline than SET, for reference)",
            "raw_mget_rows_per_s": "client.mget of prebuilt keys, values of row_bytes",
            "bytes_per_row": "INFO used_memory growth per row created through the store",
            "raw_payload_bytes_per_row": "INFO used_memory growth per plain SET of a "
            "payload_bytes value (vector + state, no header) under a key as long as a row key",
            "payload_bytes": "4 * (dim + state_width)",
            "bytes_vs_payload": "bytes_per_row / payload_bytes: includes Redis's own per-key "
            "overhead, which any one-key-per-row layout pays",
        },
        "targets": TARGETS,
        "dims": per_dim,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(report, indent=2))
    logger.info("table benchmark written to %s", out / "table.json")
    return report


def _render(report: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"embedding table, batch {report['batch']}, Adagrad, Redis {report['redis_version']}"
    )
    table.add_column("figure")
    for d in report["dims"]:
        table.add_column(f"dim {d['dim']}", justify="right")
    rows = [
        ("lookup rows/s", "lookup_rows_per_s", "{:,.0f}"),
        ("raw MGET rows/s", "raw_mget_rows_per_s", "{:,.0f}"),
        ("lookup / raw", "lookup_vs_raw_mget", "{:.2f}"),
        ("update rows/s", "update_rows_per_s", "{:,.0f}"),
        ("raw SET rows/s", "raw_set_rows_per_s", "{:,.0f}"),
        ("update / raw", "update_vs_raw_set", "{:.2f}"),
        ("raw MSET rows/s", "raw_mset_rows_per_s", "{:,.0f}"),
        ("bytes/row", "bytes_per_row", "{:.0f}"),
        ("raw payload bytes/row", "raw_payload_bytes_per_row", "{:.0f}"),
        ("bytes / raw", "bytes_vs_raw_payload", "{:.2f}"),
        ("bytes/row (sampled)", "bytes_per_row_sampled", "{:.0f}"),
        ("payload bytes", "payload_bytes", "{:d}"),
    ]
    for label, key, fmt in rows:
        table.add_row(label, *(fmt.format(d[key]) for d in report["dims"]))
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    report = run_table_bench(args.redis_url, args.out, rows=args.rows, seconds=args.seconds)
    _render(report, Console())


if __name__ == "__main__":
    main()
