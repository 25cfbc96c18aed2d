"""The replayed stream, prepared once and shared by every run of an evaluation.

Events are validated with the product's `Event` model and encoded with `encode_event` into
the exact Kafka message values the trainer consumes. The examples the trainer will build are
derived here too, with the product's own `ExampleBuilder` fed the same events: the builder is
deterministic and event-by-event, so it yields the trainer's examples whatever the batch
boundaries, and the harness can score each example before the trainer sees it.

Ranking queries are fixed here as well, so every method answers the same ones: for a sampled
positive example of user `u` on item `j` at stream position `e`, the candidates are every item
seen in the stream before `e`, minus those `u` interacted with before `e`, plus `j` itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from freshrec.errors import InvalidInput
from freshrec.models.features import context_row_ids, entity_row_ids
from freshrec.stream.events import Event
from freshrec.stream.messages import encode_event
from freshrec.training.examples import ExampleBuilder, ExampleConfig
from freshrec.training.trainer import Message

__all__ = ["EVAL_TOPIC", "EvalStream", "Queries", "plan_batches", "prepare_stream"]

_INTERACTIONS = frozenset({"rating", "click", "like", "purchase"})

EVAL_TOPIC = "freshrec-eval"
"""Topic name the replayed messages carry (they never touch Kafka)."""

Int64Array = npt.NDArray[np.int64]
Float64Array = npt.NDArray[np.float64]
IdArray = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class Queries:
    """Ranking queries, ordered by example.

    Attributes:
        example: `(Q,)` int64 index of the query's example (a positive).
        available: `(Q,)` int64; catalog items `[0, available)` were seen before the query.
        target: `(Q,)` int64 catalog index of the held item.
        history: `Q` int64 arrays: catalog indexes the user interacted with before the query
            (never containing the target).
    """

    example: Int64Array
    available: Int64Array
    target: Int64Array
    history: list[Int64Array]

    def __len__(self) -> int:
        return int(self.example.shape[0])


@dataclass(frozen=True)
class EvalStream:
    """Events, messages, examples, catalog and queries of one replay.

    Attributes:
        event_ids: `E` event ids, in stream order.
        messages: `E` encoded messages (what the trainer consumes), offsets `0..E-1`.
        event_time: `(E,)` float64 event times, non-decreasing.
        event_item: `(E,)` int64 catalog index of each event's item.
        event_user: `(E,)` int64 index of each event's user (order of first appearance).
        event_interaction: `(E,)` bool: the event is an interaction (a rating, click, like
            or purchase; not an impression).
        window_edges: `(W + 1,)` int64 event indexes cutting the stream into windows.
        ex_event: `(X,)` int64 index of the event that completes each example (non-decreasing).
        ex_user: `(X,)` uint64 user row ids.
        ex_item: `(X,)` uint64 item row ids.
        ex_item_index: `(X,)` int64 catalog index of each example's item (-1: not in catalog).
        ex_user_index: `(X,)` int64 user index (as in `event_user`) of each example's user.
        ex_label: `(X,)` float64 0/1 labels.
        ex_time: `(X,)` float64 event times.
        ex_window: `(X,)` int64 window of each example.
        ctx_ids: `(C,)` uint64 context row ids of all examples, example by example.
        ctx_example: `(C,)` int64 example index of each context id.
        catalog: `(I,)` uint64 item row ids in order of first appearance.
        universe: table name -> `(U,)` uint64 sorted unique row ids the stream touches.
        queries: the ranking queries.
    """

    event_ids: list[str]
    messages: list[Message]
    event_time: Float64Array
    event_item: Int64Array
    event_user: Int64Array
    event_interaction: npt.NDArray[np.bool_]
    window_edges: Int64Array
    ex_event: Int64Array
    ex_user: IdArray
    ex_item: IdArray
    ex_item_index: Int64Array
    ex_user_index: Int64Array
    ex_label: Float64Array
    ex_time: Float64Array
    ex_window: Int64Array
    ctx_ids: IdArray
    ctx_example: Int64Array
    catalog: IdArray
    universe: dict[str, IdArray]
    queries: Queries

    @property
    def n_events(self) -> int:
        """Number of events `E`."""
        return len(self.messages)

    @property
    def n_examples(self) -> int:
        """Number of examples `X`."""
        return int(self.ex_event.shape[0])

    def example_range(self, start: int, end: int) -> tuple[int, int]:
        """Examples `[lo, hi)` completed by events `[start, end)`."""
        lo, hi = np.searchsorted(self.ex_event, [start, end], side="left")
        return int(lo), int(hi)

    def query_range(self, lo: int, hi: int) -> tuple[int, int]:
        """Queries `[qlo, qhi)` asked about examples `[lo, hi)`."""
        qlo, qhi = np.searchsorted(self.queries.example, [lo, hi], side="left")
        return int(qlo), int(qhi)

    def context_slice(self, lo: int, hi: int) -> tuple[IdArray, Int64Array]:
        """Context ids of examples `[lo, hi)` and their example index relative to `lo`."""
        clo, chi = np.searchsorted(self.ctx_example, [lo, hi], side="left")
        return self.ctx_ids[clo:chi], self.ctx_example[clo:chi] - lo


def _unit(seed: int, key: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def _validate(raw: Mapping[str, Any], index: int) -> Event:
    timestamp = raw.get("timestamp")
    # Replayed history is judged against its own event time, not today's clock.
    now = float(timestamp) if isinstance(timestamp, int | float) else None
    context = {"now": now} if now is not None else {}
    try:
        return Event.model_validate(raw, context=context)
    except ValidationError as exc:
        raise InvalidInput(f"event {index} is invalid: {exc}") from exc


def prepare_stream(
    events: Iterable[Mapping[str, Any]],
    *,
    examples: ExampleConfig,
    windows: int,
    rank_sample: float,
    seed: int,
) -> EvalStream:
    """Validate, encode and index a time-ordered event stream.

    Args:
        events: event dicts in the wire format of `POST /v1/events`, in event-time order.
        examples: the trainer's example config (labels, joins, negatives).
        windows: number of equal-count windows.
        rank_sample: share of positive examples that become ranking queries.
        seed: salts the query sample.

    Returns:
        The prepared stream.

    Raises:
        InvalidInput: an event is invalid, the stream is empty or not in time order.
    """
    parsed = [_validate(raw, i) for i, raw in enumerate(events)]
    if not parsed:
        raise InvalidInput("the event stream is empty")
    times = np.array([e.timestamp for e in parsed], dtype=np.float64)
    if np.any(np.diff(times) < 0):
        bad = int(np.flatnonzero(np.diff(times) < 0)[0]) + 1
        raise InvalidInput(f"events must be in event-time order; event {bad} goes back in time")
    n = len(parsed)
    # accepted_at = event time: the replay has no ingest clock, and decode checks the
    # timestamp against accepted_at.
    messages = [
        Message(EVAL_TOPIC, 0, i, encode_event(e, e.timestamp)) for i, e in enumerate(parsed)
    ]
    window_edges = np.array([(w * n) // windows for w in range(windows + 1)], dtype=np.int64)

    builder = ExampleBuilder(examples)
    catalog_index: dict[str, int] = {}
    catalog_names: list[str] = []
    event_item = np.empty(n, dtype=np.int64)
    event_user = np.empty(n, dtype=np.int64)
    user_index: dict[str, int] = {}
    history: dict[str, list[int]] = {}
    history_sets: dict[str, set[int]] = {}
    ex_event: list[int] = []
    ex_users: list[str] = []
    ex_items: list[str] = []
    ex_labels: list[float] = []
    ex_times: list[float] = []
    ex_contexts: list[Mapping[str, str | int | float]] = []
    q_example: list[int] = []
    q_available: list[int] = []
    q_target: list[int] = []
    q_history: list[Int64Array] = []
    for index, event in enumerate(parsed):
        item = str(event.item_id)
        user = str(event.user_id)
        available = len(catalog_names)
        slot = catalog_index.get(item)
        if slot is None:
            slot = catalog_index[item] = available
            catalog_names.append(item)
        event_item[index] = slot
        event_user[index] = user_index.setdefault(user, len(user_index))
        for example in builder.add([event], [event.timestamp]):
            x = len(ex_event)
            ex_event.append(index)
            ex_users.append(example.user_id)
            ex_items.append(example.item_id)
            ex_labels.append(example.label)
            ex_times.append(example.event_time)
            ex_contexts.append(example.context)
            target = catalog_index.get(example.item_id, -1)
            if (
                example.label > 0.5
                and target >= 0
                and rank_sample > 0.0
                and _unit(seed, f"{event.event_id}\x1f{example.item_id}") < rank_sample
            ):
                seen = history.get(example.user_id, [])
                q_example.append(x)
                q_available.append(available)
                q_target.append(target)
                q_history.append(np.array([i for i in seen if i != target], dtype=np.int64))
        user_seen = history_sets.setdefault(user, set())
        if slot not in user_seen:
            user_seen.add(slot)
            history.setdefault(user, []).append(slot)

    ex_item_index = np.array([catalog_index.get(i, -1) for i in ex_items], dtype=np.int64)
    ex_user_index = np.array([user_index[u] for u in ex_users], dtype=np.int64)
    ctx_ids, ctx_example = context_row_ids(ex_contexts)
    ex_event_arr = np.array(ex_event, dtype=np.int64)
    ex_window = np.searchsorted(window_edges, ex_event_arr, side="right") - 1
    ex_user = entity_row_ids("user", ex_users)
    ex_item = entity_row_ids("item", ex_items)
    catalog = entity_row_ids("item", catalog_names)
    universe = {
        "user": np.unique(
            np.concatenate([ex_user, entity_row_ids("user", [str(e.user_id) for e in parsed])])
        ),
        "item": np.unique(np.concatenate([ex_item, catalog])),
        "context": np.unique(ctx_ids),
    }
    return EvalStream(
        event_ids=[e.event_id for e in parsed],
        messages=messages,
        event_time=times,
        event_item=event_item,
        event_user=event_user,
        event_interaction=np.array([e.type in _INTERACTIONS for e in parsed], dtype=np.bool_),
        window_edges=window_edges,
        ex_event=ex_event_arr,
        ex_user=ex_user,
        ex_item=ex_item,
        ex_item_index=ex_item_index,
        ex_user_index=ex_user_index,
        ex_label=np.array(ex_labels, dtype=np.float64),
        ex_time=np.array(ex_times, dtype=np.float64),
        ex_window=np.clip(ex_window, 0, windows - 1).astype(np.int64),
        ctx_ids=ctx_ids,
        ctx_example=ctx_example,
        catalog=catalog,
        universe=universe,
        queries=Queries(
            example=np.array(q_example, dtype=np.int64),
            available=np.array(q_available, dtype=np.int64),
            target=np.array(q_target, dtype=np.int64),
            history=q_history,
        ),
    )


def plan_batches(
    times: Float64Array,
    batch_size: int,
    max_span_s: float | None,
    cuts: Sequence[float] = (),
) -> list[tuple[int, int]]:
    """Cut a time-ordered stream into micro-batches `[start, end)` of event indexes.

    A batch closes when it holds `batch_size` events, when the next event lies more than
    `max_span_s` after the batch's first event, or when the next event reaches one of `cuts`
    (so a state "trained on everything before time c" exists for each cut `c`).

    Args:
        times: `(E,)` non-decreasing event times.
        batch_size: events per batch, at most.
        max_span_s: longest event-time span of a batch (None: unbounded).
        cuts: event times no batch may straddle.

    Returns:
        Consecutive `(start, end)` pairs covering `[0, E)`.
    """
    n = int(times.shape[0])
    cut_list = sorted(float(c) for c in cuts)
    out: list[tuple[int, int]] = []
    start = 0
    span = float("inf") if max_span_s is None else float(max_span_s)
    values = times.tolist()
    cut_at = 0
    while start < n:
        first = values[start]
        while cut_at < len(cut_list) and cut_list[cut_at] <= first:
            cut_at += 1
        limit = cut_list[cut_at] if cut_at < len(cut_list) else float("inf")
        end = start + 1
        stop = min(n, start + batch_size)
        while end < stop and values[end] - first <= span and values[end] < limit:
            end += 1
        out.append((start, end))
        start = end
    return out
