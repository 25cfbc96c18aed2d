"""The live protocol's questions, scoring and in-process answers."""

from __future__ import annotations

import pytest

from freshrec.offline.evaluation.live import (
    LiveAnswer,
    LiveQuestions,
    answer_in_process,
    train_prefix,
)
from freshrec.retrieval.config import FlatConfig
from freshrec.table import load_tables, open_tables
from freshrec.table.memory import InMemoryTableBackend
from services.trainer.main import build_trainer
from services.trainer.settings import TrainerSettings
from tests.unit.evaluation.synthetic import synthetic_ratings


def _event(n: int, user: str, item: str) -> dict[str, object]:
    return {"event_id": f"e{n}", "user_id": user, "item_id": item, "timestamp": float(n)}


def test_later_items_exclude_the_prefix_and_recall_is_scored_per_group() -> None:
    stream = [
        _event(0, "a", "x"), _event(1, "a", "y"), _event(2, "b", "x"), _event(3, "c", "y"),
        _event(4, "d", "z"),  # the prefix ends here
        _event(5, "a", "z"), _event(6, "a", "x"), _event(7, "c", "w"), _event(8, "b", "z"),
        _event(9, "d", "y"),
    ]  # fmt: skip
    questions = LiveQuestions(stream, prefix=0.5, k=2)
    assert questions.cut == 5 and questions.users == ["a", "b", "c", "d"]
    # a rated x before the cut: x again later is not something a recommendation can find
    assert questions.later == {"a": {"z"}, "b": {"z"}, "c": {"w"}, "d": {"y"}}
    assert questions.excluded("a") == ["x", "y"] and questions.excluded("c") == ["y"]
    assert questions.popular == ["x", "y", "z"]
    answers: dict[str, LiveAnswer] = {
        "a": (["z", "w"], False),  # found
        "b": (["y", "w"], False),
        "c": (["w", "q"], True),  # found, by the fallback
        "d": (["q", "r"], False),
    }
    score = questions.score(answers)
    assert score.recall == pytest.approx(0.5)
    assert score.users == 4 and score.fallbacks == 1
    # popularity without each user's prefix items: a [z], b [y, z], c [x, z], d [x, y]
    assert score.popularity == pytest.approx(0.75)
    assert score.groups[(True, True)] == (1, 1.0, 0.0)
    n, recall, popular = score.groups[(False, True)]
    assert n == 3 and recall == pytest.approx(1 / 3) and popular == pytest.approx(1.0)


def test_the_recommender_answers_from_the_trained_tables() -> None:
    events = synthetic_ratings(600)
    questions = LiveQuestions(events, prefix=0.7, k=10)
    backend = InMemoryTableBackend()
    settings = TrainerSettings()
    train_prefix(build_trainer(settings, backend, None), questions.prefix, batch_size=32)
    tables = open_tables(load_tables(settings.table_config), backend)
    answers = answer_in_process(
        questions, tables, index=FlatConfig(), candidates=50, like_weight=1.0, user_context=True
    )
    assert sorted(answers) == questions.users
    for user, (items, fallback) in answers.items():
        assert len(items) == 10 and len(set(items)) == 10
        assert not set(items) & set(questions.excluded(user))
        # a user with prefix events has a row: answered from it, not from the fallback
        assert fallback == (not questions.excluded(user))
    score = questions.score(answers)
    assert 0.0 <= score.popularity <= 1.0 and score.recall > 0.0
