"""Trainer benchmark: throughput by table size, against a raw consume, and freshness at a rate.

- `sizes`: for 100,000 distinct ids (and, with ``--ids N``, N as well, in the same run) a
  pre-produced stream of rating events over that many users + items (Zipf) is consumed,
  trained and committed by the real `TrainingLoop`, in a child process of its own, over a
  private Redis in which every one of those ids already has its row (loaded through the
  tables' bulk path before the clock starts). `events_per_s`: events over the seconds from the
  first to the last commit; `trainer_peak_rss_bytes`: the child's peak resident memory;
  `stage_ms_per_batch`: where a batch's time went, from the child's
  `freshrec_trainer_stage_seconds_total` (stages in `freshrec.training.metrics.STAGES`).
  `raw_consume_records_per_s`, the physical baseline: the same topic read with the same client
  (kafka-python, the trainer's fetch settings) and no training.
- `lag_p50_s` / `lag_p99_s`: a separate producer process sends events at a fixed rate (open
  loop), stamping each with the wall time it is handed to Kafka (what ingest stamps as
  `accepted_at`); the trainer reports, per event, the time until its rows were committed.

Run: `freshrec bench trainer [--ids 10000000]`. Writes `trainer.json` and `trainer.png`.
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import threading
import time
import uuid
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any, Literal

import numpy as np
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from prometheus_client import REGISTRY

from freshrec.models.features import entity_row_ids
from freshrec.offline.bench.plots import plot_trainer
from freshrec.offline.bench.scratch import scratch_redis
from freshrec.offline.bench.table import bulk_load
from freshrec.settings import default_table_config_path
from freshrec.stream.consumer import KafkaEventSource
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.stream.topics import ensure_topics
from freshrec.table import RedisTableBackend, load_tables, open_tables
from freshrec.training import OnlineTrainer, TrainerConfig, TrainingLoop
from freshrec.training.metrics import STAGES

__all__ = ["SMALL_IDS", "bench_event", "run_trainer_bench", "zipf_draws"]

_T0 = 1_700_000_000.0
SMALL_IDS = 100_000
_JOIN_TRIES = 4
_JOIN_TRY_S = 30.0


def bench_event(n: int, user: int, item: int, ts: float) -> Event:
    """Rating event `n` of the benchmark streams: user `u<user>`, item `i<item>` at time `ts`."""
    return Event(
        event_id=f"b{n}",
        type="rating",
        user_id=f"u{user}",
        item_id=f"i{item}",
        timestamp=ts,
        value=float(1 + n % 5),
        context={"device": "ios" if n % 3 else "web"},
    )


def zipf_draws(n: int, seed: int, *, users: int, items: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed user and item numbers of `n` events, below `users` and `items`.

    Returns:
        (users, items), each of shape (n,), int64.
    """
    rng = np.random.default_rng(seed)
    return rng.zipf(1.2, size=n) % users, rng.zipf(1.1, size=n) % items


def _draws(n: int, seed: int, distinct: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf user and item numbers, `distinct // 2` users and the rest items."""
    return zipf_draws(n, seed, users=distinct // 2, items=distinct - distinct // 2)


def _produce_paced(bootstrap: str, topic: str, rate: float, seconds: float, seed: int) -> None:
    """Child process: send `rate` events/s for `seconds`, open loop, stamped at send time."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    total = int(rate * seconds)
    users, items = _draws(total, seed, SMALL_IDS)
    start = time.time()
    for n in range(total):
        due = start + n / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        now = time.time()
        event = bench_event(n, int(users[n]), int(items[n]), min(now, _T0 + n))
        producer.send(topic, key=str(event.user_id).encode(), value=encode_event(event, now))
    producer.flush(timeout=60)
    producer.close()


def _loop(client: redis.Redis, namespace: str, bootstrap: str, topic: str) -> TrainingLoop:
    """The real training loop over `topic`, joined to its group and holding the partition.

    A group join right after the topic's creation can take a metadata refresh or two, and
    once in a while kafka-python's first join assigns nothing and never rejoins (seen: no
    partition within 120 s): each try gets 30 s, then a new member tries again.
    """
    tables = load_tables(default_table_config_path())
    trainer = OnlineTrainer(
        open_tables(tables, RedisTableBackend(client, namespace)),
        TrainerConfig(group=f"{namespace}-group", publish_interval_s=2.0),
    )
    for _ in range(_JOIN_TRIES):
        source = KafkaEventSource(bootstrap, topic, trainer.config.group, max_records=2048)
        loop = TrainingLoop(trainer, source, batch_size=2048, max_wait_s=0.02)
        deadline = time.monotonic() + _JOIN_TRY_S
        try:
            # the loop's own assignment callback seeks to the stored offsets (none: the start)
            while not source.consumer.assignment() and time.monotonic() < deadline:
                source.consumer.poll(timeout_ms=200, max_records=1)
        except BaseException:
            source.close()  # its reader process would keep this one from exiting
            raise
        if source.consumer.assignment():
            return loop
        source.close()
    raise RuntimeError(f"no partition of {topic} assigned in {_JOIN_TRIES} joins")


def _drain(
    loop: TrainingLoop, topic: str, total: int, timeout_s: float
) -> tuple[float, list[float]]:
    """Train until `total` messages are committed; returns (seconds, per-event freshness)."""
    stop = threading.Event()
    lags: list[float] = []
    first: float | None = None
    deadline = time.monotonic() + timeout_s
    while loop.trainer.offsets.get((topic, 0), 0) < total and time.monotonic() < deadline:
        report = loop.step(stop)
        if report is not None:
            first = time.perf_counter() if first is None else first
            lags.extend(report.freshness_s)
    if first is None:
        raise RuntimeError(f"no batch was trained from {topic}")
    return time.perf_counter() - first, lags


def _produce(bootstrap: str, topic: str, events: int, distinct: int) -> None:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
    )
    users, items = _draws(events, 1, distinct)
    for n in range(events):
        event = bench_event(n, int(users[n]), int(items[n]), _T0 + n * 0.01)
        # accepted after the last event time: none of them lies in ingest's future
        producer.send(
            topic, key=str(event.user_id).encode(), value=encode_event(event, _T0 + events)
        )
    producer.flush(timeout=120)
    producer.close()


