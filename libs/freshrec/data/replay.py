"""Replay an event stream into the ingest API, optionally paced by event time.

`replay` posts batches to `POST /v1/events` over one keep-alive connection, in stream order,
one batch in flight (so events of a user reach Kafka in the order they were read). Nothing
is dropped silently: every event read ends up either sent (202) or rejected (422, with the
server's reason) in the returned `ReplayReport`, or the replay stops with `ReplayAborted`
saying how many events were not sent.

How each answer is handled:

- 202: the batch is in; the server's `accepted` count is added up.
- 422: the events the server names (`details[].field` like `events.3.type`) are recorded as
  rejected with the reason; the rest of the batch is sent again. A 422 that names no event
  rejects the whole batch. (The ingest API refuses a batch as a whole on 422, so resending
  the valid part does not duplicate anything.)
- 413: the batch is split in two and each half sent; a single event that is still too large
  is rejected.
- 429, 500, 502, 503, 504 and connection errors: retried with exponential backoff, waiting at
  least the server's `Retry-After`, for up to `max_retry_s` of waiting per batch.
- 401 / 403: `Unauthorized` at once. Any other status: `ReplayAborted`.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import logging
import random
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx
import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from freshrec import __version__
from freshrec.errors import DependencyUnavailable, InvalidInput, Unauthorized

__all__ = [
    "Rejection",
    "ReplayAborted",
    "ReplayReport",
    "events_url",
    "read_event_file",
    "replay",
]

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
"""The ingest API's largest accepted batch."""
MAX_KEPT_REJECTIONS = 1000
"""Rejections kept with their details; beyond this they are only counted."""
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 60.0

Clock = Callable[[], float]
Sleep = Callable[[float], None]
ExtraColumns = Callable[[], Mapping[str, str]]


@dataclass(frozen=True)
class Rejection:
    """One event the server refused.

    Attributes:
        index: position of the event in the replayed stream (0-based).
        event_id: the event's `event_id`, when it has one.
        field: the offending field inside the event (`type`, `timestamp`, ...), or "".
        reason: the server's explanation.
    """

    index: int
    event_id: str | None
    field: str
    reason: str


@dataclass
class ReplayReport:
    """What a replay did. `read == sent + rejected + unsent` always holds.

    Attributes:
        read: events taken from the source.
        sent: events in batches the server answered 2xx.
        accepted: sum of the server's `accepted` counts.
        rejected: events refused (422, or too large on their own).
        unsent: events read but neither sent nor rejected (only after an abort).
        rejections: the first `MAX_KEPT_REJECTIONS` rejections with their reasons.
        batches: requests answered 2xx.
        retries: requests retried (429/5xx/connection errors).
        elapsed_s: wall time of the replay.
        max_behind_s: worst delay of a send behind its paced schedule (0 when unpaced).
        first_event_time: event time of the first event with a timestamp.
        last_event_time: event time of the last event with a timestamp.
    """

    read: int = 0
    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    unsent: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    batches: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    max_behind_s: float = 0.0
    first_event_time: float | None = None
    last_event_time: float | None = None

    @property
    def events_per_s(self) -> float:
        """Events sent per second of wall time."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (
            f"read {self.read:,}, sent {self.sent:,} (accepted {self.accepted:,}), "
            f"rejected {self.rejected:,}, in {self.batches:,} batches, {self.retries:,} retries, "
            f"{self.elapsed_s:.1f} s, {self.events_per_s:,.0f} events/s"
        )
        if self.unsent:
            text += f", NOT SENT {self.unsent:,}"
        if self.max_behind_s > 0.0:
            text += f", at most {self.max_behind_s:.2f} s behind schedule"
        return text


class ReplayAborted(DependencyUnavailable):
    """The ingest API kept refusing a batch; `report` says what was and was not sent."""

    def __init__(self, message: str, report: ReplayReport) -> None:
        super().__init__(f"{message} ({report.summary()})")
        self.report = report


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


def read_event_file(path: Path | str) -> Iterator[dict[str, Any]]:
    """Events from a JSON Lines file (one object per line), lazily.

    Blank lines are skipped; `.gz` files are decompressed; `-` reads standard input.

    Args:
        path: the file.

    Yields:
        Each event object.

    Raises:
        InvalidInput: a line is not a JSON object (the message names the line).
    """
    name = str(path)
    with contextlib.ExitStack() as stack:
        stream: IO[bytes] | gzip.GzipFile
        if name == "-":
            stream = sys.stdin.buffer
        elif name.endswith(".gz"):
            stream = stack.enter_context(gzip.open(name, "rb"))
        else:
            stream = stack.enter_context(Path(name).open("rb"))
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InvalidInput(f"{name} line {number}: not JSON ({exc})") from exc
            if not isinstance(event, dict):
                raise InvalidInput(f"{name} line {number}: expected a JSON object")
            yield event


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"message": response.text[:500]}


def _message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or fallback)
    return fallback


def _event_errors(body: Any, size: int) -> dict[int, list[tuple[str, str]]]:
    """Map batch position → [(field, reason)] from a 422 body's `details`."""
    errors: dict[int, list[tuple[str, str]]] = {}
    details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return errors
    for item in details:
        if not isinstance(item, dict):
            continue
        reason = str(item.get("reason") or item.get("msg") or "invalid")
        field_name = str(item.get("field", ""))
        index = item.get("index")
        # Two shapes: the ingest API's {"index": 3, "field": "type"}, and a schema error's
        # {"field": "events.3.type"} (the batch field, the position, the path in the event).
        if not isinstance(index, int) or isinstance(index, bool):
            parts = field_name.split(".")
            if len(parts) < 2 or parts[0] != "events" or not parts[1].isdigit():
                continue
            index, field_name = int(parts[1]), ".".join(parts[2:])
        if 0 <= index < size:
            errors.setdefault(index, []).append((field_name, reason))
    return errors


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed or 0.0
        return Text(f"{speed:,.0f} events/s", style="progress.data.speed")


