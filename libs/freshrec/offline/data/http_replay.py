"""Replay an event stream into the ingest API over HTTP, optionally paced by event time.

`replay` posts batches to `POST /v1/events` through `freshrec.client.FreshrecClient` over
one keep-alive connection, in stream order, one batch in flight (so events of a user reach
Kafka in the order they were read). Nothing is dropped silently: every event read ends up
either sent (202) or rejected (invalid, with the reason) in the returned `ReplayReport`, or
the replay stops with `ReplayAborted` saying how many events were not sent.

How each outcome is handled:

- accepted (202): the batch is in.
- invalid events: the client validates each batch as ingest does before posting it, and a
  422 from the server names events too (`details[].index`, or `field` like `events.3.type`);
  the events named are recorded as rejected with the reason and the rest of the batch is
  sent again. A 422 that names no event rejects the whole batch. (The ingest API refuses a
  batch as a whole on 422, so resending the valid part does not duplicate anything.)
- 413: the batch is split in two and each half sent; a single event that is still too large
  is rejected.
- 429, 500, 502, 503, 504 and connection errors: the client retries them with a jittered
  exponential backoff, waiting the server's `Retry-After` when it gives one, for up to
  `max_retry_s` of waiting or `max_attempts` attempts per batch; each retry is counted in
  `ReplayReport.retries`.
- 401 / 403: `Unauthorized` at once. Any other refusal: `ReplayAborted`.

This module paces and batches; `ingest_sender.py` hands a batch to the client and turns the
outcome into the report, `replay_report.py` holds the report, `replay_progress.py` the
progress line.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sized
from itertools import islice
from typing import Any

import httpx

from freshrec import __version__
from freshrec.client import FreshrecClient, RetryPolicy
from freshrec.errors import DependencyUnavailable, InvalidInput, Unauthorized
from freshrec.offline.data.ingest_sender import BatchSender, count_retries
from freshrec.offline.data.replay_progress import ExtraColumns, ReplayProgress
from freshrec.offline.data.replay_report import ReplayAborted, ReplayReport

__all__ = ["MAX_BATCH", "events_url", "replay"]

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
"""The ingest API's largest accepted batch."""

Clock = Callable[[], float]
Sleep = Callable[[float], None]

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
"""What a replay posts a batch again after: overload, and a server or proxy failing."""


def events_url(url: str) -> str:
    """The events endpoint for `url`: a base URL gets `/v1/events`, a full one is kept.

    Args:
        url: `http://host:port` of the ingest service, or its events endpoint.

    Returns:
        The URL to post batches to.
    """
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"not an http(s) URL: {url!r}")
    if parsed.path in ("", "/"):
        return str(parsed.copy_with(path="/v1/events"))
    return str(parsed)


