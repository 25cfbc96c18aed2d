"""The replay client against a small in-process ingest app (no network, no real waiting)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import orjson
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr, ValidationError

from freshrec.api import api_key_guard
from freshrec.errors import (
    DependencyUnavailable,
    FreshrecError,
    InvalidInput,
    PayloadTooLarge,
    Unauthorized,
)
from freshrec.offline.data import ReplayAborted, events_url, read_event_file, replay

T0 = 1_700_000_000.0
"""Event times of the test events: valid ones, since the client validates before posting."""


class Event(BaseModel):
    event_id: str
    type: Literal["impression", "click", "like", "rating", "purchase", "view", "skip"]
    user_id: str | int
    item_id: str | int
    request_id: str | None = None
    timestamp: float
    value: float | None = None
    context: dict[str, str | int | float] | None = None


class ASGIClient(httpx.Client):
    """A synchronous httpx client whose requests go straight into an ASGI app, in process.

    (Starlette's TestClient is moving off httpx; the replay client is an `httpx.Client`.)
    """

    def __init__(self, app: FastAPI) -> None:
        super().__init__(transport=_SyncASGITransport(app), base_url="http://testserver")


class _SyncASGITransport(httpx.BaseTransport):
    def __init__(self, app: FastAPI) -> None:
        self._asgi = httpx.ASGITransport(app=app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return anyio.run(call)


@dataclass
class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Ingest:
    """What the test app received, and the failures it is told to answer with first."""

    clock: FakeClock = field(default_factory=FakeClock)
    received: list[tuple[float, list[str]]] = field(default_factory=list)
    fail_next: list[Exception] = field(default_factory=list)
    max_batch: int = 1000

    @property
    def ids(self) -> list[str]:
        return [i for _, batch in self.received for i in batch]


def make_app(state: Ingest, keys: list[str] | None = None) -> FastAPI:
    """The ingest API's contract in miniature: all-or-nothing 422 naming each bad event."""
    app = FastAPI()
    guard = api_key_guard([SecretStr(k) for k in keys or []])

    @app.exception_handler(FreshrecError)
    async def _error(_: Request, exc: FreshrecError) -> JSONResponse:
        headers = {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(
            {"error": type(exc).__name__, "message": exc.message},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.post("/v1/events", status_code=202, dependencies=[Depends(guard)])
    async def events(request: Request) -> JSONResponse:
        if state.fail_next:
            raise state.fail_next.pop(0)
        items = (await request.json())["events"]
        if len(items) > state.max_batch:
            raise PayloadTooLarge(f"at most {state.max_batch} events per batch")
        details = []
        for index, item in enumerate(items):
            try:
                Event.model_validate(item)
            except ValidationError as exc:
                details += [
                    {"index": index, "field": ".".join(map(str, e["loc"])), "reason": e["msg"]}
                    for e in exc.errors()
                ]
        if details:
            return JSONResponse(
                {"error": "InvalidEvents", "message": "none was accepted", "details": details},
                status_code=422,
            )
        state.received.append((state.clock(), [item["event_id"] for item in items]))
        return JSONResponse({"accepted": len(items)}, status_code=202)

    return app


def ev(i: int, ts: float = T0, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e{i}",
        "type": "click",
        "user_id": f"u{i % 3}",
        "item_id": i,
        "request_id": None,
        "timestamp": ts,
        "value": None,
        "context": {"position": 1},
    }
    event.update(overrides)
    return event


@pytest.fixture
def ingest() -> Iterator[tuple[Ingest, ASGIClient]]:
    state = Ingest()
    with ASGIClient(make_app(state)) as client:
        yield state, client


URL = "http://testserver"


def run(
    client: httpx.Client, state: Ingest, events: Iterable[dict[str, Any]], **kwargs: Any
) -> Any:
    kwargs.setdefault("progress", False)
    return replay(events, URL, client=client, clock=state.clock, sleep=state.clock.sleep, **kwargs)


def test_sends_everything_in_order_in_batches(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    events = [ev(i) for i in range(23)]
    report = run(client, state, events, batch_size=10)
    assert state.ids == [f"e{i}" for i in range(23)]
    assert [len(b) for _, b in state.received] == [10, 10, 3]
    assert (report.read, report.sent, report.accepted, report.rejected) == (23, 23, 23, 0)
    assert report.batches == 3 and report.retries == 0
    assert state.clock.sleeps == []  # unpaced: never waits


def test_limit_stops_early(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    report = run(client, state, [ev(i) for i in range(50)], limit=7)
    assert state.ids == [f"e{i}" for i in range(7)]
    assert report.read == 7


def test_retries_503_honouring_retry_after(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    state.fail_next = [DependencyUnavailable("broker down"), DependencyUnavailable("still down")]
    report = run(client, state, [ev(i) for i in range(5)])
    assert state.ids == [f"e{i}" for i in range(5)]  # delivered once, after two refusals
    assert report.retries == 2 and report.sent == 5
    # DependencyUnavailable answers with Retry-After: 2
    assert state.clock.sleeps == [2.0, 2.0]


def test_retries_429_and_connection_errors() -> None:
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if len(attempts) == 2:
            return httpx.Response(429, json={"message": "busy"})  # no Retry-After: backoff
        return httpx.Response(202, json={"accepted": 2})

    clock = FakeClock()
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        report = replay(
            [ev(0), ev(1)],
            URL,
            client=client,
            progress=False,
            clock=clock,
            sleep=clock.sleep,
        )
    assert len(attempts) == 3 and report.retries == 2 and report.sent == 2
    assert all(0.0 < s <= 10.0 for s in clock.sleeps)


def test_gives_up_loudly_when_the_server_stays_down(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    state.fail_next = [DependencyUnavailable("down") for _ in range(100)]
    events = [ev(i) for i in range(12)]
    with pytest.raises(ReplayAborted, match="kept failing") as info:
        run(client, state, events, batch_size=5, max_retry_s=7.0)
    report = info.value.report
    assert report.sent == 0 and report.unsent == 5 and report.read == 5
    assert sum(state.clock.sleeps) >= 7.0
    assert "NOT SENT 5" in str(info.value)


def test_422_rejects_named_events_and_sends_the_rest(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    events = [ev(i) for i in range(6)]
    events[1]["type"] = "bogus"
    del events[4]["timestamp"]
    report = run(client, state, events, batch_size=6)
    assert state.ids == ["e0", "e2", "e3", "e5"]  # each valid event exactly once
    assert report.rejected == 2 and report.sent == 4 and report.read == 6
    by_id = {r.event_id: r for r in report.rejections}
    assert by_id["e1"].index == 1 and by_id["e1"].field == "type"
    assert by_id["e4"].index == 4 and by_id["e4"].field == "timestamp"
    assert by_id["e1"].reason and by_id["e4"].reason


def test_422_in_the_schema_error_shape() -> None:
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ids = [e["event_id"] for e in orjson.loads(request.content)["events"]]
        if "e1" in ids:
            details = [{"field": "events.1.user_id", "reason": "Field required", "type": "missing"}]
            return httpx.Response(422, json={"message": "invalid", "details": details})
        sent.append(ids)
        return httpx.Response(202, json={"accepted": len(ids)})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        report = replay([ev(0), ev(1), ev(2)], URL, client=client, progress=False)
    assert sent == [["e0", "e2"]]
    assert report.rejections[0].event_id == "e1"
    assert report.rejections[0].field == "user_id"
    assert report.rejections[0].reason == "Field required"


def test_422_without_event_details_rejects_the_batch() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"error": "InvalidInput", "message": "bad batch"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        report = replay([ev(0), ev(1)], URL, client=client, progress=False)
    assert report.rejected == 2 and report.sent == 0
    # the client's error names the request the server refused
    assert [r.reason for r in report.rejections] == ["POST /v1/events: bad batch"] * 2


def test_413_splits_the_batch(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    state.max_batch = 3
    report = run(client, state, [ev(i) for i in range(10)], batch_size=10)
    assert state.ids == [f"e{i}" for i in range(10)]
    assert all(len(b) <= 3 for _, b in state.received)
    assert report.sent == 10 and report.rejected == 0


def test_api_key_is_sent_and_a_wrong_one_stops_the_replay() -> None:
    state = Ingest()
    with ASGIClient(make_app(state, keys=["s3cret"])) as client:
        report = run(client, state, [ev(0)], api_key="s3cret")
        assert report.sent == 1
        with pytest.raises(Unauthorized, match="API key"):
            run(client, state, [ev(1)], api_key="wrong")
        with pytest.raises(Unauthorized):
            run(client, state, [ev(2)])
    assert state.ids == ["e0"]


def test_paces_by_event_time_with_speedup(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    times = [T0, T0 + 10.0, T0 + 10.0, T0 + 20.0, T0 + 40.0]
    events = [ev(i, ts) for i, ts in enumerate(times)]
    report = run(client, state, events, speedup=10.0)
    # each batch leaves when its events are due: (t - t0) / speedup after the start
    assert state.received == [
        (0.0, ["e0"]),
        (1.0, ["e1", "e2"]),
        (2.0, ["e3"]),
        (4.0, ["e4"]),
    ]
    assert report.elapsed_s == pytest.approx(4.0)
    assert report.max_behind_s == 0.0
    assert (report.first_event_time, report.last_event_time) == (T0, T0 + 40.0)


def test_pacing_catches_up_after_a_stall(ingest: tuple[Ingest, ASGIClient]) -> None:
    state, client = ingest
    # the first batch is refused once with Retry-After 2 s, so the replay falls behind
    state.fail_next = [DependencyUnavailable("hiccup")]
    events = [ev(i, T0 + i) for i in range(4)]
    report = run(client, state, events, speedup=1.0)
    assert [t for t, _ in state.received] == [2.0, 2.0, 3.0]
    assert state.ids == ["e0", "e1", "e2", "e3"]
    assert report.max_behind_s == pytest.approx(1.0)


def test_pacing_really_waits_on_the_real_clock() -> None:
    received: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(time.monotonic())
        return httpx.Response(202, json={"accepted": len(orjson.loads(request.content)["events"])})

    events = [ev(i, T0 + 10.0 * i) for i in range(6)]  # 50 s of event time
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        start = time.monotonic()
        report = replay(events, URL, client=client, speedup=100.0, progress=False)
    assert report.sent == 6 and len(received) == 6
    for i, at in enumerate(received):
        assert at - start >= i * 0.1 - 1e-3  # never early
    assert report.elapsed_s >= 0.5 - 1e-3


def test_progress_line_and_extra_columns(
    ingest: tuple[Ingest, ASGIClient], capsys: pytest.CaptureFixture[str]
) -> None:
    state, client = ingest
    calls: list[int] = []

    def extra() -> dict[str, str]:
        calls.append(1)
        return {"trainer lag": "0.4 s"}

    report = run(client, state, [ev(i) for i in range(30)], progress=True, extra_columns=extra)
    assert report.sent == 30
    assert calls  # at least the final refresh
    err = capsys.readouterr().err
    assert "30 events" in err and "trainer lag: 0.4 s" in err


def test_a_broken_progress_callback_does_not_stop_the_replay(
    ingest: tuple[Ingest, ASGIClient],
) -> None:
    state, client = ingest

    def extra() -> dict[str, str]:
        raise RuntimeError("metrics endpoint down")

    report = run(client, state, [ev(i) for i in range(3)], progress=True, extra_columns=extra)
    assert report.sent == 3


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="batch_size"):
        replay([], URL, batch_size=1001)
    with pytest.raises(InvalidInput, match="speedup"):
        replay([], URL, speedup=0.0)
    with pytest.raises(InvalidInput, match="not an http"):
        replay([], "127.0.0.1:8001")


def test_events_url() -> None:
    assert events_url("http://h:8001") == "http://h:8001/v1/events"
    assert events_url("http://h:8001/") == "http://h:8001/v1/events"
    assert events_url("https://h/v1/events") == "https://h/v1/events"


def test_read_event_file_plain_gz_and_errors(tmp_path: Path) -> None:
    lines = [orjson.dumps(ev(i)) for i in range(3)]
    plain = tmp_path / "e.jsonl"
    plain.write_bytes(b"\n".join([lines[0], b"", lines[1], lines[2]]) + b"\n")
    assert [e["event_id"] for e in read_event_file(plain)] == ["e0", "e1", "e2"]
    packed = tmp_path / "e.jsonl.gz"
    packed.write_bytes(gzip.compress(b"\n".join(lines)))
    assert list(read_event_file(packed)) == list(read_event_file(plain))
    broken = tmp_path / "bad.jsonl"
    broken.write_bytes(lines[0] + b"\n{not json\n")
    with pytest.raises(InvalidInput, match="line 2"):
        list(read_event_file(broken))
    array = tmp_path / "array.jsonl"
    array.write_bytes(b"[1, 2]\n")
    with pytest.raises(InvalidInput, match="line 1: expected a JSON object"):
        list(read_event_file(array))


def test_a_bad_record_in_the_source_stops_after_sending_what_came_before(
    ingest: tuple[Ingest, ASGIClient],
) -> None:
    state, client = ingest

    def source() -> Iterator[dict[str, Any]]:
        yield from (ev(i) for i in range(3))
        raise InvalidInput("events.jsonl line 4: not JSON")

    with pytest.raises(InvalidInput, match="line 4"):
        run(client, state, source(), batch_size=100)
    assert state.ids == ["e0", "e1", "e2"]