class _Progress:
    """A rich progress line on stderr: events sent, events/s, rejected, extra columns."""

    def __init__(self, enabled: bool, total: int | None, extra: ExtraColumns | None) -> None:
        self._extra = extra
        self._extra_at = 0.0
        self._progress: Progress | None = None
        self._task = TaskID(0)
        if not enabled:
            return
        columns: list[ProgressColumn | str] = [SpinnerColumn()]
        if total is not None:
            columns += [BarColumn(), TextColumn("{task.percentage:>5.1f}%")]
        columns += [
            TextColumn("{task.completed:,.0f} events"),
            _RateColumn(),
            TextColumn("{task.fields[rejected]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[extra]}"),
        ]
        self._progress = Progress(*columns, console=Console(stderr=True), transient=False)
        self._task = self._progress.add_task("replay", total=total, rejected="", extra="")

    def __enter__(self) -> _Progress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._update_extra(force=True)
            self._progress.stop()

    def update(self, sent: int, rejected: int) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._task,
            completed=sent,
            rejected=f"{rejected:,} rejected" if rejected else "",
        )
        self._update_extra()

    def _update_extra(self, force: bool = False) -> None:
        if self._progress is None or self._extra is None:
            return
        now = time.monotonic()
        # The callback may ask another service over the network: at most once a second.
        if not force and now - self._extra_at < 1.0:
            return
        self._extra_at = now
        try:
            text = "  ".join(f"{k}: {v}" for k, v in self._extra().items())
        except Exception as exc:  # a broken status callback must not stop a replay
            logger.debug("progress callback failed: %s", exc)
            text = "status unavailable"
        self._progress.update(self._task, extra=text)