def replay(
    events: Iterable[Mapping[str, Any]],
    url: str,
    *,
    api_key: str | None = None,
    speedup: float | None = None,
    batch_size: int = 500,
    limit: int | None = None,
    progress: bool = True,
    total: int | None = None,
    extra_columns: ExtraColumns | None = None,
    max_retry_s: float = 120.0,
    max_attempts: int = 1000,
    timeout_s: float = 30.0,
    client: httpx.Client | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
) -> ReplayReport:
    """Post `events` to the ingest API in batches, optionally paced by event time.

    With `speedup`, the event with timestamp `t` is sent at wall time
    `start + (t - t0) / speedup`, where `t0` is the first event's timestamp; events whose
    time has come are batched together (up to `batch_size`), and a batch is sent as soon as
    the next event is not due yet. A replay that falls behind (slow server, retries) catches
    up by sending at once; `ReplayReport.max_behind_s` says by how much it lagged.

    Args:
        events: event dicts in the wire format, in the order to send them.
        url: base URL of the ingest service (`http://host:8001`) or its events endpoint.
        api_key: sent as `Authorization: Bearer <key>` when given.
        speedup: event-time seconds per wall second; None sends as fast as possible.
        batch_size: events per request, 1..1000.
        limit: stop after this many events.
        progress: show a progress line on stderr.
        total: number of events, for a progress bar (taken from `len(events)` if it has one).
        extra_columns: returns extra `{name: text}` to show on the progress line (e.g.
            trainer lag); called at most once a second.
        max_retry_s: give up on a batch after waiting this long in retries.
        max_attempts: give up on a batch after this many attempts.
        timeout_s: HTTP timeout of one request.
        client: an httpx client to use (not closed here); a keep-alive client otherwise.
        clock: monotonic clock in seconds (for tests).
        sleep: sleeps a number of seconds (for tests).

    Returns:
        The report: events read, sent, accepted and rejected (with reasons), timings.

    Raises:
        InvalidInput: a bad argument.
        Unauthorized: the server refused the API key.
        ReplayAborted: the server kept failing; `.report` tells what was sent.
    """
    if not 1 <= batch_size <= MAX_BATCH:
        raise InvalidInput(f"batch_size must be within 1..{MAX_BATCH}, got {batch_size}")
    if speedup is not None and not speedup > 0:
        raise InvalidInput(f"speedup must be > 0, got {speedup}")
    if limit is not None and limit < 0:
        raise InvalidInput(f"limit must be >= 0, got {limit}")
    target = events_url(url)
    if total is None and isinstance(events, Sized):
        total = len(events)
    if total is not None and limit is not None:
        total = min(total, limit)
    stream: Iterable[Mapping[str, Any]] = events if limit is None else islice(events, limit)

    report = ReplayReport()
    own_client = client is None
    http = client or httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        headers={"user-agent": f"freshrec-replay/{__version__}"},
        # TCP_NODELAY: a small batch must not wait in Nagle's buffer for an ACK.
        transport=httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ),
    )
    poster = FreshrecClient(
        target.removesuffix("/v1/events"),
        api_key=api_key or None,
        max_batch_events=MAX_BATCH,
        retry=RetryPolicy(
            retries=max(0, max_attempts - 1),
            backoff_s=0.2,
            max_backoff_s=10.0,
            max_wait_s=max_retry_s,
            # several replays refused together do not retry in lockstep
            jitter=0.5,
            statuses=RETRIED_STATUSES,
        ),
        on_retry=count_retries(report),
        http_client=http,
        sleep=sleep,
    )
    sender = BatchSender(poster, target, report=report)
    bar = ReplayProgress(progress, total, extra_columns)
    started = clock()
    first_ts: float | None = None
    pending: list[tuple[int, dict[str, Any]]] = []
    pending_due: float | None = None  # when the most overdue pending event was due

    def flush() -> None:
        nonlocal pending_due
        if not pending:
            return
        if pending_due is not None:
            report.max_behind_s = max(report.max_behind_s, clock() - pending_due)
            pending_due = None
        sender.send(pending)
        pending.clear()
        bar.update(report.sent, report.rejected)

    def pace(ts: float, pace_speedup: float) -> None:
        nonlocal first_ts, pending_due
        if first_ts is None:
            first_ts = ts
        due = started + (ts - first_ts) / pace_speedup
        if due > clock():
            # Not due yet: send what is due, then wait for this one.
            flush()
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        # min: out-of-order events can be due before the batch's first
        pending_due = due if pending_due is None else min(pending_due, due)

    try:
        with bar:
            try:
                for index, raw in enumerate(stream):
                    event = dict(raw)
                    report.read += 1
                    ts = event.get("timestamp")
                    if isinstance(ts, int | float) and not isinstance(ts, bool):
                        if report.first_event_time is None:
                            report.first_event_time = float(ts)
                        report.last_event_time = float(ts)
                        if speedup is not None:
                            pace(float(ts), speedup)
                    pending.append((index, event))
                    if len(pending) >= batch_size:
                        flush()
            except InvalidInput:
                # A bad record in the source: what was read before it still goes out.
                flush()
                logger.warning("source failed after %d events: %s", report.read, report.summary())
                raise
            flush()
    except (DependencyUnavailable, Unauthorized) as exc:
        report.unsent = report.read - report.sent - report.rejected
        report.elapsed_s = clock() - started
        if isinstance(exc, Unauthorized):
            raise
        raise ReplayAborted(str(exc), report) from exc
    finally:
        if own_client:
            http.close()
    report.elapsed_s = clock() - started
    logger.info("replay done: %s", report.summary())
    return report
