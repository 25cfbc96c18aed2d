"""`BatchSender`: posts one batch to the ingest API and turns every answer into the report.

The statuses and what each does are listed in `freshrec.offline.data.http_replay`.
"""

from __future__ import annotations

import email.utils
import logging
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from freshrec.errors import DependencyUnavailable, Unauthorized
from freshrec.offline.data.replay_report import MAX_KEPT_REJECTIONS, Rejection, ReplayReport

__all__ = ["BatchSender", "Sleep"]

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 60.0

Sleep = Callable[[float], None]


class _Retryable(Exception):
    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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


class BatchSender:
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