class _Sender:
    """Posts batches with retries and turns every answer into report entries."""

    def __init__(
        self,
        client: httpx.Client,
        url: str,
        *,
        headers: Mapping[str, str],
        report: ReplayReport,
        sleep: Sleep,
        max_retry_s: float,
        max_attempts: int,
    ) -> None:
        self._client = client
        self._url = url
        self._headers = dict(headers)
        self._report = report
        self._retrying = Retrying(
            sleep=sleep,
            stop=self._stop(max_retry_s, max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type((_Retryable, httpx.TransportError)),
            before_sleep=self._before_sleep,
            reraise=True,
        )

    @staticmethod
    def _stop(max_retry_s: float, max_attempts: int) -> Callable[[RetryCallState], bool]:
        def stop(state: RetryCallState) -> bool:
            return state.idle_for >= max_retry_s or state.attempt_number >= max_attempts

        return stop

    @staticmethod
    def _wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Retryable) and exc.retry_after_s is not None:
            return exc.retry_after_s
        # Jittered exponential backoff: several replays do not retry in lockstep.
        return min(10.0, 0.2 * 2.0 ** (state.attempt_number - 1)) * random.uniform(0.5, 1.0)

    def _before_sleep(self, state: RetryCallState) -> None:
        self._report.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning("ingest: %s; retry %d in %.2f s", exc, state.attempt_number, wait)

    def _post_once(self, content: bytes) -> httpx.Response:
        response = self._client.post(self._url, content=content, headers=self._headers)
        if response.status_code in _RETRY_STATUSES:
            message = _message(_body(response), response.reason_phrase)
            raise _Retryable(f"HTTP {response.status_code}: {message}", _retry_after(response))
        return response

    def send(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        """Deliver one batch of (stream index, event): sent, rejected, or an exception."""
        queue = [batch]
        while queue:
            part = queue.pop()
            if not part:
                continue
            content = orjson.dumps({"events": [event for _, event in part]})
            try:
                response = self._retrying(self._post_once, content)
            except (_Retryable, httpx.TransportError) as exc:
                raise DependencyUnavailable(f"ingest at {self._url} kept failing: {exc}") from exc
            status = response.status_code
            if 200 <= status < 300:
                body = _body(response)
                accepted = body.get("accepted") if isinstance(body, dict) else None
                self._report.accepted += accepted if isinstance(accepted, int) else len(part)
                self._report.sent += len(part)
                self._report.batches += 1
            elif status == 422:
                queue.append(self._reject_named(part, _body(response)))
            elif status == 413:
                if len(part) == 1:
                    self._reject(part[0], "", "event too large for the ingest API (413)")
                else:
                    middle = len(part) // 2
                    # LIFO queue: push the second half first so stream order is kept
                    queue += [part[middle:], part[:middle]]
            elif status in (401, 403):
                raise Unauthorized(
                    f"ingest at {self._url} answered {status}: "
                    f"{_message(_body(response), 'API key refused')}; pass --api-key "
                    "(or FRESHREC_API_KEY) with a key listed in the server's FRESHREC_API_KEYS"
                )
            else:
                message = _message(_body(response), response.reason_phrase)
                raise DependencyUnavailable(f"ingest at {self._url} answered {status}: {message}")

    def _reject_named(
        self, part: list[tuple[int, dict[str, Any]]], body: Any
    ) -> list[tuple[int, dict[str, Any]]]:
        """Record the events a 422 names; return the rest, to be sent again."""
        errors = _event_errors(body, len(part))
        if not errors:
            # The server named no event: nothing can be salvaged from this batch.
            reason = _message(body, "batch refused (422)")
            details = body.get("details") if isinstance(body, dict) else None
            if details:
                reason = f"{reason}: {orjson.dumps(details).decode()[:500]}"
            for item in part:
                self._reject(item, "", reason)
            return []
        rest = []
        for position, item in enumerate(part):
            if position in errors:
                for field_name, reason in errors[position]:
                    self._reject(item, field_name, reason, count=False)
                self._report.rejected += 1
            else:
                rest.append(item)
        return rest

    def _reject(
        self, item: tuple[int, dict[str, Any]], field_name: str, reason: str, count: bool = True
    ) -> None:
        index, event = item
        if count:
            self._report.rejected += 1
        event_id = event.get("event_id")
        rejection = Rejection(
            index, None if event_id is None else str(event_id), field_name, reason
        )
        if len(self._report.rejections) < MAX_KEPT_REJECTIONS:
            self._report.rejections.append(rejection)
        logger.warning(
            "ingest rejected event #%d (%s) %s: %s", index, rejection.event_id, field_name, reason
        )


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
    headers = {"content-type": "application/json", "user-agent": f"freshrec-replay/{__version__}"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    if total is None and isinstance(events, Sized):
        total = len(events)
    if total is not None and limit is not None:
        total = min(total, limit)
    stream: Iterable[Mapping[str, Any]] = events if limit is None else islice(events, limit)

    report = ReplayReport()
    own_client = client is None
    http = client or httpx.Client(
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
        # TCP_NODELAY: a small batch must not wait in Nagle's buffer for an ACK.
        transport=httpx.HTTPTransport(
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ),
    )
    sender = _Sender(
        http,
        target,
        headers=headers,
        report=report,
        sleep=sleep,
        max_retry_s=max_retry_s,
        max_attempts=max_attempts,
    )
    bar = _Progress(progress, total, extra_columns)
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
