"""Trainer benchmark: sustained Kafka → Redis throughput, and freshness at a fixed offered rate.

- `events_per_s`: a pre-produced stream of rating events (Zipf users and items) is consumed,
  trained and committed by the real `TrainingLoop` over the Redis table; events divided by
  the seconds from the first to the last commit.
- `lag_p50_s` / `lag_p99_s`: a separate producer process sends events at a fixed rate (open
  loop), stamping each with the wall time it is handed to Kafka (what ingest stamps as
  `accepted_at`); the trainer reports, per event, the time until its rows were committed.

Run: `freshrec bench trainer` (or `python -m freshrec.offline.bench.trainer`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient

from freshrec.settings import default_table_config_path
from freshrec.stream.consumer import KafkaEventSource
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.stream.topics import ensure_topics
from freshrec.table import RedisTableBackend, load_tables, open_tables
from freshrec.training import OnlineTrainer, TrainerConfig, TrainingLoop

__all__ = ["bench_event", "run_trainer_bench", "zipf_draws"]

_T0 = 1_700_000_000.0


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


def zipf_draws(
    n: int, seed: int, *, users: int = 50_000, items: int = 20_000
) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed user and item numbers of `n` events, below `users` and `items`.

    Returns:
        (users, items), each of shape (n,), int64.
    """
    rng = np.random.default_rng(seed)
    return rng.zipf(1.2, size=n) % users, rng.zipf(1.1, size=n) % items


def _produce_paced(bootstrap: str, topic: str, rate: float, seconds: float, seed: int) -> None:
    """Child process: send `rate` events/s for `seconds`, open loop, stamped at send time."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    total = int(rate * seconds)
    users, items = zipf_draws(total, seed)
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
    tables = load_tables(default_table_config_path())
    trainer = OnlineTrainer(
        open_tables(tables, RedisTableBackend(client, namespace)),
        TrainerConfig(group=f"{namespace}-group", publish_interval_s=2.0),
    )
    source = KafkaEventSource(bootstrap, topic, trainer.config.group, max_records=2048)
    loop = TrainingLoop(trainer, source, batch_size=2048, max_wait_s=0.02)
    # join the group and get the partition before any clock starts
    # a group join right after the topic's creation can take a metadata refresh or two
    deadline = time.monotonic() + 120
    while not source.consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no partition of {topic} assigned within 120 s")
        # the loop's own assignment callback seeks to the stored offsets (none: the beginning)
        source.consumer.poll(timeout_ms=200, max_records=1)
    return loop


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


def _cleanup(client: redis.Redis, namespace: str) -> None:
    keys = list(client.scan_iter(match=f"{namespace}:*", count=5000))
    for start in range(0, len(keys), 5000):
        client.delete(*keys[start : start + 5000])


def run_trainer_bench(
    redis_url: str,
    bootstrap: str,
    out: Path,
    *,
    events: int = 100_000,
    rate: float = 5000.0,
    rate_seconds: float = 20.0,
) -> dict[str, Any]:
    """Measure the trainer and write `out/trainer.json`.

    Args:
        redis_url: the Redis the table lives in (a scratch namespace is used and removed).
        bootstrap: Kafka bootstrap servers (scratch topics are created and deleted).
        out: output directory.
        events: size of the pre-produced stream for the throughput figure.
        rate: offered events/s for the lag figures.
        rate_seconds: how long the fixed-rate phase lasts.
    """
    client = redis.Redis.from_url(redis_url)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="freshrec-bench")
    namespace = f"bench-trainer-{uuid.uuid4().hex[:8]}"
    topics = [f"{namespace}.sustained", f"{namespace}.paced"]
    ensure_topics(bootstrap, {t: 1 for t in topics})
    try:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=512 * 1024
        )
        users, items = zipf_draws(events, seed=1)
        for n in range(events):
            event = bench_event(n, int(users[n]), int(items[n]), _T0 + n * 0.01)
            key = str(event.user_id).encode()
            # accepted after the last event time: none of them lies in ingest's future
            producer.send(topics[0], key=key, value=encode_event(event, _T0 + events))
        producer.flush(timeout=120)
        producer.close()

        loop = _loop(client, f"{namespace}-a", bootstrap, topics[0])
        seconds, _ = _drain(loop, topics[0], events, timeout_s=600)
        loop.source.close()
        events_per_s = events / seconds

        loop = _loop(client, f"{namespace}-b", bootstrap, topics[1])
        child = multiprocessing.get_context("spawn").Process(
            target=_produce_paced, args=(bootstrap, topics[1], rate, rate_seconds, 2)
        )
        child.start()
        _, lags = _drain(loop, topics[1], int(rate * rate_seconds), timeout_s=rate_seconds + 120)
        child.join(timeout=30)
        loop.source.close()
        lag = np.array(lags)
        result = {
            "events_per_s": round(events_per_s, 1),
            "events": events,
            "offered_rate_per_s": rate,
            "lag_events": int(lag.shape[0]),
            "lag_p50_s": round(float(np.percentile(lag, 50)), 4),
            "lag_p99_s": round(float(np.percentile(lag, 99)), 4),
            "batch_size": 2048,
            "targets": {"events_per_s": ">= 20000", "lag_p99_s": "< 1.0"},
        }
    finally:
        for ns in (f"{namespace}-a", f"{namespace}-b"):
            _cleanup(client, ns)
        admin.delete_topics(topics)
        admin.close()
        client.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainer.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    result = run_trainer_bench(args.redis_url, args.bootstrap, args.out, events=args.events)
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
