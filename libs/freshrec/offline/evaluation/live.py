"""The live system's question, asked once: train on a prefix of the stream, then recommend.

The prequential replay ranks each positive at its own time. The live protocol asks what a
running deployment answers: the first part of the stream (by time) is trained, then every
user who interacts in a later span is asked for top-k once (their earlier items excluded),
and Recall@k is scored against all of their later items. The baseline is popularity counted
on the same prefix, with the same exclusions.

`LiveQuestions` holds the questions and scores any answers: the e2e test asks the running
ranker over HTTP, and `answer_in_process` asks the same `Recommender` over in-memory tables
after training the same `OnlineTrainer` (what `freshrec eval-live` runs in a minute or two,
so that settings can be chosen on an early part of the stream, never on the reported one).
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from freshrec.ranking.model_holder import ModelHolder
from freshrec.ranking.popularity import PopularityTracker
from freshrec.ranking.recommender import Query, Recommender
from freshrec.retrieval import IndexFollower, build_retriever
from freshrec.retrieval.config import ExactConfig, FlatConfig, HnswConfig, IvfConfig, SplitConfig
from freshrec.stream.base import Message
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.table.tables import Tables
from freshrec.training.trainer import OnlineTrainer

__all__ = ["LiveAnswer", "LiveQuestions", "LiveScore", "answer_in_process", "train_prefix"]

LiveAnswer = tuple[list[str], bool]
"""An answer: the recommended item ids (best first) and whether the fallback gave them."""


@dataclass(frozen=True)
class LiveScore:
    """Recall@k of the answers and of popularity, overall and per group of users.

    Attributes:
        recall: mean Recall@k of the answers.
        popularity: mean Recall@k of popularity on the prefix.
        users: how many users were asked.
        fallbacks: how many answers came from the fallback.
        groups: `(fallback, seen before)` → `(users, recall, popularity)`.
    """

    recall: float
    popularity: float
    users: int
    fallbacks: int
    groups: dict[tuple[bool, bool], tuple[int, float, float]] = field(default_factory=dict)

    def lines(self, k: int) -> list[str]:
        """The score as printable lines."""
        out = [
            f"Recall@{k} {self.recall:.4f} against popularity {self.popularity:.4f} on the "
            f"same prefix; {self.users} users, {self.fallbacks} answered by the fallback"
        ]
        for (fallback, seen), (n, recall, popular) in sorted(self.groups.items()):
            out.append(
                f"  fallback={fallback} seen_before={seen}: {n} users, "
                f"answers {recall:.4f}, popularity {popular:.4f}"
            )
        return out


class LiveQuestions:
    """Who is asked after a prefix of `events`, and how their answers score.

    Args:
        events: the whole stream, in event-time order (wire-format dicts).
        prefix: the trained fraction of the stream, in (0, 1).
        end: later events up to this fraction are what users interact with next.
        k: recommendations per user.
    """

    def __init__(
        self,
        events: Sequence[Mapping[str, Any]],
        *,
        prefix: float = 0.8,
        end: float = 1.0,
        k: int = 50,
    ) -> None:
        if not 0.0 < prefix < end <= 1.0:
            raise ValueError("need 0 < prefix < end <= 1")
        self.k = k
        self.cut = int(len(events) * prefix)
        self.prefix = events[: self.cut]
        later_events = events[self.cut : int(len(events) * end)]
        self.rated: dict[str, set[str]] = defaultdict(set)
        for event in self.prefix:
            self.rated[str(event["user_id"])].add(str(event["item_id"]))
        self.later: dict[str, set[str]] = defaultdict(set)
        for event in later_events:
            user, item = str(event["user_id"]), str(event["item_id"])
            if item not in self.rated[user]:
                self.later[user].add(item)
        self.users = sorted(user for user, items in self.later.items() if items)
        self.context = {str(e["user_id"]): e.get("context") for e in events}
        counts = Counter(str(e["item_id"]) for e in self.prefix)
        self.popular = [item for item, _ in counts.most_common()]

    def excluded(self, user: str) -> list[str]:
        """The user's prefix items, sorted (excluded from their answer)."""
        return sorted(self.rated.get(user, ()))

    def score(self, answers: Mapping[str, LiveAnswer]) -> LiveScore:
        """Recall@k of `answers` (one per asked user) against popularity's."""
        groups: dict[tuple[bool, bool], list[tuple[float, float]]] = defaultdict(list)
        for user in self.users:
            items, fallback = answers[user]
            later = self.later[user]
            recall = len(set(items[: self.k]) & later) / len(later)
            top = [item for item in self.popular if item not in self.rated[user]][: self.k]
            groups[(fallback, bool(self.rated.get(user)))].append(
                (recall, len(set(top) & later) / len(later))
            )
        pairs = [pair for group in groups.values() for pair in group]
        n = len(pairs)
        return LiveScore(
            recall=math.fsum(p[0] for p in pairs) / n,
            popularity=math.fsum(p[1] for p in pairs) / n,
            users=n,
            fallbacks=sum(len(g) for (fallback, _), g in groups.items() if fallback),
            groups={
                key: (
                    len(g),
                    math.fsum(p[0] for p in g) / len(g),
                    math.fsum(p[1] for p in g) / len(g),
                )
                for key, g in groups.items()
            },
        )


def train_prefix(
    trainer: OnlineTrainer, events: Sequence[Mapping[str, Any]], batch_size: int
) -> None:
    """Train `events` in micro-batches of `batch_size` as the trainer's loop would (one
    partition, consecutive offsets), then publish the dense model."""
    accepted_at = time.time()  # ingest's stamp; the events' own times are all before it
    messages = [
        Message("events", 0, offset, encode_event(Event(**event), accepted_at))
        for offset, event in enumerate(events)
    ]
    for start in range(0, len(messages), batch_size):
        trainer.train_batch(messages[start : start + batch_size])
    trainer.publish_pending(force=True)


def answer_in_process(
    questions: LiveQuestions,
    tables: Tables,
    *,
    index: ExactConfig | FlatConfig | IvfConfig | HnswConfig | SplitConfig,
    candidates: int,
    like_weight: float,
    user_context: bool,
) -> dict[str, LiveAnswer]:
    """Ask the ranker's `Recommender` over `tables` (already trained) for every user.

    Args:
        questions: who to ask.
        tables: the trained `user`, `item` and `context` stores (their backend holds the
            published model).
        index: the ranker's index config.
        candidates: retrieval candidates the ranking head re-orders.
        like_weight: the serving score's weight of `log P(like | interact)`.
        user_context: send each user's context (from their events) with the request.

    Returns:
        One answer per asked user.
    """
    retriever = build_retriever(index, tables.item.config.dim)
    follower = IndexFollower(tables.item, retriever, None, snapshot_interval_s=None)
    follower.bootstrap()
    while follower.poll_once(block_ms=None):
        pass
    popularity = PopularityTracker(tables.item)
    while popularity.poll_once(count=5000):
        pass
    models = ModelHolder(tables.backend)
    models.refresh()
    recommender = Recommender(
        tables, retriever, models, popularity, candidates=candidates, like_weight=like_weight
    )
    answers: dict[str, LiveAnswer] = {}
    for user in questions.users:
        context = questions.context.get(user) if user_context else None
        query = Query(user, questions.k, context, tuple(questions.excluded(user)))
        answer = recommender.recommend_batch([query])[0]
        answers[user] = (answer.item_ids, answer.fallback)
    return answers
