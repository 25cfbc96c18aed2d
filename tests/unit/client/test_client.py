"""The client's batching, retries and errors, against scripted answers (httpx.MockTransport)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from freshrec import errors
from freshrec.client import (
    AsyncFreshrecClient,
    FreshrecClient,
    InvalidEvents,
    RetryNotice,
    RetryPolicy,
)

FAST = RetryPolicy(retries=3, backoff_s=0.01, max_backoff_s=0.5)


def _event(n: int) -> dict[str, Any]:
    return {"event_id": f"e{n}", "type": "click", "user_id": f"u{n % 3}", "item_id": n,
            "timestamp": time.time()}  # fmt: skip


class Script:
    """Answers each request with the next of `answers`, recording what was sent."""

    def __init__(self, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.at: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.at.append(time.monotonic())
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return answer(request)


def accepted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"accepted": 1})


def refused(status: int, error: str, retry_after: str | None = None) -> Callable[..., Any]:
    headers = {} if retry_after is None else {"Retry-After": retry_after}

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": error, "message": "no"}, headers=headers)

    return answer


def _client(script: Script, **kwargs: Any) -> FreshrecClient:
    kwargs.setdefault("retry", FAST)
    return FreshrecClient(
        "http://ingest", "http://ranker", api_key="k",
        transport=httpx.MockTransport(script), **kwargs,
    )  # fmt: skip


def test_events_go_in_batches_of_the_servers_limit_with_the_key() -> None:
    script = Script(accepted)
    with _client(script, max_batch_events=4) as client:
        assert client.send_events([_event(n) for n in range(10)]) == 10
    sizes = [len(httpx.Response(200, content=r.content).json()["events"]) for r in script.requests]
    assert sizes == [4, 4, 2]
    assert all(r.headers["Authorization"] == "Bearer k" for r in script.requests)


def test_a_429_is_retried_after_the_servers_retry_after() -> None:
    script = Script(refused(429, "Overloaded", "0.2"), refused(429, "Overloaded", "0.2"), accepted)
    with _client(script) as client:
        assert client.send_events([_event(1)]) == 1
    assert len(script.requests) == 3
    assert script.requests[0].content == script.requests[2].content, "the same batch again"
    assert script.at[1] - script.at[0] >= 0.19 and script.at[2] - script.at[1] >= 0.19


def test_a_dependency_that_stays_down_is_a_clear_error_after_the_retries() -> None:
    script = Script(refused(503, "BrokerUnavailable"))
    with _client(script) as client, pytest.raises(errors.DependencyUnavailable) as raised:
        client.send_events([_event(n) for n in range(3)])
    assert len(script.requests) == FAST.retries + 1
    assert "refused 4 times" in raised.value.message


def test_transport_errors_are_retried_like_a_503() -> None:
    calls: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=request)
        return accepted(request)

    with _client(Script(flaky)) as client:
        assert client.send_events([_event(1)]) == 1
    assert len(calls) == 3


def test_refusals_that_a_retry_cannot_fix_raise_at_once_as_the_projects_errors() -> None:
    details = [{"field": "events.0.type", "reason": "bad", "type": "enum", "index": 0}]

    def invalid(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": "InvalidEvents", "message": "no",
                                         "details": details})  # fmt: skip

    script = Script(invalid)
    with _client(script) as client, pytest.raises(errors.InvalidInput) as raised:
        client.send_events([_event(1)])
    assert len(script.requests) == 1
    assert raised.value.details == details
    with (
        _client(Script(refused(401, "Unauthorized"))) as client,
        pytest.raises(errors.Unauthorized),
    ):
        client.send_events([_event(1)])


def test_an_invalid_event_is_refused_before_anything_is_sent() -> None:
    script = Script(accepted)
    with _client(script) as client, pytest.raises(errors.InvalidInput, match="event 1"):
        client.send_events([_event(0), {"event_id": "x", "type": "no-such-type"}])
    assert script.requests == []


def test_recommend_and_row_answers_are_typed() -> None:
    def ranker(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/recommend":
            return httpx.Response(200, json={"items": [{"item_id": "i1", "score": 0.5}],
                                             "model_version": 3, "index_version": 7,
                                             "fallback": False, "scoring": "s",
                                             "like_weight": 1.0})  # fmt: skip
        return httpx.Response(404, json={"error": "NotFound", "message": "no such row"})

    with _client(Script(ranker)) as client:
        answer = client.recommend("u1", k=1, exclude_item_ids=["i2"])
        assert answer.items[0].item_id == "i1" and answer.index_version == 7
        with pytest.raises(errors.NotFound, match="no such row"):
            client.row("user", "nobody")


def test_the_async_client_retries_and_batches_the_same_way() -> None:
    script = Script(refused(503, "BrokerUnavailable", "0"), accepted)

    async def main() -> int:
        async with AsyncFreshrecClient(
            "http://ingest", retry=FAST, max_batch_events=2,
            transport=httpx.MockTransport(script),
        ) as client:  # fmt: skip
            return await client.send_events([_event(n) for n in range(3)])

    assert anyio.run(main) == 3
    assert len(script.requests) == 3  # batch 1 refused once, then accepted; batch 2 accepted


def test_every_invalid_event_is_named_as_ingest_names_it_counted_from_the_call() -> None:
    script = Script(accepted)
    events = [_event(n) for n in range(5)]
    events[1]["type"] = "no-such-type"
    events[4] = {**events[3]}  # a repeated event id, in the same batch of 3
    with _client(script, max_batch_events=3) as client, pytest.raises(InvalidEvents) as raised:
        client.send_events(events)
    assert script.requests == []
    problems = {(d["index"], d["field"], d["type"]) for d in raised.value.details}
    assert problems == {(1, "type", "enum"), (4, "event_id", "duplicate_event_id")}
    assert "2 of 5 events are invalid" in raised.value.message


def test_a_422_of_a_later_batch_names_positions_in_the_call() -> None:
    details = [{"index": 1, "field": "item_id", "reason": "no", "type": "x"}, {"index": None}]
    script = Script(
        accepted,
        lambda request: httpx.Response(
            422, json={"error": "InvalidEvents", "message": "no", "details": details}
        ),
    )
    with _client(script, max_batch_events=2) as client, pytest.raises(errors.InvalidInput) as e:
        client.send_events([_event(n) for n in range(4)])
    assert e.value.details == [{**details[0], "index": 3}, {"index": None}]


def test_each_retry_is_announced_and_the_waits_are_bounded() -> None:
    notices: list[RetryNotice] = []
    script = Script(refused(503, "BrokerUnavailable", "0.05"))
    policy = RetryPolicy(retries=100, backoff_s=0.01, max_wait_s=0.12)
    with (
        _client(script, retry=policy, on_retry=notices.append) as client,
        pytest.raises(errors.DependencyUnavailable, match="refused 4 times"),
    ):
        client.send_events([_event(1)])
    # waits of 0.05 s: after three of them (0.15 s >= 0.12 s) the client gives up
    assert [(n.attempt, n.wait_s, n.status, n.accepted) for n in notices] == [
        (1, 0.05, 503, 0),
        (2, 0.05, 503, 0),
        (3, 0.05, 503, 0),
    ]
    assert notices[0].cause.endswith("no")


def test_statuses_jitter_and_an_http_date_retry_after() -> None:
    sleeps: list[float] = []
    script = Script(refused(502, "Gateway"), refused(500, "Oops"), accepted)
    policy = RetryPolicy(backoff_s=1.0, jitter=0.5, statuses=frozenset({500, 502}))
    with _client(script, retry=policy, sleep=sleeps.append) as client:
        assert client.send_events([_event(1)]) == 1
    assert 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0
    with _client(Script(refused(500, "Oops"))) as client, pytest.raises(errors.FreshrecError):
        client.send_events([_event(1)])  # not retried by default
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    answer = httpx.Response(429, headers={"Retry-After": later})
    assert 25 <= RetryPolicy(max_backoff_s=60).delay_s(0, answer) <= 30


def test_a_given_http_client_is_used_and_left_open() -> None:
    script = Script(accepted)
    with httpx.Client(transport=httpx.MockTransport(script)) as http:
        with FreshrecClient("http://ingest", api_key="k", http_client=http) as client:
            assert client.send_events([_event(1)]) == 1
        assert not http.is_closed
        assert script.requests[0].headers["Authorization"] == "Bearer k"
