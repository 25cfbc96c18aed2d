"""The ingest HTTP app over the reference sink: status codes, bodies, auth, bounds, docs."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
import httpx
import orjson
import pytest
from fastapi import FastAPI

from freshrec.api.errors import ErrorBody
from freshrec.errors import BrokerUnavailable
from freshrec.settings import CommonSettings
from freshrec.stream import Event, InMemoryEventSink, decode_event
from freshrec.stream.events import EARLIEST_TIMESTAMP_S
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.unit.services.asgi import asgi_client

pytestmark = [
    pytest.mark.anyio,
    # freshrec.api answers errors and /readyz with FastAPI's deprecated ORJSONResponse
]


def _event(i: int, user: str | float = "u-1", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e-{i}",
        "type": "click",
        "user_id": user,
        "item_id": i,
        "timestamp": time.time(),
    }
    event.update(overrides)
    return event


def _client(app: FastAPI) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    return asgi_client(app, "http://ingest")


def _settings(**overrides: Any) -> IngestSettings:
    # explicit keys: the environment running the tests must not switch authentication on
    return IngestSettings(**{"namespace": "unit", "api_keys": [], **overrides})


async def test_accepted_batch_is_202_after_the_sink_has_it() -> None:
    sink = InMemoryEventSink()
    async with _client(create_app(_settings(), sink)) as client:
        response = await client.post(
            "/v1/events", json={"events": [_event(0, "a"), _event(1, "b")]}
        )
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2}
    assert [key for key, _ in sink.messages] == [b"a", b"b"]
    assert [decode_event(v).event_id for _, v in sink.messages] == ["e-0", "e-1"]


async def test_invalid_events_are_422_naming_index_and_field_and_nothing_is_produced() -> None:
    sink = InMemoryEventSink()
    events = [_event(0), _event(1, type="bought"), _event(2), _event(3, timestamp=1e12)]
    async with _client(create_app(_settings(), sink)) as client:
        response = await client.post("/v1/events", json={"events": events})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "InvalidEvents"
    assert [(d["index"], d["field"]) for d in body["details"]] == [(1, "type"), (3, "timestamp")]
    assert all(d["reason"] for d in body["details"])
    assert sink.messages == []


async def test_body_that_is_not_json_is_422() -> None:
    async with _client(create_app(_settings(), InMemoryEventSink())) as client:
        response = await client.post(
            "/v1/events", content=b"{oops", headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "body"


async def test_oversized_body_is_413_from_content_length_and_while_reading() -> None:
    sink = InMemoryEventSink()
    settings = _settings(max_body_bytes=2048)
    big = {"events": [_event(i) for i in range(40)]}
    assert len(orjson.dumps(big)) > 2048

    async def chunks() -> AsyncIterator[bytes]:
        raw = orjson.dumps(big)
        for start in range(0, len(raw), 500):
            yield raw[start : start + 500]

    async with _client(create_app(settings, sink)) as client:
        declared = await client.post("/v1/events", json=big)
        streamed = await client.post("/v1/events", content=chunks())
        small = await client.post("/v1/events", json={"events": [_event(0)]})
    assert declared.status_code == 413
    assert declared.json()["error"] == "PayloadTooLarge"
    assert streamed.status_code == 413
    assert small.status_code == 202
    assert len(sink.messages) == 1


async def test_too_many_events_is_413() -> None:
    sink = InMemoryEventSink()
    async with _client(create_app(_settings(max_batch_events=5), sink)) as client:
        over = await client.post("/v1/events", json={"events": [_event(i) for i in range(6)]})
        at = await client.post("/v1/events", json={"events": [_event(i) for i in range(5)]})
    assert over.status_code == 413
    assert "at most 5" in over.json()["message"]
    assert at.status_code == 202
    assert len(sink.messages) == 5


async def test_api_keys_when_configured() -> None:
    sink = InMemoryEventSink()
    body = {"events": [_event(0)]}
    async with _client(create_app(_settings(api_keys="k1,k2"), sink)) as client:
        missing = await client.post("/v1/events", json=body)
        wrong = await client.post("/v1/events", json=body, headers={"Authorization": "Bearer x"})
        basic = await client.post("/v1/events", json=body, headers={"Authorization": "Basic k1"})
        right = await client.post("/v1/events", json=body, headers={"Authorization": "Bearer k2"})
        health = await client.get("/healthz")
    assert [missing.status_code, wrong.status_code, basic.status_code] == [401, 401, 401]
    assert right.status_code == 202
    assert health.status_code == 200
    assert len(sink.messages) == 1


async def test_sink_down_is_503_with_retry_after_and_not_ready() -> None:
    sink = InMemoryEventSink()
    async with _client(create_app(_settings(), sink)) as client:
        assert (await client.get("/readyz")).status_code == 200
        sink.available = False
        response = await client.post("/v1/events", json={"events": [_event(0)]})
        ready = await client.get("/readyz")
        sink.available = True
        again = await client.post("/v1/events", json={"events": [_event(0)]})
    assert response.status_code == 503
    assert response.json()["error"] == "BrokerUnavailable"
    assert int(response.headers["retry-after"]) > 0
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"kafka": False}
    assert again.status_code == 202


class _GatedSink(InMemoryEventSink):
    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = threading.Event()

    def send_batch(self, events: Sequence[Event], accepted_at: float | None = None) -> None:
        self.waiting.set()
        if not self.gate.wait(timeout=10):
            raise BrokerUnavailable("gate never opened")
        super().send_batch(events, accepted_at)


async def test_over_the_in_flight_bound_is_429_with_retry_after() -> None:
    sink = _GatedSink()
    statuses: list[int] = []
    async with _client(create_app(_settings(max_in_flight_batches=1), sink)) as client:

        async def first() -> None:
            response = await client.post("/v1/events", json={"events": [_event(0)]})
            statuses.append(response.status_code)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(first)
            with anyio.fail_after(5):
                while not sink.waiting.is_set():
                    await anyio.sleep(0.01)
            second = await client.post("/v1/events", json={"events": [_event(1)]})
            sink.gate.set()
    assert second.status_code == 429
    assert int(second.headers["retry-after"]) > 0
    assert statuses == [202]
    assert [decode_event(v).event_id for _, v in sink.messages] == ["e-0"]


async def test_lifespan_closes_the_sink() -> None:
    sink = InMemoryEventSink()
    async with _client(create_app(_settings(), sink)):
        assert sink.ready()
    assert not sink.ready()


async def test_openapi_documents_the_request_body_and_answers() -> None:
    async with _client(create_app(_settings(), InMemoryEventSink())) as client:
        spec = (await client.get("/openapi.json")).json()
        metrics = (await client.get("/metrics")).text
    operation = spec["paths"]["/v1/events"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    event = schema["properties"]["events"]["items"]
    assert set(event["required"]) == {"event_id", "type", "user_id", "item_id", "timestamp"}
    assert "rating" in event["properties"]["type"]["enum"]
    assert "$ref" not in orjson.dumps(schema).decode()
    assert {"202", "401", "413", "422", "429", "503"} <= set(operation["responses"])
    assert "freshrec_ingest_events_accepted_total" in metrics


def test_settings_come_from_freshrec_environment_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRESHREC_INGEST_PORT", "9123")
    monkeypatch.setenv("FRESHREC_MAX_BATCH_EVENTS", "7")
    monkeypatch.setenv("FRESHREC_NAMESPACE", "envtest")
    settings = IngestSettings()
    assert settings.ingest_port == 9123
    assert settings.max_batch_events == 7
    assert settings.events_topic == "envtest.events"
    own = set(IngestSettings.model_fields) - set(CommonSettings.model_fields)
    assert {"ingest_host", "ingest_port", "max_body_bytes", "produce_timeout_s"} <= own
    assert all(IngestSettings.model_fields[name].description for name in own)


# ------------------------------------------------------------- the OpenAPI contract


async def test_the_document_states_the_bounds_validation_checks() -> None:
    settings = _settings(max_batch_events=5, future_tolerance_s=60)
    async with _client(create_app(settings, InMemoryEventSink())) as client:
        before = time.time()
        spec = (await client.get("/openapi.json")).json()
        after = time.time()
        events = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]["properties"]["events"]
        timestamp = events["items"]["properties"]["timestamp"]
        at_maximum = await client.post(
            "/v1/events", json={"events": [_event(0, timestamp=timestamp["maximum"])]}
        )
        at_minimum = await client.post(
            "/v1/events", json={"events": [_event(1, timestamp=timestamp["minimum"])]}
        )
        below = await client.post(
            "/v1/events", json={"events": [_event(2, timestamp=timestamp["minimum"] - 1)]}
        )
        far_above = await client.post(
            "/v1/events", json={"events": [_event(3, timestamp=timestamp["maximum"] + 3600)]}
        )
    assert events["maxItems"] == 5 and events["minItems"] == 1
    assert before + 60 <= timestamp["maximum"] <= after + 60  # as of the document's serving
    assert timestamp["minimum"] == EARLIEST_TIMESTAMP_S
    assert at_maximum.status_code == 202 and at_minimum.status_code == 202
    assert below.status_code == 422 and far_above.status_code == 422


async def test_the_document_follows_the_clock() -> None:
    async with _client(create_app(_settings(), InMemoryEventSink())) as client:
        first = (await client.get("/openapi.json")).json()
        await anyio.sleep(0.05)
        second = (await client.get("/openapi.json")).json()

    def latest(spec: dict[str, Any]) -> float:
        body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
        event = body["schema"]["properties"]["events"]["items"]
        return float(event["properties"]["timestamp"]["maximum"])

    assert latest(second) > latest(first)
    assert {k: v for k, v in first.items() if k != "paths"} == {
        k: v for k, v in second.items() if k != "paths"
    }


async def test_the_document_declares_every_answer_with_the_error_body() -> None:
    async with _client(create_app(_settings(api_keys="k1"), InMemoryEventSink())) as client:
        spec = (await client.get("/openapi.json")).json()
        unauthorized = await client.post("/v1/events", json={"events": [_event(0)]})
    operation = spec["paths"]["/v1/events"]["post"]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    assert {"202", "401", "408", "413", "422", "429", "503"} == set(operation["responses"])
    for status, answer in operation["responses"].items():
        if status != "202":
            assert answer["content"]["application/json"]["schema"] == error_ref, status
    for status in ("429", "503"):
        assert operation["responses"][status]["headers"]["Retry-After"]["required"] is True
    assert operation["security"] == [{"apiKey": []}]
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    ErrorBody.model_validate(unauthorized.json())
    async with _client(create_app(_settings(), InMemoryEventSink())) as client:
        open_spec = (await client.get("/openapi.json")).json()
    assert "security" not in open_spec["paths"]["/v1/events"]["post"]


async def test_errors_keep_freshrecs_shape_whatever_the_body() -> None:
    async with _client(create_app(_settings(), InMemoryEventSink())) as client:
        undecodable = await client.post(
            "/v1/events", content=b"\xff\xfe{", headers={"content-type": "application/json"}
        )
        duplicate = await client.post("/v1/events", json={"events": [_event(0), _event(0)]})
        unknown = await client.post("/v1/event", json={"events": [_event(0)]})
        wrong_method = await client.get("/v1/events")
    assert undecodable.status_code == 422
    assert undecodable.json()["details"][0]["type"] == "json_invalid"
    assert duplicate.status_code == 422
    assert duplicate.json()["details"][0]["type"] == "duplicate_event_id"
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    for answer in (undecodable, duplicate, unknown, wrong_method):
        ErrorBody.model_validate(answer.json())


async def test_a_whole_float_id_is_accepted_as_the_integer() -> None:
    sink = InMemoryEventSink()
    async with _client(create_app(_settings(), sink)) as client:
        response = await client.post("/v1/events", json={"events": [_event(0, user=42.0)]})
    assert response.status_code == 202, response.text
    key, value = sink.messages[0]
    assert key == b"42" and decode_event(value).user_id == 42
