"""A producer that is not Python: Kafka's own console producer writes events the trainer trains.

`docs/specs/events.md` says what a message on the events topic must hold (key: the user id;
value: the event's JSON with `"v": 1` and `accepted_at`). This test writes such messages with
`kafka.tools.ConsoleProducer` from the same Apache Kafka jars the local broker runs from,
plus one line that is not JSON, straight to the running stack's topic. The trainer must train
every event once (row occurrence counts) and park the poison line on the dead-letter topic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import redis

from freshrec.models import entity_row_ids
from freshrec.settings import default_table_config_path
from freshrec.table import RedisTableBackend, load_tables, open_tables
from tests.e2e.conftest import Stack
from tests.e2e.streams import consumed
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
USERS = 5
EVENTS = 40


def _kafka_libs() -> Path:
    version = re.search(
        r"<kafka.version>(.*)</kafka.version>", (ROOT / "deploy" / "local" / "pom.xml").read_text()
    )
    assert version is not None
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "freshrec"
    cache = Path(os.environ.get("FRESHREC_CACHE_DIR", home))
    libs = cache / f"kafka-{version.group(1)}" / "libs"
    assert libs.is_dir(), f"no Kafka jars in {libs}: `make install` fetches them"
    return libs


def _line(k: int) -> str:
    user = f"console-u{k % USERS}"
    value = {
        "v": 1, "event_id": f"console-{k}", "type": "rating", "user_id": user,
        "item_id": f"i{k % 9}", "request_id": None, "timestamp": time.time(), "value": 4.0,
        "context": {"device": "cli"}, "accepted_at": time.time(),
    }  # fmt: skip
    return f"{user}|{json.dumps(value)}"


def _dead_letters(stack: Stack) -> float:
    text = httpx.get(f"{stack.trainer}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("freshrec_trainer_dead_letters_total{")
    )


def test_events_from_kafkas_console_producer_are_trained(running_stack: Stack) -> None:
    stack = running_stack
    topic = f"{stack.namespace}.events"
    lines = [_line(k) for k in range(EVENTS)] + ["console-u0|this is not JSON"]
    proc = subprocess.run(
        ["java", "-cp", f"{_kafka_libs()}/*", "kafka.tools.ConsoleProducer",
         "--bootstrap-server", stack.env["FRESHREC_KAFKA_BOOTSTRAP"], "--topic", topic,
         "--property", "parse.key=true", "--property", "key.separator=|",
         "--producer-property", "acks=all"],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]

    wait_until(lambda: consumed(stack) >= len(lines), 60, f"{len(lines)} messages consumed")
    wait_until(lambda: _dead_letters(stack) >= 1, 30, "the poison line dead-lettered")
    client = redis.Redis.from_url(stack.env["FRESHREC_REDIS_URL"])
    try:
        tables = open_tables(
            load_tables(default_table_config_path()), RedisTableBackend(client, stack.namespace)
        )
        users = [f"console-u{n}" for n in range(USERS)]
        rows = tables.user.read_rows(entity_row_ids("user", users))
        assert sorted(rows.count.tolist()) == [EVENTS // USERS] * USERS
    finally:
        client.close()
