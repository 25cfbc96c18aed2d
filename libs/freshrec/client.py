"""`freshrec.client`: Python clients of the ingest and ranking services, on httpx.

`FreshrecClient` (blocking) and `AsyncFreshrecClient` (asyncio) do what a careful caller must:

- `send_events` validates each event locally (`freshrec.stream.events.validate_events`, what
  ingest validates with), splits them into batches of at most the server's `max_batch_events`,
  and posts each batch until it is accepted. An invalid event raises `InvalidEvents` naming
  every problem as ingest's 422 does, before anything is sent. A 429 or 503, or no answer at
  all, is retried with the same batch after the server's `Retry-After` (or a doubling
  backoff), at most `retries` times (`RetryPolicy`; `on_retry` hears of each retry). Retrying
  is safe: every event carries its `event_id`, and the trainer trains each id once. A batch
  still refused after that raises (`Overloaded`, `DependencyUnavailable`), naming how many
  events were accepted before it.
- `recommend` and `row` ask the ranker and return typed answers.
- Every refusal is raised as the project's exception for it (`freshrec.errors`): the server's
  `ErrorBody.error` names the class (`InvalidInput` with its `details`, `NotFound`,
  `Unauthorized`, `PayloadTooLarge`, …).

```python
from freshrec.client import FreshrecClient

with FreshrecClient("http://127.0.0.1:8001", "http://127.0.0.1:8000", api_key="k") as client:
    client.send_events([{"event_id": "e-1", "type": "click", "user_id": "u1",
                         "item_id": "i9", "timestamp": 1750000000.0}])
    print(client.recommend("u1", k=10).items)
```
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field

from freshrec import errors
from freshrec.api.answers import Recommendation, RecommendedItem, Row
from freshrec.stream.events import (
    DEFAULT_MAX_BATCH_EVENTS,
    Event,
    EventErrorDetail,
    InvalidEvents,
    validate_events,
)

__all__ = [
    "AsyncFreshrecClient",
    "FreshrecClient",
    "InvalidEvents",
    "Recommendation",
    "RecommendedItem",
    "RetryNotice",
    "RetryPolicy",
    "Row",
]

EventLike = Event | Mapping[str, Any]
M = TypeVar("M", bound=BaseModel)

RETRIED_STATUSES = frozenset({429, 503})
"""What a batch is posted again after, by default (besides no answer at all)."""
_BY_STATUS: dict[int, type[errors.FreshrecError]] = {
    401: errors.Unauthorized,
    403: errors.Unauthorized,
    404: errors.NotFound,
    408: errors.BodyTimeout,
    413: errors.PayloadTooLarge,
    422: errors.InvalidInput,
    429: errors.Overloaded,
    503: errors.DependencyUnavailable,
}


class RetryPolicy(BaseModel):
    """How a refused or unanswered batch is retried.

    Attributes:
        retries: retries after the first attempt; 0 never retries.
        backoff_s: wait before the first retry when the server gives no `Retry-After`;
            doubled for each further one.
        max_backoff_s: bound on any wait, `Retry-After` included.
        max_wait_s: also give up once the waits spent on one batch add up to this (None:
            only `retries` bounds them).
        jitter: a wait without `Retry-After` is multiplied by a uniform draw from
            `[1 - jitter, 1]`, so many producers refused together do not retry in lockstep.
        statuses: the answers a batch is posted again after (no answer at all always is).
    """

    retries: int = Field(8, ge=0)
    backoff_s: float = Field(0.25, ge=0.0)
    max_backoff_s: float = Field(10.0, ge=0.0)
    max_wait_s: float | None = Field(None, ge=0.0)
    jitter: float = Field(0.0, ge=0.0, le=1.0)
    statuses: frozenset[int] = RETRIED_STATUSES

    def delay_s(self, attempt: int, response: httpx.Response | None) -> float:
        """The wait before retry number `attempt` (0-based).

        `Retry-After` is honoured in both of its forms (seconds, or an HTTP date).
        """
        after = None if response is None else _retry_after_s(response)
        if after is not None:
            return min(self.max_backoff_s, after)
        wait = float(min(self.max_backoff_s, self.backoff_s * 2.0**attempt))
        if self.jitter:
            wait *= random.uniform(1.0 - self.jitter, 1.0)
        return wait


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryNotice:
    """What `on_retry` is told before each retry of a batch.

    Attributes:
        attempt: the attempt that was refused (1 for the first post of the batch).
        wait_s: how long the client waits before posting the batch again.
        status: the refusal's HTTP status; None when nothing answered.
        cause: the server's message, or the transport error.
        accepted: events of this call accepted before the batch.
    """

    attempt: int
    wait_s: float
    status: int | None
    cause: str
    accepted: int


def _validated_batches(events: Iterable[EventLike], size: int) -> list[list[dict[str, Any]]]:
    """The events as the JSON ingest expects, in batches of at most `size`.

    Each batch is validated as ingest validates a posted one (`validate_events`: the model,
    the timestamp bound, event ids unique within the batch).

    Raises:
        InvalidEvents: an event is invalid; `details` names every problem as ingest's 422
            does (`index` is the event's position in `events`).
    """
    items = [e if isinstance(e, Event) else dict(e) for e in events]
    batches: list[list[dict[str, Any]]] = []
    problems: list[EventErrorDetail] = []
    for start in range(0, len(items), size):
        valid, found = validate_events(items[start : start + size])
        problems += [_shifted(problem, start) for problem in found]
        batches.append([event.model_dump(mode="json", exclude_none=True) for _, event in valid])
    if problems:
        bad = len({problem["index"] for problem in problems})
        first = problems[0]
        raise InvalidEvents(
            f"event {first['index']} is invalid ({first['field']}: {first['reason']}); "
            f"{bad} of {len(items)} events are invalid, nothing was sent",
            problems,
        )
    return batches


def _shifted(problem: EventErrorDetail, offset: int) -> EventErrorDetail:
    index = problem["index"]
    return {**problem, "index": None if index is None else index + offset}


def _error(response: httpx.Response) -> errors.FreshrecError:
    """The project's exception for an error answer (by the body's `error`, else the status).

    An `InvalidInput` carries the body's `details` (one entry per problem) as `details`.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        name, message = body["error"], str(body.get("message", ""))
    else:
        name, message = "", response.text[:500] or f"HTTP {response.status_code}"
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.FreshrecError)):
        cls = _BY_STATUS.get(response.status_code, errors.FreshrecError)
    error = cls(f"{response.request.method} {response.request.url.path}: {message}")
    if isinstance(body, dict):
        error.details = body.get("details")
    return error


