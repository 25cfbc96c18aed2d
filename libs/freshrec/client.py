"""`freshrec.client`: Python clients of the ingest and ranking services, on httpx.

`FreshrecClient` (blocking) and `AsyncFreshrecClient` (asyncio) do what a careful caller must:

- `send_events` validates each event locally (`freshrec.stream.events.Event`, the model ingest
  validates with), splits them into batches of at most the server's `max_batch_events`, and
  posts each batch until it is accepted. A 429 or 503, or no answer at all, is retried with
  the same batch after the server's `Retry-After` (or a doubling backoff), at most `retries`
  times. Retrying is safe: every event carries its `event_id`, and the trainer trains each id
  once. A batch still refused after that raises (`Overloaded`, `DependencyUnavailable`), naming
  how many events were accepted before it.
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
import time
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from freshrec import errors
from freshrec.api.answers import Recommendation, RecommendedItem, Row
from freshrec.stream.events import DEFAULT_MAX_BATCH_EVENTS, Event

__all__ = [
    "AsyncFreshrecClient",
    "FreshrecClient",
    "Recommendation",
    "RecommendedItem",
    "RetryPolicy",
    "Row",
]

EventLike = Event | Mapping[str, Any]
M = TypeVar("M", bound=BaseModel)

RETRIED_STATUSES = frozenset({429, 503})
_BY_STATUS: dict[int, type[errors.FreshrecError]] = {
    401: errors.Unauthorized,
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
    """

    retries: int = 8
    backoff_s: float = 0.25
    max_backoff_s: float = 10.0

    def delay_s(self, attempt: int, response: httpx.Response | None) -> float:
        """The wait before retry number `attempt` (0-based)."""
        after = None if response is None else response.headers.get("Retry-After")
        if after is not None:
            try:
                return min(self.max_backoff_s, max(0.0, float(after)))
            except ValueError:
                pass
        return float(min(self.max_backoff_s, self.backoff_s * 2.0**attempt))


def _validated(events: Iterable[EventLike]) -> list[dict[str, Any]]:
    """Each event as the JSON ingest expects; the first invalid one raises `InvalidInput`."""
    out = []
    for index, event in enumerate(events):
        try:
            model = event if isinstance(event, Event) else Event.model_validate(event)
        except ValidationError as exc:
            raise errors.InvalidInput(f"event {index} is invalid: {exc}") from exc
        out.append(model.model_dump(mode="json", exclude_none=True))
    return out


def _batches(events: Sequence[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(events), size):
        yield list(events[start : start + size])


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
        timeout_s: bound on each HTTP request.
        max_batch_events: events per POST at most (the server's `max_batch_events`).
        retry: how refused or unanswered batches are retried.
        transport: an httpx transport instead of the network (tests, custom TLS, proxies);
            `httpx.BaseTransport` for the blocking client, `httpx.AsyncBaseTransport` for the
            asyncio one.
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
        transport: Any = None,
    ) -> None:
        self.ingest_url = ingest_url
        self.ranker_url = ranker_url
        self.headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self.max_batch_events = max_batch_events
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self._transport = transport

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
        last: httpx.Response | None = None
        cause = ""
        outcome = yield 0.0
        for attempt in range(self.retry.retries + 1):
            if isinstance(outcome, httpx.Response):
                if outcome.status_code == 202:
                    return
                if outcome.status_code not in RETRIED_STATUSES:
                    raise _error(outcome)
                last, cause = outcome, _error(outcome).message
            else:
                last, cause = None, f"{type(outcome).__name__}: {outcome}"
            if attempt == self.retry.retries:
                break
            outcome = yield self.retry.delay_s(attempt, last)
        raise _gave_up(accepted, self.retry.retries + 1, last, cause)

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
    """A blocking client of ingest and the ranker (the arguments are `_Base`'s)."""

    @property
    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(
                headers=self.headers, timeout=self.timeout_s, transport=self._transport
            )
        return self._client

    _client: httpx.Client | None = None

    def __enter__(self) -> FreshrecClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def send_events(self, events: Iterable[EventLike]) -> int:
        """Post `events` in batches until each is accepted; the number accepted.

        Raises:
            InvalidInput: an event is invalid (nothing is sent), or the server refused one.
            Overloaded, DependencyUnavailable: a batch was still refused after the retries.
        """
        accepted = 0
        for batch in _batches(_validated(events), self.max_batch_events):
            self._post_batch(batch, accepted)
            accepted += len(batch)
        return accepted

    def _post_batch(self, batch: list[dict[str, Any]], accepted: int) -> None:
        attempts = self._attempts(accepted)
        delay = next(attempts)
        while True:
            time.sleep(delay)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = self._http.post(self._events_url(), json={"events": batch})
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
        return _parsed(self._http.post(url, json=body), Recommendation)

    def row(self, table: str, row_id: str | int) -> Row:
        """The embedding row `row_id` of `table` (`user`, `item` or `context`)."""
        return _parsed(self._http.get(self._row_url(table, row_id)), Row)


class AsyncFreshrecClient(_Base):
    """`FreshrecClient` for asyncio: the same arguments, methods and errors, awaited."""

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers=self.headers, timeout=self.timeout_s, transport=self._transport
            )
        return self._client

    _client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> AsyncFreshrecClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def send_events(self, events: Iterable[EventLike]) -> int:
        """See `FreshrecClient.send_events`."""
        accepted = 0
        for batch in _batches(_validated(events), self.max_batch_events):
            await self._post_batch(batch, accepted)
            accepted += len(batch)
        return accepted

    async def _post_batch(self, batch: list[dict[str, Any]], accepted: int) -> None:
        attempts = self._attempts(accepted)
        delay = next(attempts)
        while True:
            await asyncio.sleep(delay)
            outcome: httpx.Response | httpx.TransportError
            try:
                outcome = await self._http.post(self._events_url(), json={"events": batch})
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
        return _parsed(await self._http.post(url, json=body), Recommendation)

    async def row(self, table: str, row_id: str | int) -> Row:
        """See `FreshrecClient.row`."""
        return _parsed(await self._http.get(self._row_url(table, row_id)), Row)
