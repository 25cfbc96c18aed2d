"""`freshrec data ...` end to end: synth to a file, replay it into a real local HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from freshrec.offline.data import read_event_file
from services.cli.data import data_app
from tests.waiting import wait_until

runner = CliRunner()


@pytest.fixture
def ingest_url() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A tiny ingest on 127.0.0.1 that refuses events of type 'bogus' (all or nothing)."""
    received: list[dict[str, object]] = []
    app = FastAPI()

    @app.post("/v1/events")
    async def events(request: Request) -> JSONResponse:
        items = (await request.json())["events"]
        bad = [
            {"index": i, "field": "type", "reason": "unknown event type"}
            for i, e in enumerate(items)
            if e["type"] == "bogus"
        ]
        if bad:
            return JSONResponse({"message": "invalid events", "details": bad}, status_code=422)
        if request.headers.get("authorization") != "Bearer k1":
            return JSONResponse({"message": "wrong API key"}, status_code=401)
        received.extend(items)
        return JSONResponse({"accepted": len(items)}, status_code=202)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10.0, "the test server to start", interval_s=0.01)
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_synth_writes_the_same_stream_for_the_same_seed(tmp_path: Path) -> None:
    args = ["synth", "--n", "500", "--seed", "4", "--users", "1000", "--items", "300"]
    first = runner.invoke(data_app, [*args, "--out", str(tmp_path / "a.jsonl")])
    assert first.exit_code == 0, first.output
    assert "wrote 500 events" in first.output
    again = runner.invoke(data_app, [*args, "--out", str(tmp_path / "b.jsonl.gz")])
    assert again.exit_code == 0, again.output
    events = list(read_event_file(tmp_path / "a.jsonl"))
    assert len(events) == 500
    assert list(read_event_file(tmp_path / "b.jsonl.gz")) == events
    assert all(int(e["user_id"][1:]) < 1000 for e in events)


def test_replay_a_file(tmp_path: Path, ingest_url: tuple[str, list[dict[str, object]]]) -> None:
    url, received = ingest_url
    path = tmp_path / "e.jsonl"
    assert runner.invoke(data_app, ["synth", "--n", "120", "--out", str(path)]).exit_code == 0
    result = runner.invoke(
        data_app,
        ["replay", str(path), "--url", url, "--batch-size", "50", "--no-progress"],
        env={"FRESHREC_API_KEY": "k1"},
    )
    assert result.exit_code == 0, result.output
    assert "sent 120" in result.output
    assert [e["event_id"] for e in received] == [e["event_id"] for e in read_event_file(path)]


def test_replay_reports_rejects_and_fails(
    tmp_path: Path, ingest_url: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = ingest_url
    events = list(read_event_file_from_synth(tmp_path, 10))
    events[3]["type"] = "bogus"
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    result = runner.invoke(
        data_app, ["replay", str(path), "--url", url, "--api-key", "k1", "--no-progress"]
    )
    assert result.exit_code == 1
    # the client refuses it before posting, with the reason ingest itself would give
    assert f"rejected #3 {events[3]['event_id']} type: Input should be 'impression'" in (
        result.output
    )
    assert "rejected 1" in result.output
    assert len(received) == 9


def test_replay_with_a_wrong_key_stops(
    tmp_path: Path, ingest_url: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = ingest_url
    read_event_file_from_synth(tmp_path, 5)
    result = runner.invoke(
        data_app,
        ["replay", str(tmp_path / "s.jsonl"), "--url", url, "--api-key", "nope", "--no-progress"],
    )
    assert result.exit_code == 2
    assert "wrong API key" in result.output
    assert received == []


def test_replay_needs_exactly_one_source(tmp_path: Path) -> None:
    none = runner.invoke(data_app, ["replay", "--no-progress"])
    assert none.exit_code == 2 and "exactly one" in none.output
    path = tmp_path / "e.jsonl"
    path.write_text("")
    both = runner.invoke(data_app, ["replay", str(path), "--synthetic", "5"])
    assert both.exit_code == 2 and "exactly one" in both.output


def read_event_file_from_synth(tmp_path: Path, n: int) -> list[dict[str, object]]:
    path = tmp_path / "s.jsonl"
    assert runner.invoke(data_app, ["synth", "--n", str(n), "--out", str(path)]).exit_code == 0
    return list(read_event_file(path))
