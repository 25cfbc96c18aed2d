"""Events to training examples.

- **Explicit feedback**: a `rating` event is one example, positive when its value reaches
  `positive_rating`.
- **Implicit feedback**: an impression waits up to `join_window_s` of event time for an action
  (`click`, `like`, `purchase`) with the same `request_id` and item. A joined pair is a
  positive; an impression whose window closes without one is a negative, kept with
  probability `negative_keep_rate` = r. Training on kept negatives shifts the learned log-odds
  by `-log r`; serving adds `logit_offset = log r` back, so probabilities stay calibrated.
- **Positive-only actions** (no `request_id`, or none matching): a positive, plus
  `sampled_negatives` items drawn from recently seen items as negatives.

Each example also says whether it is an *interaction* (a rating of any value, a joined or
positive-only action): the retrieval head's positives. Unanswered impressions and sampled
negatives are preference negatives only.

Every random choice is a hash of the event id, never a generator's state, so a replay of the
same stream gives the same examples whatever the batch boundaries. The builder's pending
state is small and bounded (`max_pending`) and is saved in the trainer's checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Example", "ExampleBuilder", "ExampleConfig", "unit_hash"]

_ACTIONS = frozenset({"click", "like", "purchase"})


class ExampleConfig(BaseModel):
    """How events become examples (the trainer process reads `FRESHREC_EXAMPLES__<FIELD>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    positive_rating: float = Field(4.0, description="Ratings at or above are positives.")
    join_window_s: float = Field(
        600.0, gt=0, description="Event-time window an impression waits for its action."
    )
    negative_keep_rate: float = Field(
        1.0, gt=0, le=1, description="Share of unanswered impressions kept as negatives."
    )
    sampled_negatives: int = Field(
        2, ge=0, le=100, description="Negatives sampled per positive-only action."
    )
    item_pool: int = Field(
        2000, ge=1, description="Recent distinct items sampled negatives are drawn from."
    )
    max_pending: int = Field(
        200_000, ge=1, description="Impressions held at most; the oldest closes early beyond it."
    )

    @property
    def logit_offset(self) -> float:
        """Added to logits at serving to undo negative subsampling."""
        return math.log(self.negative_keep_rate)


class EventFields(Protocol):
    """What the builder reads of an event (`Event`, `AcceptedEvent` and `ConsumedEvent`)."""

    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def user_id(self) -> str | int: ...
    @property
    def item_id(self) -> str | int: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def value(self) -> float | None: ...
    @property
    def context(self) -> dict[str, str | int | float] | None: ...


class Example(NamedTuple):
    """One labelled (user, item, context) triple.

    `label` is the preference (the ranking head's target); `interaction` says whether the
    user interacted with the item at all (a rating of any value, or an action), the
    retrieval head's positive. Unanswered impressions and sampled negatives are not.
    """

    user_id: str
    item_id: str
    context: dict[str, str | int | float]
    label: float
    event_time: float
    accepted_at: float
    interaction: bool = True


def unit_hash(key: str) -> float:
    """A uniform draw in `[0, 1)` fixed by `key` (BLAKE2b)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


@dataclass
class _Pending:
    user_id: str
    item_id: str
    context: dict[str, str | int | float]
    event_id: str
    event_time: float
    accepted_at: float


@dataclass
class ExampleBuilder:
    """Turns a stream of events into examples; deterministic and checkpointable."""

    config: ExampleConfig = field(default_factory=ExampleConfig)
    watermark: float = 0.0
    _pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)
    _joined: OrderedDict[str, float] = field(default_factory=OrderedDict)
    _pool: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def add(self, events: Sequence[EventFields], accepted_at: Sequence[float]) -> list[Example]:
        """Examples that `events` complete, in stream order.

        Args:
            events: decoded events in the order they were consumed.
            accepted_at: ingest wall time of each event (for the freshness metric).
        """
        out: list[Example] = []
        for event, accepted in zip(events, accepted_at, strict=True):
            self.watermark = max(self.watermark, event.timestamp)
            user, item = str(event.user_id), str(event.item_id)
            context = event.context or {}  # never mutated: examples only read it
            if event.type == "rating":
                label = 1.0 if (event.value or 0.0) >= self.config.positive_rating else 0.0
                out.append(Example(user, item, context, label, event.timestamp, accepted))
            elif event.type == "impression" and event.request_id is not None:
                key = f"{event.request_id}\x1f{item}"
                if key not in self._joined and key not in self._pending:
                    self._pending[key] = _Pending(
                        user, item, context, event.event_id, event.timestamp, accepted
                    )
            elif event.type in _ACTIONS:
                out.extend(self._action(event, user, item, context, accepted))
            self._remember_item(item)
            out.extend(self._close(self.watermark - self.config.join_window_s))
        return out

    def _action(
        self,
        event: EventFields,
        user: str,
        item: str,
        context: dict[str, str | int | float],
        accepted: float,
    ) -> list[Example]:
        key = f"{event.request_id}\x1f{item}" if event.request_id is not None else None
        if key is not None and key in self._joined:
            return []  # a second action on the same impression adds nothing
        if key is not None and key in self._pending:
            imp = self._pending.pop(key)
            self._joined[key] = event.timestamp
            return [Example(user, item, imp.context or context, 1.0, event.timestamp, accepted)]
        if key is not None:
            self._joined[key] = event.timestamp  # a late impression must not become a negative
        out = [Example(user, item, context, 1.0, event.timestamp, accepted)]
        candidates = [i for i in self._pool if i != item]
        for j in range(min(self.config.sampled_negatives, len(candidates))):
            pick = candidates[int(unit_hash(f"{event.event_id}:{j}") * len(candidates))]
            out.append(Example(user, pick, context, 0.0, event.timestamp, accepted, False))
        return out

    def recent_items(self) -> list[str]:
        """The pool of recently seen distinct items (oldest first), at most `item_pool`."""
        return list(self._pool)

    def _remember_item(self, item: str) -> None:
        self._pool.pop(item, None)
        self._pool[item] = None
        if len(self._pool) > self.config.item_pool:
            self._pool.popitem(last=False)

    def _close(self, horizon: float) -> list[Example]:
        out: list[Example] = []
        while self._pending:
            imp = next(iter(self._pending.values()))
            if imp.event_time >= horizon and len(self._pending) <= self.config.max_pending:
                break
            self._pending.popitem(last=False)
            if unit_hash(imp.event_id) < self.config.negative_keep_rate:
                out.append(
                    Example(
                        imp.user_id,
                        imp.item_id,
                        imp.context,
                        0.0,
                        imp.event_time,
                        imp.accepted_at,
                        False,
                    )
                )
        while self._joined and next(iter(self._joined.values())) < horizon:
            self._joined.popitem(last=False)
        return out

    def state(self) -> bytes:
        """The pending state, for the trainer's checkpoint."""
        return orjson.dumps(
            {
                "watermark": self.watermark,
                "pending": [[k, vars(p)] for k, p in self._pending.items()],
                "joined": list(self._joined.items()),
                "pool": list(self._pool),
            }
        )

    def load_state(self, blob: bytes) -> None:
        """Restore what `state` saved."""
        raw: dict[str, Any] = orjson.loads(blob)
        self.watermark = float(raw["watermark"])
        self._pending = OrderedDict((k, _Pending(**p)) for k, p in raw["pending"])
        self._joined = OrderedDict((k, float(t)) for k, t in raw["joined"])
        self._pool = OrderedDict((i, None) for i in raw["pool"])