def _parsed(response: httpx.Response, model: type[M]) -> M:
    if response.status_code != 200:
        raise _error(response)
    return model.model_validate_json(response.content)


def _refusal(response: httpx.Response, accepted: int) -> errors.FreshrecError:
    """`_error`, with the positions a 422 names counted from the start of the call."""
    error = _error(response)
    details = error.details
    if accepted and isinstance(details, list):
        error.details = [
            {**d, "index": d["index"] + accepted}
            if isinstance(d, dict) and type(d.get("index")) is int
            else d
            for d in details
        ]
    return error


def _gave_up(accepted: int, attempts: int, last: httpx.Response | None, cause: str) -> Exception:
    where = f"after {accepted} events were accepted, a batch was refused {attempts} times"
    if last is not None and last.status_code == 429:
        return errors.Overloaded(f"{where} (429: {cause})")
    return errors.DependencyUnavailable(f"{where} ({cause})")


class _Base:
    """What both clients share: their arguments, URLs, request bodies and retry protocol.

    Args:
        ingest_url: ingest's base URL, e.g. `http://127.0.0.1:8001`; needed by `send_events`.
        ranker_url: the ranker's base URL; needed by `recommend` and `row`.
        api_key: sent as `Authorization: Bearer …` when given.
        timeout_s: bound on each HTTP request (of the client's own httpx client).
        max_batch_events: events per POST at most (the server's `max_batch_events`).
        retry: how refused or unanswered batches are retried.
        on_retry: called before each retry of a batch (counting, logging), from the calling
            thread.
        transport: an httpx transport instead of the network (tests, custom TLS, proxies);
            `httpx.BaseTransport` for the blocking client, `httpx.AsyncBaseTransport` for the
            asyncio one.
        http_client: an httpx client to send with instead of one of the client's own (its
            pool, timeouts and socket options apply; it is not closed by `close`):
            `httpx.Client` for the blocking client, `httpx.AsyncClient` for the asyncio one.
    """

    def __init__(
        self,
        ingest_url: str | None = None,
        ranker_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        transport: Any = None,
        http_client: Any = None,
    ) -> None:
        if max_batch_events < 1:
            raise errors.ConfigError(f"max_batch_events must be >= 1, got {max_batch_events}")
        self.ingest_url = ingest_url
        self.ranker_url = ranker_url
        self.headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self.max_batch_events = max_batch_events
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.timeout_s = timeout_s
        self._transport = transport
        self._given = http_client
        self._client: Any = None  # the client's own httpx client, made on first use

    def _url(self, base: str | None, path: str, what: str) -> str:
        if base is None:
            raise errors.ConfigError(f"no {what} URL was given to the client")
        return f"{base.rstrip('/')}{path}"

    def _events_url(self) -> str:
        return self._url(self.ingest_url, "/v1/events", "ingest")

    def _attempts(
        self, accepted: int
    ) -> Generator[float, httpx.Response | httpx.TransportError, None]:
        """The retry protocol of one batch, shared by both clients.

        Yields the wait before each attempt (0 before the first) and is sent what the attempt
        got: an answer or a transport error. Returns once the batch is accepted; raises the
        server's refusal, or `_gave_up` when the retries are spent.
        """
        policy = self.retry
        last: httpx.Response | None = None
        waited = 0.0
        attempt = 0
        outcome = yield 0.0
        while True:
            attempt += 1
            if isinstance(outcome, httpx.Response):
                if outcome.is_success:
                    return
                if outcome.status_code not in policy.statuses:
                    raise _refusal(outcome, accepted)
                last, cause = outcome, _error(outcome).message
            else:
                last, cause = None, f"{type(outcome).__name__}: {outcome}"
            spent = policy.max_wait_s is not None and waited >= policy.max_wait_s
            if attempt > policy.retries or spent:
                break
            wait = policy.delay_s(attempt - 1, last)
            waited += wait
            if self.on_retry is not None:
                status = None if last is None else last.status_code
                self.on_retry(RetryNotice(attempt, wait, status, cause, accepted))
            outcome = yield wait
        raise _gave_up(accepted, attempt, last, cause)

    def _recommend_request(
        self,
        user_id: str | int,
        k: int,
        context: Mapping[str, str | int | float] | None,
        exclude_item_ids: Iterable[str | int],
    ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"user_id": user_id, "k": k}
        if context is not None:
            body["context"] = dict(context)
        excluded = list(exclude_item_ids)
        if excluded:
            body["exclude_item_ids"] = excluded
        return self._url(self.ranker_url, "/v1/recommend", "ranker"), body

    def _row_url(self, table: str, row_id: str | int) -> str:
        return self._url(self.ranker_url, f"/v1/tables/{table}/rows/{row_id}", "ranker")


