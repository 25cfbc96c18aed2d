"""The synthetic stream: deterministic, skewed, drifting, with joinable clicks."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from typing import Any

import pydantic
import pytest

from freshrec.errors import InvalidInput
from freshrec.offline.data.synthetic import SyntheticConfig, SyntheticWorld, synthetic_events

N = 20_000
SMALL = SyntheticConfig(n_users=50_000, n_items=5_000, new_items_per_hour=3_600.0)


@pytest.fixture(scope="module")
def stream() -> list[dict[str, Any]]:
    return list(synthetic_events(N, seed=7, config=SMALL))


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    first = list(synthetic_events(3_000, seed=11))
    assert first == list(synthetic_events(3_000, seed=11))
    other = list(synthetic_events(3_000, seed=12))
    assert [e["item_id"] for e in other] != [e["item_id"] for e in first]


def test_exact_count_unique_ids_and_time_order(stream: list[dict[str, Any]]) -> None:
    assert len(stream) == N
    assert len({e["event_id"] for e in stream}) == N
    times = [e["timestamp"] for e in stream]
    assert times == sorted(times)
    assert times[0] >= SMALL.start_time


def test_events_have_the_wire_shape(stream: list[dict[str, Any]]) -> None:
    keys = {"event_id", "type", "user_id", "item_id", "request_id", "timestamp", "value", "context"}
    kinds = Counter(e["type"] for e in stream)
    assert set(kinds) == {"impression", "click", "like", "purchase"}
    for event in stream:
        assert set(event) == keys
        assert isinstance(event["user_id"], str) and isinstance(event["item_id"], str)
        assert isinstance(event["timestamp"], float)
        assert all(isinstance(v, str | int | float) for v in event["context"].values())


def test_users_and_items_are_zipf_skewed(stream: list[dict[str, Any]]) -> None:
    impressions = [e for e in stream if e["type"] == "impression"]
    items = Counter(e["item_id"] for e in impressions)
    users = Counter(e["user_id"] for e in stream)
    # uniform over 5,000 items would give the top 10 items 0.2% of impressions
    top_items = sum(c for _, c in items.most_common(10)) / len(impressions)
    assert top_items > 0.15
    top_users = sum(c for _, c in users.most_common(10)) / len(stream)
    assert top_users > 0.15
    assert items.most_common(1)[0][0] == "i0"


def test_new_items_appear_over_time(stream: list[dict[str, Any]]) -> None:
    world = SyntheticWorld(SMALL, seed=7)
    new_seen = []
    for event in stream:
        index = int(event["item_id"][1:])
        # nothing is shown or liked before it exists
        assert event["timestamp"] >= world.item_created_at(index) - 1e-3
        if index >= SMALL.n_items:
            new_seen.append(event)
    assert len({e["item_id"] for e in new_seen}) > 50
    half = stream[len(stream) // 2]["timestamp"]
    early = {e["item_id"] for e in new_seen if e["timestamp"] < half}
    late = {e["item_id"] for e in new_seen if e["timestamp"] >= half}
    assert len(late) > len(early)
    assert world.catalog_size(stream[-1]["timestamp"]) > SMALL.n_items


def test_clicks_join_an_earlier_impression(stream: list[dict[str, Any]]) -> None:
    shown: dict[tuple[str, str, str], float] = {}
    clicks = 0
    for event in stream:
        key = (event["request_id"], event["user_id"], event["item_id"])
        if event["type"] == "impression":
            assert event["request_id"]
            shown[key] = event["timestamp"]
        elif event["type"] == "click":
            clicks += 1
            assert key in shown, f"click {event['event_id']} has no earlier impression"
            assert event["timestamp"] > shown[key]
            assert event["timestamp"] - shown[key] <= SMALL.max_click_delay_s + 1e-3
    assert clicks > 200


def test_positive_only_streams_have_no_request(stream: list[dict[str, Any]]) -> None:
    organic = [e for e in stream if e["type"] in ("like", "purchase")]
    assert len(organic) > 0.01 * N  # a tenth of the activity, a slate being 5 impressions
    assert all(e["request_id"] is None for e in organic)
    assert all(e["value"] is None for e in organic if e["type"] == "like")
    assert all(1.0 <= e["value"] <= 100.0 for e in organic if e["type"] == "purchase")


def test_clicks_follow_the_hidden_ground_truth(stream: list[dict[str, Any]]) -> None:
    world = SyntheticWorld(SMALL, seed=7)
    clicked = {(e["request_id"], e["item_id"]) for e in stream if e["type"] == "click"}
    last_impression = max(e["timestamp"] for e in stream if e["type"] == "click") - 60
    p_clicked: list[float] = []
    p_not: list[float] = []
    for e in stream:
        if e["type"] != "impression" or e["timestamp"] > last_impression:
            continue
        p = world.click_probability(
            e["user_id"], e["item_id"], e["timestamp"], e["context"]["position"]
        )
        (p_clicked if (e["request_id"], e["item_id"]) in clicked else p_not).append(p)
    assert sum(p_clicked) / len(p_clicked) > 2 * sum(p_not) / len(p_not)
    # calibrated: the observed click rate matches the mean hidden probability
    rate = len(p_clicked) / (len(p_clicked) + len(p_not))
    mean_p = (sum(p_clicked) + sum(p_not)) / (len(p_clicked) + len(p_not))
    assert abs(rate - mean_p) < 0.02


def test_organic_actions_follow_the_current_taste(stream: list[dict[str, Any]]) -> None:
    world = SyntheticWorld(SMALL, seed=7)
    organic = [e for e in stream if e["type"] in ("like", "purchase")]
    matched = sum(world.taste(e["user_id"], e["item_id"], e["timestamp"]) > 0 for e in organic)
    assert matched / len(organic) > 0.9  # random items would match about 1 in 8


def test_tastes_drift_between_periods() -> None:
    world = SyntheticWorld(SyntheticConfig(n_groups=8, drift_period_s=100.0), seed=3)
    start = world.config.start_time
    moved = 0
    for group in range(8):
        now, nxt, blend = world.preferred_clusters(group, start + 250.0)
        assert blend == pytest.approx(0.5)
        later_now, _, _ = world.preferred_clusters(group, start + 350.0)
        assert later_now == nxt  # the next period starts where this one was heading
        moved += now != nxt
    assert moved >= 4
    group_item = next(
        (g, i)
        for g in range(8)
        for i in range(1000)
        if world.item_cluster(i) == world.preferred_clusters(g, start)[0]
        and world.item_cluster(i) != world.preferred_clusters(g, start)[1]
    )
    user = next(u for u in range(10_000) if world.user_group(u) == group_item[0])
    item = group_item[1]
    assert world.taste(user, item, start) == 1.0
    assert world.taste(user, item, start + 50.0) == pytest.approx(0.5)
    assert world.click_probability(user, item, start) > world.click_probability(
        user, item, start + 99.0
    )


def test_huge_id_spaces_cost_no_memory() -> None:
    config = SyntheticConfig(n_users=10**12, n_items=10**9, user_zipf=0.6, item_zipf=0.6)
    events = list(synthetic_events(2_000, seed=1, config=config))
    users = {e["user_id"] for e in events}
    assert len(users) > 300
    assert max(int(u[1:]) for u in users) > 10**9


def test_generator_is_lazy() -> None:
    head = list(islice(synthetic_events(10**12, seed=5), 10))
    assert len(head) == 10


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidInput):
        list(synthetic_events(-1))
    with pytest.raises(pydantic.ValidationError):
        SyntheticConfig(n_groups=1)
    with pytest.raises(pydantic.ValidationError):
        SyntheticConfig(nonsense=1)  # type: ignore[call-arg]
    with pytest.raises(InvalidInput, match="not a synthetic id"):
        SyntheticWorld().click_probability("user-1", "i1", 0.0)
