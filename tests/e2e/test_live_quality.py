"""The live system agrees with the evaluation: it beats popularity on MovieLens's later ratings.

The first 80 % of MovieLens-100K (by time) is replayed through ingest → Kafka → trainer; then
the running ranker is asked `/v1/recommend` (k=50, the user's rated items excluded) for every
user who rates anything in the last 20 %, and Recall@50 is scored against each user's later
items. Popularity computed on the same prefix, with the same exclusions, is the baseline. The
figures are printed and recorded in docs/evaluation.md ("The live system"), split by whether
the ranker answered from the user's row or from its fallback.

The replay sends each event with its user's age, gender and occupation as context (what
`make eval` replays), and each request carries the same context. The trainer takes
micro-batches of at most 32 events (`FRESHREC_BATCH_SIZE`), near the evaluation's cadence: at
live rates the trainer commits a partial batch every `FRESHREC_MAX_BATCH_WAIT_S`, but a
full-speed replay of seven months in a minute would otherwise fill 1,024-event batches
spanning days of event time, which no live deployment trains on. The cadence was chosen on
the first half of the stream (docs/evaluation.md, "The live system").
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from freshrec.offline.data import replay
from freshrec.offline.data.movielens import load_movielens, movielens_events
from freshrec.offline.evaluation.live import LiveAnswer, LiveQuestions
from tests.e2e.conftest import Stack
from tests.e2e.streams import consumed
from tests.waiting import wait_until

K = 50
PREFIX = 0.8
BATCH = 32


FEED_LAGS = ("freshrec_ranker_popularity_feed_lag_seconds", "freshrec_index_feed_lag_seconds")


def caught_up(ranker: str) -> bool:
    """Whether the ranker's popularity and index both report reaching the item feed's end."""
    try:
        text = httpx.get(f"{ranker}/metrics", timeout=10).text
    except httpx.HTTPError:
        return False
    lags = [
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name in FEED_LAGS
        for sample in family.samples
    ]
    return len(lags) >= len(FEED_LAGS) and not any(lags)


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"FRESHREC_BATCH_SIZE": str(BATCH)}


@pytest.mark.timeout(720)
def test_the_live_ranker_beats_popularity_on_later_ratings(running_stack: Stack) -> None:
    stack = running_stack
    questions = LiveQuestions(
        list(movielens_events(load_movielens(), user_context=True)), prefix=PREFIX, k=K
    )
    report = replay(questions.prefix, stack.ingest, api_key=stack.api_key, progress=False)
    assert report.sent == questions.cut and report.rejected == 0
    wait_until(lambda: consumed(stack) >= questions.cut, 540, f"{questions.cut} events trained")

    def ranker_ready() -> bool:
        answer = httpx.post(
            f"{stack.ranker}/v1/recommend",
            json={"user_id": questions.users[0], "k": K},
            timeout=10,
        ).json()
        return answer.get("model_version") is not None and len(answer.get("items", [])) == K

    wait_until(ranker_ready, 120, "the ranker serving a trained model")
    # the fallback's popularity and the index read the whole prefix's feed first
    wait_until(lambda: caught_up(stack.ranker), 120, "the ranker at the end of the item feed")
    answers: dict[str, LiveAnswer] = {}
    with httpx.Client(base_url=stack.ranker, timeout=30) as client:
        for user in questions.users:
            response = client.post(
                "/v1/recommend",
                json={
                    "user_id": user,
                    "k": K,
                    "context": questions.context[user],
                    "exclude_item_ids": questions.excluded(user),
                },
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            answers[user] = ([i["item_id"] for i in answer["items"]], bool(answer["fallback"]))
    score = questions.score(answers)
    print("live system: " + "\n".join(score.lines(K)))
    assert score.recall > score.popularity
