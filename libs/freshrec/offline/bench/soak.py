"""The soak: steady load through the running stack with a random fault every 30 to 60 s.

A producer streams uniquely identified events through ingest at a steady rate with
`freshrec.client`, as a careful client does: a batch answered 429 or 503, or not answered at
all, is posted again until it is acknowledged (202), and every seventh acknowledged batch is
posted a second time (its answer "was lost"). Beside it a probe posts one event of a fresh
user every `probe_interval_s` and reads the user table until that user's row is there: its
freshness, from the post to the row committed, as a client sees it. Meanwhile a fault is
injected every 30 to 60 s (the caller's list: servers killed or stopped, services killed).
Each fault's recovery is timed from the moment what it broke is back to the trainer
committing again with every service ready.

At the end, once the trainer consumed everything, each user's row occurrence count is checked
against the events acknowledged for that user: a count short of it is a lost event, a count
above it a duplicated one. The caller (`freshrec bench soak`) starts the servers and services.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis

from freshrec.client import FreshrecClient, RetryNotice, RetryPolicy
from freshrec.errors import FreshrecError
from freshrec.models import entity_row_ids
from freshrec.settings import default_table_config_path
from freshrec.table import RedisTableBackend, Tables, load_tables, open_tables

__all__ = ["Fault", "SoakTargets", "SteadyProducer", "consumed", "ready", "run_soak"]

logger = logging.getLogger(__name__)

RESEND_EVERY = 7
RETRY_PAUSE_S = 0.5
"""The wait before posting a refused batch again (shorter when the server's Retry-After is)."""


@dataclass(frozen=True)
class SoakTargets:
    """Where the running stack is."""

    ingest: str
    trainer: str
    ranker: str
    api_key: str
    redis_url: str
    namespace: str


@dataclass(frozen=True)
class Fault:
    """One kind of fault: `inject` breaks something and returns once it is back."""

    name: str
    inject: Callable[[], None]


def consumed(trainer_url: str) -> int:
    """Messages the trainer has committed (sum of its partitions' offsets); -1 when unreachable."""
    try:
        status = httpx.get(f"{trainer_url}/v1/status", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return -1
    return sum(int(v) for v in status["offsets"].values())


def ready(url: str) -> bool:
    """Whether the service at `url` answers `/readyz` with 200."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _event(event_id: str, user: str, item: str) -> dict[str, Any]:
    return {
        "event_id": event_id, "type": "rating", "user_id": user, "item_id": item,
        "timestamp": time.time(), "value": 4.0,
    }  # fmt: skip


class SteadyProducer:
    """Posts batches through ingest until each is acknowledged, from a background thread.

    Each batch goes through `FreshrecClient.send_events`, which retries it every
    `RETRY_PAUSE_S` (or the server's shorter `Retry-After`) while it is answered 429 or 503 or
    not at all; every retry is counted in `retries`.

    Args:
        ingest: ingest's base URL.
        api_key: a key ingest accepts.
        batches: the batches to post, in order (each a list of events).
        pause_s: pause after each acknowledged batch.
        give_up_s: a batch not acknowledged after about this long of retrying stops the
            producer with the client's error (`DependencyUnavailable`, `Overloaded`).
    """

    def __init__(
        self,
        ingest: str,
        api_key: str,
        batches: Sequence[list[dict[str, Any]]],
        pause_s: float,
        give_up_s: float = 120.0,
    ) -> None:
        self.ingest = ingest
        self.api_key = api_key
        self.batches = batches
        self.pause_s = pause_s
        self.give_up_s = give_up_s
        self.retry = RetryPolicy(
            retries=math.ceil(give_up_s / RETRY_PAUSE_S),
            backoff_s=RETRY_PAUSE_S,
            max_backoff_s=RETRY_PAUSE_S,
        )
        self.messages = 0  # messages the 202s put on the topic, re-posts included
        self.retries = 0  # posts answered 429/503 or not at all
        self.acked: Counter[str] = Counter()  # user id → distinct events acknowledged
        self.error: BaseException | None = None
        self._count_lock = threading.Lock()  # the probe posts through this producer too
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)

    def start(self) -> SteadyProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Finish the batch in flight and post no more."""
        self._stop.set()

    def join(self, timeout_s: float = 300.0) -> None:
        """Wait for the producer; re-raise what stopped it."""
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            raise TimeoutError("the producer did not finish")
        if self.error is not None:
            raise self.error

    def client(self) -> FreshrecClient:
        """A client that posts as this producer does, its retries counted here; close it."""
        return FreshrecClient(
            self.ingest,
            api_key=self.api_key,
            timeout_s=10.0,
            retry=self.retry,
            on_retry=self._count_retry,
        )

    def _count_retry(self, _: RetryNotice) -> None:
        with self._count_lock:
            self.retries += 1

    def post_until_accepted(self, client: FreshrecClient, events: list[dict[str, Any]]) -> None:
        """Post one batch until it is acknowledged; count its messages.

        Raises:
            FreshrecError: refused for good (`DependencyUnavailable` or `Overloaded` after the
                retries, another refusal at once).
        """
        accepted = client.send_events(events)
        with self._count_lock:
            self.messages += accepted

    def _run(self) -> None:
        try:
            with self.client() as client:
                for n, batch in enumerate(self.batches):
                    if self._stop.is_set():
                        return
                    self.post_until_accepted(client, batch)
                    self.acked.update(event["user_id"] for event in batch)
                    if n % RESEND_EVERY == 3:
                        self.post_until_accepted(client, batch)
                    time.sleep(self.pause_s)
        except BaseException as exc:  # reported by join()
            self.error = exc


class _EndlessBatches(Sequence[list[dict[str, Any]]]):
    """Batch n of an endless stream: `size` events over `users` users and `items` items."""

    def __init__(self, size: int, users: int, items: int) -> None:
        self.size, self.users, self.items = size, users, items

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, n: int) -> list[dict[str, Any]]:  # type: ignore[override]
        first = n * self.size
        return [
            _event(f"soak-{k}", f"u{k % self.users}", f"i{(k * 7) % self.items}")
            for k in range(first, first + self.size)
        ]


@dataclass
class _Probe:
    """Posts one event of a fresh user at a time and times until its row is committed."""

    targets: SoakTargets
    tables: Tables
    interval_s: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (posted at, seconds)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, producer: SteadyProducer) -> None:
        with producer.client() as client:
            n = 0
            while not self._stop.is_set():
                user = f"probe-{n}"
                posted = time.time()
                try:
                    producer.post_until_accepted(client, [_event(f"probe-{n}", user, "i0")])
                except FreshrecError as exc:
                    logger.warning("probe %d not accepted: %s", n, exc)
                    continue
                ids = entity_row_ids("user", [user])
                while not self._stop.is_set():
                    try:
                        if len(self.tables.user.read_rows(ids).ids):
                            self.samples.append((posted, time.time() - posted))
                            break
                    except redis.RedisError:
                        pass  # Redis is down: the sample waits for its return
                    time.sleep(0.02)
                n += 1
                self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class _FaultRecord:
    name: str
    started_at: float
    back_at: float = 0.0
    recovered_at: float = 0.0

    @property
    def recovery_s(self) -> float:
        return self.recovered_at - self.back_at

    def as_dict(self, started: float) -> dict[str, Any]:
        return {
            "fault": self.name,
            "at_s": round(self.started_at - started, 1),
            "down_s": round(self.back_at - self.started_at, 3),
            "recovery_s": round(self.recovery_s, 3),
        }


def _recover(targets: SoakTargets, record: _FaultRecord, timeout_s: float) -> None:
    """Wait until every service is ready and the trainer commits again after the fault."""
    at_return = consumed(targets.trainer)
    deadline = time.monotonic() + timeout_s
    urls = (targets.ingest, targets.trainer, targets.ranker)
    while time.monotonic() < deadline:
        now = consumed(targets.trainer)
        if now > at_return >= 0 and all(ready(url) for url in urls):
            break
        if at_return < 0:
            at_return = now
        time.sleep(0.1)
    else:
        logger.error("%s: no recovery within %g s", record.name, timeout_s)
    record.recovered_at = time.time()


def _p99(values: list[float]) -> float | None:
    return round(float(np.quantile(values, 0.99)), 3) if values else None


def _occurrences(tables: Tables, users: Sequence[str]) -> dict[str, int]:
    ids = entity_row_ids("user", users)
    rows = tables.user.read_rows(ids)
    by_id = dict(zip(rows.ids.tolist(), rows.count.tolist(), strict=True))
    return {user: int(by_id.get(int(i), 0)) for user, i in zip(users, ids.tolist(), strict=True)}


def run_soak(
    targets: SoakTargets,
    faults: Sequence[Fault],
    out: Path,
    *,
    duration_s: float = 600.0,
    gap_s: tuple[float, float] = (30.0, 60.0),
    rate_eps: float = 200.0,
    users: int = 1000,
    seed: int = 0,
    probe_interval_s: float = 0.5,
    recovery_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """Run the soak against a running stack and write `out/soak.json`.

    Args:
        targets: the running stack and its Redis.
        faults: the faults to choose from, uniformly at random.
        out: directory of `soak.json`.
        duration_s: how long the load runs.
        gap_s: the pause before each fault is drawn uniformly from this range.
        rate_eps: events per second the producer offers (batches of 50).
        users: distinct users of the load.
        seed: seeds the fault schedule.
        probe_interval_s: pause between freshness probes.
        recovery_timeout_s: a fault not recovered from within this long is reported as such.

    Returns:
        What `soak.json` holds.
    """
    rng = random.Random(seed)
    batch = 50
    client = redis.Redis.from_url(targets.redis_url)
    tables = open_tables(
        load_tables(default_table_config_path()), RedisTableBackend(client, targets.namespace)
    )
    producer = SteadyProducer(
        targets.ingest, targets.api_key, _EndlessBatches(batch, users, 2000), batch / rate_eps
    ).start()
    probe = _Probe(targets, tables, probe_interval_s)
    probe_thread = threading.Thread(target=probe.run, args=(producer,), daemon=True)
    probe_thread.start()
    started = time.time()
    logger.info(
        "soak: %g s of load at %g events/s, a fault every %g-%g s", duration_s, rate_eps, *gap_s
    )
    records: list[_FaultRecord] = []
    try:
        while time.time() - started < duration_s:
            pause = rng.uniform(*gap_s)
            if time.time() + pause - started > duration_s:
                time.sleep(max(0.0, duration_s - (time.time() - started)))
                break
            time.sleep(pause)
            fault = rng.choice(list(faults))
            record = _FaultRecord(fault.name, time.time())
            logger.info("soak: %s at %.0f s", fault.name, record.started_at - started)
            fault.inject()
            record.back_at = time.time()
            _recover(targets, record, recovery_timeout_s)
            logger.info("soak: %s recovered in %.1f s", fault.name, record.recovery_s)
            records.append(record)
    finally:
        producer.stop()
        producer.join()
        probe.stop()
        probe_thread.join(timeout=90)
    messages = producer.messages
    logger.info("soak: load stopped; waiting for the trainer to consume %d messages", messages)
    drain_deadline = time.monotonic() + 300
    while consumed(targets.trainer) < messages and time.monotonic() < drain_deadline:
        time.sleep(0.5)
    trained_messages = consumed(targets.trainer)
    names = sorted(producer.acked)
    got = _occurrences(tables, names)
    lost = sum(max(0, producer.acked[u] - got[u]) for u in names)
    duplicated = sum(max(0, got[u] - producer.acked[u]) for u in names)
    client.close()

    def during_fault(posted: float) -> bool:
        return any(r.started_at <= posted <= r.recovered_at for r in records)

    inside = [s for posted, s in probe.samples if during_fault(posted)]
    outside = [s for posted, s in probe.samples if not during_fault(posted)]
    result: dict[str, Any] = {
        "duration_s": round(time.time() - started, 1),
        "seed": seed,
        "offered_events_per_s": rate_eps,
        "events_acked": sum(producer.acked.values()),
        "events_trained": sum(got.values()),
        "messages_posted": messages,
        "messages_consumed": trained_messages,
        "retried_posts": producer.retries,
        "lost": lost,
        "duplicated": duplicated,
        "freshness_p99_s": {
            "outside_faults": _p99(outside),
            "during_faults": _p99(inside),
            "samples_outside": len(outside),
            "samples_during": len(inside),
        },
        "faults": [r.as_dict(started) for r in records],
        "max_recovery_s": max((round(r.recovery_s, 3) for r in records), default=None),
        "targets": {"lost": 0, "duplicated": 0, "max_recovery_s": 10.0},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
