"""`BatchSender`: delivers a batch through `freshrec.client`, turns the outcome into the report.

Posting, batching to the server's limit and retrying (429, 5xx, no answer; `Retry-After`)
are the client's (`FreshrecClient.send_events`); this module decides what a refusal means
for a replay. The statuses and what each does are listed in
`freshrec.offline.data.http_replay`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from freshrec.client import FreshrecClient, RetryNotice
from freshrec.errors import (
    DependencyUnavailable,
    FreshrecError,
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    Unauthorized,
)
from freshrec.offline.data.replay_report import MAX_KEPT_REJECTIONS, Rejection, ReplayReport

__all__ = ["BatchSender", "count_retries"]

logger = logging.getLogger(__name__)

Item = tuple[int, dict[str, Any]]
"""An event with its position in the replayed stream."""


def count_retries(report: ReplayReport) -> Callable[[RetryNotice], None]:
    """An `on_retry` for the client: counts each retry in `report` and logs it."""

    def on_retry(notice: RetryNotice) -> None:
        report.retries += 1
        logger.warning(
            "ingest: %s; retry %d in %.2f s", notice.cause, notice.attempt, notice.wait_s
        )

    return on_retry


def _event_errors(details: Any, size: int) -> dict[int, list[tuple[str, str]]]:
    """Map batch position → [(field, reason)] from a refusal's `details`."""
    errors: dict[int, list[tuple[str, str]]] = {}
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
    """Sends batches through a `FreshrecClient` and turns every outcome into report entries.

    Args:
        client: posts and retries; its `on_retry` should be `count_retries(report)`.
        url: the events endpoint, for messages.
        report: where the outcome of every event goes.
    """

    def __init__(self, client: FreshrecClient, url: str, *, report: ReplayReport) -> None:
        self._client = client
        self._url = url
        self._report = report

    def send(self, batch: list[Item]) -> None:
        """Deliver one batch of (stream index, event): sent, rejected, or an exception."""
        queue = [batch]
        while queue:
            part = queue.pop()
            if not part:
                continue
            try:
                accepted = self._client.send_events(event for _, event in part)
            except InvalidInput as exc:  # found by the client, or the server's 422
                queue.append(self._reject_named(part, exc))
                continue
            except PayloadTooLarge:
                if len(part) == 1:
                    self._reject(part[0], "", "event too large for the ingest API (413)")
                else:
                    middle = len(part) // 2
                    # LIFO queue: push the second half first so stream order is kept
                    queue += [part[middle:], part[:middle]]
                continue
            except Unauthorized as exc:
                raise Unauthorized(
                    f"ingest at {self._url} refused the key: {exc.message}; pass --api-key "
                    "(or FRESHREC_API_KEY) with a key listed in the server's FRESHREC_API_KEYS"
                ) from exc
            except (DependencyUnavailable, Overloaded) as exc:
                raise DependencyUnavailable(
                    f"ingest at {self._url} kept failing: {exc.message}"
                ) from exc
            except FreshrecError as exc:
                raise DependencyUnavailable(f"ingest at {self._url}: {exc.message}") from exc
            self._report.accepted += accepted
            self._report.sent += len(part)
            self._report.batches += 1

    def _reject_named(self, part: list[Item], exc: InvalidInput) -> list[Item]:
        """Record the events a refusal names; return the rest, to be sent again."""
        errors = _event_errors(exc.details, len(part))
        if not errors:
            # The server named no event: nothing can be salvaged from this batch.
            reason = exc.message
            if exc.details:
                reason = f"{reason}: {orjson.dumps(exc.details).decode()[:500]}"
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

    def _reject(self, item: Item, field_name: str, reason: str, count: bool = True) -> None:
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
