"""The live system agrees with the evaluation: it beats popularity on MovieLens's later ratings.

The first 80 % of MovieLens-100K (by time) is replayed through ingest → Kafka → trainer; then
the running ranker is asked `/v1/recommend` (k=50, the user's rated items excluded) for every
user who rates anything in the last 20 %, and Recall@50 is scored against each user's later
items. Popularity computed on the same prefix, with the same exclusions, is the baseline. The
figures are printed and recorded in docs/evaluation.md ("The live system"), split by whether
the ranker answered from the user's row or from its fallback.

Today the live system does NOT beat popularity on this protocol (Recall@50 0.185-0.187 against
0.210, every group of users below it), while the prequential evaluation has it well above: the
test is a strict expected failure, so it still measures on every run and turns red the day
the live system wins, when the marker must go.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import httpx
import pytest

from freshrec.offline.data import replay
from freshrec.offline.data.movielens import load_movielens, movielens_events
from tests.e2e.conftest import Stack
from tests.e2e.streams import consumed
from tests.waiting import wait_until

K = 50
PREFIX = 0.8


def _recall(top: list[str], later: set[str]) -> float:
    return len(set(top) & later) / len(later)


@pytest.mark.xfail(
    strict=True,
    reason="measured: the live ranker's Recall@50 is below popularity's (0.185 vs 0.210); "
    "see docs/evaluation.md, 'The live system'",
)
def test_the_live_ranker_beats_popularity_on_later_ratings(running_stack: Stack) -> None:
    stack = running_stack
    events = list(movielens_events(load_movielens()))
    cut = int(len(events) * PREFIX)
    prefix, suffix = events[:cut], events[cut:]
    report = replay(prefix, stack.ingest, api_key=stack.api_key, progress=False)
    assert report.sent == cut and report.rejected == 0
    wait_until(lambda: consumed(stack) >= cut, 300, f"{cut} events trained")

    rated: dict[str, set[str]] = defaultdict(set)
    for event in prefix:
        rated[str(event["user_id"])].add(str(event["item_id"]))
    later: dict[str, set[str]] = defaultdict(set)
    for event in suffix:
        user, item = str(event["user_id"]), str(event["item_id"])
        if item not in rated[user]:
            later[user].add(item)
    users = sorted(user for user, items in later.items() if items)
    popular = [item for item, _ in Counter(str(e["item_id"]) for e in prefix).most_common()]

    def ranker_ready() -> bool:
        answer = httpx.post(
            f"{stack.ranker}/v1/recommend", json={"user_id": users[0], "k": K}, timeout=10
        ).json()
        return answer.get("model_version") is not None and len(answer.get("items", [])) == K

    wait_until(ranker_ready, 120, "the ranker serving a trained model")
    online, baseline, fallbacks = [], [], 0
    groups: dict[tuple[bool, bool], list[tuple[float, float]]] = defaultdict(list)
    with httpx.Client(base_url=stack.ranker, timeout=30) as client:
        for user in users:
            response = client.post(
                "/v1/recommend",
                json={"user_id": user, "k": K, "exclude_item_ids": sorted(rated[user])},
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            fallbacks += answer["fallback"]
            online.append(_recall([i["item_id"] for i in answer["items"]], later[user]))
            top = [item for item in popular if item not in rated[user]][:K]
            baseline.append(_recall(top, later[user]))
            groups[(bool(answer["fallback"]), bool(rated[user]))].append((online[-1], baseline[-1]))
    live, pop = sum(online) / len(users), sum(baseline) / len(users)
    print(
        f"live system: Recall@{K} {live:.4f} against popularity {pop:.4f} on the same prefix; "
        f"{len(users)} users of the last {1 - PREFIX:.0%}, {fallbacks} answered by the fallback"
    )
    for (fallback, seen), pairs in sorted(groups.items()):
        mean_live = sum(p[0] for p in pairs) / len(pairs)
        mean_pop = sum(p[1] for p in pairs) / len(pairs)
        print(
            f"  fallback={fallback} seen_before={seen}: {len(pairs)} users, "
            f"live {mean_live:.4f}, popularity {mean_pop:.4f}"
        )
    assert live > pop
