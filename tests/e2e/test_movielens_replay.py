"""A slice of MovieLens replayed through ingest moves every kind of metric an operator watches."""

from __future__ import annotations

import re
from itertools import islice

import httpx

from freshrec.offline.data import replay
from freshrec.offline.data.movielens import load_movielens, movielens_events
from tests.e2e.conftest import Stack
from tests.waiting import wait_until

SLICE = 3000


def _value(text: str, pattern: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if re.match(pattern, line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_movielens_slice_moves_the_metrics(running_stack: Stack) -> None:
    stack = running_stack
    ml = load_movielens()
    report = replay(
        islice(movielens_events(ml), SLICE),
        stack.ingest,
        api_key=stack.api_key,
        progress=False,
    )
    assert report.sent == SLICE and report.rejected == 0

    def trained() -> str:
        text = httpx.get(f"{stack.trainer}/metrics", timeout=5).text
        # every rating is one example whose freshness is observed after its batch commits
        done = (
            _value(text, r"^freshrec_trainer_events_consumed_total ") >= SLICE
            and _value(text, r"^freshrec_freshness_event_to_row_seconds_count ") >= SLICE
        )
        return text if done else ""

    trainer = wait_until(trained, 60.0, f"{SLICE} events trained", interval_s=0.2)
    assert _value(trainer, r"^freshrec_trainer_events_consumed_total ") >= SLICE
    assert _value(trainer, r"^freshrec_trainer_batches_total ") > 0
    assert _value(trainer, r"^freshrec_freshness_event_to_row_seconds_count ") >= SLICE
    assert _value(trainer, r'^freshrec_table_rows_created_total\{table="user"\}') > 0
    ingest = httpx.get(f"{stack.ingest}/metrics", timeout=5).text
    assert _value(ingest, r"^freshrec_ingest_events_accepted_total") >= SLICE

    user = str(int(ml.users[0]))
    body = httpx.post(
        f"{stack.ranker}/v1/recommend", json={"user_id": user, "k": 10}, timeout=10
    ).json()
    assert body["fallback"] is False and len(body["items"]) == 10
    ranker = httpx.get(f"{stack.ranker}/metrics", timeout=5).text
    assert _value(ranker, r"^freshrec_ranker_served_row_age_seconds_count ") > 0
    assert _value(ranker, r'^freshrec_index_items\{index="item"\}') > 0