def _raw_consume(bootstrap: str, topic: str, events: int) -> float:
    """Records/s of kafka-python reading the topic with the trainer's fetch settings, no work."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_poll_records=2048,
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek_to_beginning(partition)
    seen = 0
    first = last = 0.0
    deadline = time.monotonic() + 300
    while seen < events and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500, max_records=2048)
        got = sum(len(records) for records in batch.values())
        if got:
            # Timed as the trainer is: every record over the span from first to last batch.
            last = time.perf_counter()
            first = first or last
            seen += got
    consumer.close()
    return seen / (last - first) if last > first else 0.0


def _preload(url: str, namespace: str, distinct: int) -> None:
    """Give every user and item of the stream its row, through the tables' bulk path."""
    tables = load_tables(default_table_config_path())
    client = redis.Redis.from_url(url, socket_timeout=300)
    backend = RedisTableBackend(client, namespace)
    halves: list[tuple[Literal["user", "item"], str, int]] = [
        ("user", "u", distinct // 2),
        ("item", "i", distinct - distinct // 2),
    ]
    for name, prefix, count in halves:
        chunks = [
            entity_row_ids(name, (f"{prefix}{k}" for k in range(at, min(at + 10**6, count))))
            for at in range(0, count, 10**6)
        ]
        ids = np.concatenate(chunks)
        bulk_load(backend.store(tables[name]), ids, f"{count:,} {name} rows")
    client.close()


def _train_child(
    url: str, namespace: str, bootstrap: str, topic: str, *, events: int, out: Queue[Any]
) -> None:
    """Child process: train the whole topic; report its seconds and the process's memory, or
    the error that stopped it (as text: the parent raises it)."""
    client = redis.Redis.from_url(url, socket_timeout=300)
    try:
        loop = _loop(client, namespace, bootstrap, topic)
    except Exception as exc:  # the parent waits on the queue: tell it instead of hanging
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        return
    try:
        ready_rss = _rss_bytes()
        before, batches = _stage_seconds(), loop.trainer.batches
        seconds, _ = _drain(loop, topic, events, timeout_s=1800)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        batches = loop.trainer.batches - batches
        out.put(
            {
                "seconds": seconds,
                "rss_ready_bytes": ready_rss,
                "peak_rss_bytes": peak,
                "batches": batches,
                "stage_ms_per_batch": _stage_ms_per_batch(before, batches),
            }
        )
    except Exception as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        # the source's reader process ignores SIGTERM (its parent stops it): a child that
        # exited without closing it would wait for it forever
        loop.source.close()


def _stage_seconds() -> dict[str, float]:
    """This process's `freshrec_trainer_stage_seconds_total` by stage."""
    return {
        stage: REGISTRY.get_sample_value("freshrec_trainer_stage_seconds_total", {"stage": stage})
        or 0.0
        for stage in STAGES
    }


def _stage_ms_per_batch(before: dict[str, float], batches: int) -> dict[str, float]:
    """Milliseconds per batch of each stage since `before` (a `_stage_seconds` reading)."""
    now = _stage_seconds()
    return {k: round((now[k] - before[k]) / max(batches, 1) * 1000, 2) for k in STAGES}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _bench_size(bootstrap: str, namespace: str, distinct: int, events: int) -> dict[str, Any]:
    """Trainer events/s and raw consume records/s over `distinct` ids, on a private Redis."""
    topic = f"{namespace}.ids{distinct}"
    ensure_topics(bootstrap, {topic: 1})
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="freshrec-bench")
    try:
        _produce(bootstrap, topic, events, distinct)
        raw = _raw_consume(bootstrap, topic, events)
        with scratch_redis() as url:
            _preload(url, namespace, distinct)
            context = multiprocessing.get_context("spawn")
            results: Queue[Any] = context.Queue()
            child = context.Process(
                target=_train_child,
                args=(url, namespace, bootstrap, topic),
                kwargs={"events": events, "out": results},
            )
            child.start()
            figures = results.get(timeout=1800)
            child.join(timeout=60)
            if "error" in figures:
                raise RuntimeError(f"trainer bench child over {distinct:,} ids: {figures['error']}")
    finally:
        admin.delete_topics([topic])
        admin.close()
    events_per_s = events / figures["seconds"]
    return {
        "distinct_ids": distinct,
        "events": events,
        "events_per_s": round(events_per_s, 1),
        "raw_consume_records_per_s": round(raw, 1),
        "events_vs_raw_consume": round(events_per_s / raw, 3) if raw else None,
        "trainer_rss_ready_bytes": figures["rss_ready_bytes"],
        "trainer_peak_rss_bytes": figures["peak_rss_bytes"],
        "batches": figures["batches"],
        "stage_ms_per_batch": figures["stage_ms_per_batch"],
    }


def _paced_lag(bootstrap: str, namespace: str, rate: float, seconds: float) -> dict[str, Any]:
    """Freshness at a fixed offered rate: per event, send to rows committed."""
    topic = f"{namespace}.paced"
    ensure_topics(bootstrap, {topic: 1})
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="freshrec-bench")
    try:
        with scratch_redis() as url:
            client = redis.Redis.from_url(url)
            loop = _loop(client, f"{namespace}-b", bootstrap, topic)
            child = multiprocessing.get_context("spawn").Process(
                target=_produce_paced, args=(bootstrap, topic, rate, seconds, 2)
            )
            child.start()
            before, batches = _stage_seconds(), loop.trainer.batches
            _, lags = _drain(loop, topic, int(rate * seconds), timeout_s=seconds + 120)
            batches = loop.trainer.batches - batches
            stages = _stage_ms_per_batch(before, batches)
            child.join(timeout=30)
            loop.source.close()
            client.close()
    finally:
        admin.delete_topics([topic])
        admin.close()
    lag = np.array(lags)
    return {
        "offered_rate_per_s": rate,
        "lag_events": int(lag.shape[0]),
        "lag_p50_s": round(float(np.percentile(lag, 50)), 4),
        "lag_p99_s": round(float(np.percentile(lag, 99)), 4),
        "lag_batches": batches,
        "lag_stage_ms_per_batch": stages,
    }


