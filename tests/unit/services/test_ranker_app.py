"""The ranker HTTP app over in-memory tables: answers, fallbacks, bounds, errors, health."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from freshrec.api.errors import ErrorBody
from freshrec.table import Tables, hash_features, load_tables
from services.ranker.app import create_app
from services.ranker.settings import RankerSettings
from tests.unit.ranking.catalog import T0, seeded_tables
from tests.unit.services.asgi import asgi_client

pytestmark = pytest.mark.anyio

ITEMS = [f"i{j}" for j in range(50)]
USERS = [f"u{j}" for j in range(5)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(**overrides: Any) -> RankerSettings:
    # explicit keys and an unused trainer port: the test's environment must not leak in
    closed = f"redis://127.0.0.1:{_free_port()}/0"
    defaults: dict[str, Any] = {
        "namespace": "unit",
        "api_keys": [],
        "redis_url": closed,
        "trainer_url": f"http://127.0.0.1:{_free_port()}",
        "sync_interval_s": 0.05,
    }
    return RankerSettings(**{**defaults, **overrides})


def _tables() -> Tables:
    return seeded_tables(ITEMS, USERS, seed=5)


@pytest.fixture
async def ranker() -> AsyncIterator[httpx.AsyncClient]:
    settings = _settings(max_k=20)
    async with asgi_client(create_app(settings, _tables()), "http://ranker") as client:
        yield client


async def test_a_known_user_gets_k_items_best_first(ranker: httpx.AsyncClient) -> None:
    response = await ranker.post("/v1/recommend", json={"user_id": "u1", "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fallback"] is False
    assert body["model_version"] is None  # nothing published: retrieval scores
    assert body["index_version"] >= 1
    # the reply says what its scores are
    assert body["scoring"] == "log P(interact) + like_weight * log P(like | interact)"
    assert body["like_weight"] == 1.0
    items = body["items"]
    assert len(items) == 5 and {i["item_id"] for i in items} <= set(ITEMS)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    excluded = await ranker.post(
        "/v1/recommend",
        json={"user_id": "u1", "k": 5, "exclude_item_ids": [items[0]["item_id"]]},
    )
    assert items[0]["item_id"] not in {i["item_id"] for i in excluded.json()["items"]}


async def test_the_like_weight_knob_is_reported() -> None:
    settings = _settings(like_weight=0.0)
    async with asgi_client(create_app(settings, _tables()), "http://ranker") as client:
        response = await client.post("/v1/recommend", json={"user_id": "u1", "k": 3})
    assert response.status_code == 200, response.text
    assert response.json()["like_weight"] == 0.0


async def test_an_unknown_user_is_answered_from_the_fallbacks(ranker: httpx.AsyncClient) -> None:
    response = await ranker.post("/v1/recommend", json={"user_id": "nobody", "k": 5})
    assert response.status_code == 200, response.text
    assert response.json()["fallback"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "k": 21}, "k"),
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "", "k": 5}, "user_id"),
        ({"user_id": "u1", "exclude_item_ids": list(range(1001))}, "exclude_item_ids"),
        ({"user_id": "u1", "exclude_item_ids": [False]}, "exclude_item_ids"),
    ],
)
async def test_bad_requests_are_422_naming_the_field(
    ranker: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await ranker.post("/v1/recommend", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "InvalidInput"
    assert field in {d["field"].split(".")[0] for d in response.json()["details"]}


async def test_requests_beyond_the_bound_are_429_with_retry_after() -> None:
    settings = _settings(max_batch=1, max_queue=0)
    async with asgi_client(create_app(settings, _tables()), "http://ranker") as client:
        answers = await asyncio.gather(
            *(client.post("/v1/recommend", json={"user_id": "u1", "k": 3}) for _ in range(20))
        )
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}, statuses
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"] == "Overloaded"
    assert "bound 1 + 0" in refused.json()["message"]
    assert refused.headers["Retry-After"] == "1"


async def test_redis_down_is_503_and_not_ready() -> None:
    # no prepared tables: the runtime opens Redis at a port nothing listens on
    async with asgi_client(create_app(_settings()), "http://ranker") as client:
        response = await client.post("/v1/recommend", json={"user_id": "u1", "k": 3})
        ready = await client.get("/readyz")
        row = await client.get("/v1/tables/item/rows/i1")
        alive = await client.get("/healthz")
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "StoreUnavailable"
    assert response.headers["Retry-After"] == "2"
    assert row.status_code == 503
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"redis": False, "index": False}
    assert alive.status_code == 200


async def test_a_row_reads_with_its_times_and_count(ranker: httpx.AsyncClient) -> None:
    response = await ranker.get("/v1/tables/item/rows/i3")
    assert response.status_code == 200, response.text
    row = response.json()
    assert row["table"] == "item" and row["id"] == str(int(hash_features("item", ["i3"])[0]))
    assert len(row["vector"]) == load_tables(_settings().table_config)["item"].dim
    assert row["count"] == 3 and row["event_time"] == T0
    assert 0.0 <= row["age_s"] < 60.0
    assert row["age_s"] == pytest.approx(time.time() - row["wall_time"], abs=5.0)


async def test_an_unknown_table_or_row_is_404(ranker: httpx.AsyncClient) -> None:
    table = await ranker.get("/v1/tables/nope/rows/i3")
    assert table.status_code == 404 and "no table 'nope'" in table.json()["message"]
    row = await ranker.get("/v1/tables/item/rows/never-seen")
    assert row.status_code == 404 and "no row for 'never-seen'" in row.json()["message"]


async def test_health_readiness_and_overview_on_memory_tables(
    ranker: httpx.AsyncClient,
) -> None:
    assert (await ranker.get("/healthz")).json() == {"status": "ok"}
    ready = await ranker.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "checks": {"index": True}}
    overview = await ranker.get("/v1/overview")
    assert overview.status_code == 200, overview.text
    body = overview.json()
    assert body["index"]["items"] == len(ITEMS) and body["index"]["following"] is True
    assert body["tables"]["user"]["rows"] == len(USERS)
    assert body["trainer"]["reachable"] is False


# ------------------------------------------------------------- the OpenAPI contract


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "0" * 129}, "user_id"),  # too long a string is not the number 0
        ({"user_id": "u1", "k": "5"}, "k"),
        ({"user_id": "u1", "k": True}, "k"),
        ({"user_id": "u1", "k": 5.5}, "k"),
        ({"user_id": True}, "user_id"),
        ({"user_id": 2.0**60}, "user_id"),  # beyond 2**53 a float does not spell one integer
        ({"user_id": "u1", "exclude_item_ids": [True]}, "exclude_item_ids"),
        ({"user_id": "u1", "exclude_item_ids": ["7" * 257]}, "exclude_item_ids"),
    ],
)
async def test_no_coercion_into_ids_or_k(
    ranker: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await ranker.post("/v1/recommend", json=body)
    assert response.status_code == 422, response.text
    assert field in {d["field"].split(".")[0] for d in response.json()["details"]}


async def test_a_whole_float_is_the_integer_it_spells(ranker: httpx.AsyncClient) -> None:
    # JSON Schema's `integer` admits 5.0: the document says integer, so the server takes it
    k_float = await ranker.post("/v1/recommend", json={"user_id": "u1", "k": 5.0})
    ids_float = await ranker.post("/v1/recommend", json={"user_id": 3.0, "exclude_item_ids": [7.0]})
    ids_int = await ranker.post("/v1/recommend", json={"user_id": 3, "exclude_item_ids": [7]})
    assert k_float.status_code == 200, k_float.text
    assert len(k_float.json()["items"]) == 5
    assert ids_float.status_code == 200, ids_float.text
    assert ids_float.json() == ids_int.json()


async def test_errors_of_the_framework_answer_in_freshrecs_shape(
    ranker: httpx.AsyncClient,
) -> None:
    undecodable = await ranker.post(
        "/v1/recommend", content=b"\xff\xfe{", headers={"content-type": "application/json"}
    )
    not_json = await ranker.post(
        "/v1/recommend", content=b"{oops", headers={"content-type": "application/json"}
    )
    unknown = await ranker.get("/v1/nothing-here")
    wrong_method = await ranker.delete("/v1/recommend")
    assert undecodable.status_code == 400
    assert undecodable.json()["error"] == "BadRequest"
    assert not_json.status_code == 422 and not_json.json()["error"] == "InvalidInput"
    assert unknown.status_code == 404 and unknown.json()["error"] == "NotFound"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "MethodNotAllowed"
    assert wrong_method.headers["allow"] == "POST"
    for answer in (undecodable, not_json, unknown, wrong_method):
        ErrorBody.model_validate(answer.json())


async def test_the_document_declares_every_answer_with_the_error_body() -> None:
    settings = _settings(max_k=20, max_exclude=50, api_keys="k1")
    async with asgi_client(create_app(settings, _tables()), "http://ranker") as client:
        spec = (await client.get("/openapi.json")).json()
        unknown = await client.get("/v1/tables/nope/rows/x", headers={"Authorization": "Bearer k1"})
    recommend = spec["paths"]["/v1/recommend"]["post"]
    row = spec["paths"]["/v1/tables/{table}/rows/{row_id}"]["get"]
    assert {"200", "400", "408", "413", "422", "429", "503"} <= set(recommend["responses"])
    assert "401" not in recommend["responses"] and "security" not in recommend  # key optional
    assert {"200", "401", "404", "422", "503"} <= set(row["responses"])
    assert row["security"] == [{"apiKey": []}]
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for operation in (recommend, row):
        for status, answer in operation["responses"].items():
            if status != "200":
                assert answer["content"]["application/json"]["schema"] == error_ref, status
    for status in ("429", "503"):
        assert recommend["responses"][status]["headers"]["Retry-After"]["required"] is True
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert unknown.status_code == 404
    ErrorBody.model_validate(unknown.json())


async def test_the_document_states_the_bounds_that_are_settings() -> None:
    settings = _settings(max_k=20, max_exclude=50)
    async with asgi_client(create_app(settings, _tables()), "http://ranker") as client:
        spec = (await client.get("/openapi.json")).json()
        at_bound = await client.post("/v1/recommend", json={"user_id": "u1", "k": 20})
        over = await client.post("/v1/recommend", json={"user_id": "u1", "k": 21})
    request = spec["components"]["schemas"]["RecommendRequest"]
    assert request["additionalProperties"] is False
    assert (request["properties"]["k"]["minimum"], request["properties"]["k"]["maximum"]) == (
        1,
        20,
    )
    assert request["properties"]["exclude_item_ids"]["maxItems"] == 50
    user_id = request["properties"]["user_id"]["anyOf"]
    assert {"type": "integer", "minimum": 0} in user_id
    assert at_bound.status_code == 200 and over.status_code == 422
    assert "security" not in spec["paths"]["/v1/tables/{table}/rows/{row_id}"]["get"]