class FreshrecClient(_Base):
    """A blocking client of ingest and the ranker.

    The arguments are `_Base`'s, plus `sleep`: how the client waits between attempts
    (`time.sleep`; a test's clock, or a pacing loop's).
    """

    def __init__(
        self,
        ingest_url: str | None = None,
        ranker_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_batch_events: int = DEFAULT_MAX_BATCH_EVENTS,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryNotice], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            ingest_url,
            ranker_url,
            api_key=api_key,
            timeout_s=timeout_s,
            max_batch_events=max_batch_events,
            retry=retry,
            on_retry=on_retry,
            transport=transport,
            http_client=http_client,
        )
        self._sleep = sleep

    @property
    def _http(self) -> httpx.Client:
        if isinstance(self._given, httpx.Client):
            return self._given
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s, transport=self._transport)
        client: httpx.Client = self._client
        return client

    def __enter__(self) -> FreshrecClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's own httpx client (a given `http_client` stays open)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def send_events(self, events: Iterable[EventLike]) -> int:
        """Post `events` in batches until each is accepted; the number accepted.

        Raises:
            InvalidEvents: an event is invalid; nothing is sent.
            InvalidInput: the server refused a batch (422; `details` as the server gave them,
                their `index` counted from the start of `events`).
            Overloaded, DependencyUnavailable: a batch was still refused after the retries.
        """
        accepted = 0
        for batch in _validated_batches(events, self.max_batch_events):
            self._post_batch(batch, accepted)
            accepted += len(batch)
        return accepted

    def _post_batch(self, batch: list[dict[str, Any]], accepted: int) -> None:
        attempts = self._attempts(accepted)
        delay = next(attempts)
        url = self._events_url()
        while True:
            if delay > 0:
                self._sleep(delay)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.post(url, json={"events": batch}, headers=self.headers)
            except httpx.TransportError as exc:
                outcome = exc
            try:
                delay = attempts.send(outcome)
            except StopIteration:
                return

    def recommend(
        self,
        user_id: str | int,
        k: int = 10,
        *,
        context: Mapping[str, str | int | float] | None = None,
        exclude_item_ids: Iterable[str | int] = (),
    ) -> Recommendation:
        """The ranker's top `k` items for `user_id`."""
        url, body = self._recommend_request(user_id, k, context, exclude_item_ids)
        return _parsed(self._http.post(url, json=body, headers=self.headers), Recommendation)

    def row(self, table: str, row_id: str | int) -> Row:
        """The embedding row `row_id` of `table` (`user`, `item` or `context`)."""
        return _parsed(self._http.get(self._row_url(table, row_id), headers=self.headers), Row)