def run_trainer_bench(
    bootstrap: str,
    out: Path,
    *,
    events: int = 100_000,
    ids: int = SMALL_IDS,
    rate: float = 5000.0,
    rate_seconds: float = 20.0,
    small_ids: int = SMALL_IDS,
) -> dict[str, Any]:
    """Measure the trainer and write `out/trainer.json` and `out/trainer.png`.

    Every table lives on a private Redis the benchmark starts per phase; Kafka topics are
    created on `bootstrap` and deleted afterwards.

    Args:
        bootstrap: Kafka bootstrap servers.
        out: output directory.
        events: events per stream of the throughput figures.
        ids: distinct user + item ids of the largest stream; above `small_ids` it is measured
            beside the `small_ids` stream, in the same run.
        rate: offered events/s for the lag figures.
        rate_seconds: how long the fixed-rate phase lasts.
        small_ids: distinct ids of the reference stream.
    """
    namespace = f"bench-trainer-{uuid.uuid4().hex[:8]}"
    sizes = [_bench_size(bootstrap, namespace, n, events) for n in sorted({small_ids, ids})]
    small, large = sizes[0], sizes[-1]
    result: dict[str, Any] = {
        "events_per_s": small["events_per_s"],
        "events": events,
        "raw_consume_records_per_s": small["raw_consume_records_per_s"],
        "events_vs_raw_consume": small["events_vs_raw_consume"],
        **_paced_lag(bootstrap, namespace, rate, rate_seconds),
        "batch_size": 2048,
        "sizes": sizes,
        "large_vs_small_events_per_s": round(large["events_per_s"] / small["events_per_s"], 3),
        "definitions": {
            "events_per_s": "events of a pre-produced topic trained and committed by the real "
            "TrainingLoop (a child process), over the seconds from its first to its last commit",
            "raw_consume_records_per_s": "kafka-python reading the same topic with the trainer's "
            "fetch settings and no work, first to last record",
            "distinct_ids": "user + item ids the stream draws from (Zipf); each has a row, "
            "loaded before the clock starts",
            "trainer_peak_rss_bytes": "ru_maxrss of the training child process",
        },
        "targets": {
            "events_per_s": ">= 20000",
            "lag_p99_s": "< 1.0",
            "large_vs_small_events_per_s": ">= 0.8",
            "events_vs_raw_consume": ">= 0.5",
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainer.json").write_text(json.dumps(result, indent=2))
    plot_trainer(sizes, out / "trainer.png")
    return result