class AsyncFreshrecClient(_Base):
    """`FreshrecClient` for asyncio: the same arguments, methods and errors, awaited."""

    @property
    def _http(self) -> httpx.AsyncClient:
        if isinstance(self._given, httpx.AsyncClient):
            return self._given
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._transport)
        client: httpx.AsyncClient = self._client
        return client

    async def __aenter__(self) -> AsyncFreshrecClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """See `FreshrecClient.close`."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send_events(self, events: Iterable[EventLike]) -> int:
        """See `FreshrecClient.send_events`."""
        accepted = 0
        for batch in _validated_batches(events, self.max_batch_events):
            await self._post_batch(batch, accepted)
            accepted += len(batch)
        return accepted

    async def _post_batch(self, batch: list[dict[str, Any]], accepted: int) -> None:
        attempts = self._attempts(accepted)
        delay = next(attempts)
        url = self._events_url()
        while True:
            await asyncio.sleep(delay)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.post(url, json={"events": batch}, headers=self.headers)
            except httpx.TransportError as exc:
                outcome = exc
            try:
                delay = attempts.send(outcome)
            except StopIteration:
                return

    async def recommend(
        self,
        user_id: str | int,
        k: int = 10,
        *,
        context: Mapping[str, str | int | float] | None = None,
        exclude_item_ids: Iterable[str | int] = (),
    ) -> Recommendation:
        """See `FreshrecClient.recommend`."""
        url, body = self._recommend_request(user_id, k, context, exclude_item_ids)
        response = await self._http.post(url, json=body, headers=self.headers)
        return _parsed(response, Recommendation)

    async def row(self, table: str, row_id: str | int) -> Row:
        """See `FreshrecClient.row`."""
        response = await self._http.get(self._row_url(table, row_id), headers=self.headers)
        return _parsed(response, Row)
