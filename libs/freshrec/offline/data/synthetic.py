"""A seeded synthetic event stream with a hidden ground truth, for scale and drift experiments.

The world behind the stream:

- **Users** `u<rank>`, rank 0..`n_users`-1, active with Zipf probability over their rank.
  Each user belongs to a taste group (a hash of the id; nothing is stored per user).
- **Items** `i<index>`: `n_items` exist at `start_time`, and new ones arrive at
  `new_items_per_hour` of event time. Each item has a cluster and a quality (hashes of the
  id). Old items are popular (Zipf over the index); a share of every slate shows the newest
  items, so new items get exposure and clicks.
- **Drift**: every `drift_period_s` of event time each taste group moves its preference to
  another item cluster, smoothly (the preference is a blend of this period's and the next
  period's cluster), so a model must keep learning to stay calibrated.
- **Requests**: a user is shown a slate of `slate_size` items; each shown item is an
  `impression` carrying the request id; it is clicked with the hidden probability
  `click_probability(...)`, and the `click` arrives a little later with the same request id.
- **Positive-only streams**: a share of the activity is organic `like` / `purchase` events
  (no impression, no request id) on items of the user's currently preferred cluster.

Memory is bounded by the clicks still pending (at most the clicks of `max_click_delay_s`),
whatever `n_users` and `n_items` are: ids are computed, never listed. The same seed and
config give the same stream, event for event.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field

from freshrec.errors import InvalidInput
from freshrec.table.base import FloatArray

__all__ = [
    "LatentFactorConfig",
    "LatentFactorWorld",
    "SyntheticConfig",
    "SyntheticWorld",
    "synthetic_events",
    "write_event_file",
]

_MASK64 = (1 << 64) - 1
_DEVICES = ("mobile", "web", "tv")
_BLOCK = 1 << 16


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-spread, stable 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _zipf_index(u: float, size: int, exponent: float) -> int:
    """Index in [0, size) drawn with probability ~ (index + 1) ** -exponent.

    Inverse CDF of the continuous power law on [1, size + 1): O(1) time and memory, so
    the population can have millions of members.
    """
    if exponent == 1.0:
        x = (size + 1.0) ** u
    else:
        one_minus = 1.0 - exponent
        x = (1.0 + u * ((size + 1.0) ** one_minus - 1.0)) ** (1.0 / one_minus)
    return min(int(x) - 1, size - 1) if x >= 1.0 else 0


def _parse_id(value: str | int, prefix: str) -> int:
    if isinstance(value, int):
        return value
    if not value.startswith(prefix) or not value[len(prefix) :].isdigit():
        raise InvalidInput(f"{value!r} is not a synthetic id of the form {prefix}<number>")
    return int(value[len(prefix) :])


class SyntheticConfig(BaseModel):
    """Shape of the synthetic world; every field has a sensible default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_users: int = Field(1_000_000, ge=1, description="Users in the population.")
    n_items: int = Field(100_000, ge=1, description="Items in the catalog at start_time.")
    new_items_per_hour: float = Field(
        600.0, ge=0.0, description="New items arriving per hour of event time."
    )
    user_zipf: float = Field(1.05, gt=0.0, description="Zipf exponent of user activity.")
    item_zipf: float = Field(1.1, gt=0.0, description="Zipf exponent of item popularity.")
    n_groups: int = Field(8, ge=2, description="Taste groups (= item clusters).")
    drift_period_s: float = Field(
        6 * 3600.0, gt=0.0, description="Event time after which every group's taste has moved."
    )
    requests_per_s: float = Field(20.0, gt=0.0, description="Requests per second of event time.")
    slate_size: int = Field(5, ge=1, le=100, description="Impressions per request.")
    fresh_share: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of slate slots showing the newest items."
    )
    fresh_window: int = Field(500, ge=1, description="How many of the newest items are 'fresh'.")
    positive_share: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of activity that is organic like/purchase."
    )
    purchase_share: float = Field(
        0.3, ge=0.0, le=1.0, description="Share of organic actions that are purchases."
    )
    base_logit: float = Field(-3.0, description="Click logit of an average, untargeted item.")
    taste_logit: float = Field(3.0, description="Logit added at full taste match.")
    quality_logit: float = Field(1.0, ge=0.0, description="Spread of item quality in logits.")
    position_logit: float = Field(0.15, ge=0.0, description="Logit lost per slate position.")
    max_click_delay_s: float = Field(
        30.0, gt=0.0, description="Clicks arrive up to this long after their impression."
    )
    start_time: float = Field(1_700_000_000.0, description="Event time of the first request.")


class SyntheticWorld:
    """The hidden ground truth and the event generator built on it.

    Args:
        config: the world's shape; defaults when None.
        seed: any integer; equal seeds give equal worlds and streams.
    """

    def __init__(self, config: SyntheticConfig | None = None, seed: int = 0) -> None:
        self.config = config or SyntheticConfig()
        self.seed = seed
        self._salt = _mix64(seed & _MASK64)

    # --- ground truth -------------------------------------------------------------------

    def _hash(self, kind: int, value: int) -> int:
        return _mix64(self._salt ^ _mix64((kind << 56) ^ (value & _MASK64)))

    def _unit(self, kind: int, value: int) -> float:
        return (self._hash(kind, value) >> 11) * (1.0 / (1 << 53))

    def user_group(self, user_id: str | int) -> int:
        """The taste group of a user (`u<rank>` or the rank)."""
        return self._hash(1, _parse_id(user_id, "u")) % self.config.n_groups

    def item_cluster(self, item_id: str | int) -> int:
        """The cluster of an item (`i<index>` or the index)."""
        return self._hash(2, _parse_id(item_id, "i")) % self.config.n_groups

    def item_quality(self, item_id: str | int) -> float:
        """The item's quality in logits, uniform in [-quality_logit, quality_logit]."""
        return self.config.quality_logit * (2.0 * self._unit(3, _parse_id(item_id, "i")) - 1.0)

    def item_created_at(self, item_id: str | int) -> float:
        """Event time at which an item enters the catalog."""
        index = _parse_id(item_id, "i")
        cfg = self.config
        if index < cfg.n_items or cfg.new_items_per_hour <= 0:
            return cfg.start_time
        return cfg.start_time + (index - cfg.n_items + 1) * 3600.0 / cfg.new_items_per_hour

    def catalog_size(self, timestamp: float) -> int:
        """Number of items that exist at `timestamp`."""
        cfg = self.config
        elapsed = max(0.0, timestamp - cfg.start_time)
        return cfg.n_items + int(elapsed * cfg.new_items_per_hour / 3600.0)

    def preferred_clusters(self, group: int, timestamp: float) -> tuple[int, int, float]:
        """A group's taste at a time: (this period's cluster, next period's cluster, blend).

        The group prefers the first cluster with weight `1 - blend` and the second with
        weight `blend`; `blend` grows from 0 to 1 over each drift period.
        """
        cfg = self.config
        position = max(0.0, timestamp - cfg.start_time) / cfg.drift_period_s
        epoch = int(position)
        now = self._hash(4, (group << 32) | epoch) % cfg.n_groups
        nxt = self._hash(4, (group << 32) | (epoch + 1)) % cfg.n_groups
        return now, nxt, position - epoch

    def taste(self, user_id: str | int, item_id: str | int, timestamp: float) -> float:
        """How much the user's group likes the item's cluster at `timestamp`, in [0, 1]."""
        now, nxt, blend = self.preferred_clusters(self.user_group(user_id), timestamp)
        cluster = self.item_cluster(item_id)
        return (1.0 - blend) * (cluster == now) + blend * (cluster == nxt)

    def click_probability(
        self, user_id: str | int, item_id: str | int, timestamp: float, position: int = 0
    ) -> float:
        """The hidden probability that the user clicks the item shown at `position`."""
        cfg = self.config
        logit = (
            cfg.base_logit
            + cfg.taste_logit * self.taste(user_id, item_id, timestamp)
            + self.item_quality(item_id)
            - cfg.position_logit * position
        )
        return 1.0 / (1.0 + math.exp(-logit))

    # --- the stream ---------------------------------------------------------------------

    def events(self, n: int) -> Iterator[dict[str, Any]]:
        """The first `n` events of this world's stream, in event-time order.

        Args:
            n: number of events to yield.

        Yields:
            Event dicts in the wire format of `POST /v1/events`.
        """
        if n < 0:
            raise InvalidInput(f"n must be >= 0, got {n}")
        cfg = self.config
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & _MASK64, 0x5EED]))
        block: list[float] = []
        cursor = 0

        def uniform() -> float:
            # Drawing in blocks keeps numpy's per-call overhead off the per-event path.
            nonlocal block, cursor
            if cursor == len(block):
                block = rng.random(_BLOCK).tolist()
                cursor = 0
            cursor += 1
            return block[cursor - 1]

        emitted = 0
        requests = 0
        clock = cfg.start_time
        # (timestamp, sequence, event): clicks wait here until the stream reaches their time
        pending: list[tuple[float, int, dict[str, Any]]] = []
        sequence = 0

        def stamp(event: dict[str, Any]) -> dict[str, Any]:
            # Ids follow stream order (a click gets its id when it is emitted, not drawn).
            nonlocal emitted
            stamped = {"event_id": f"syn{self.seed}-{emitted}", **event}
            emitted += 1
            return stamped

        while emitted < n:
            clock += -math.log(1.0 - uniform()) / cfg.requests_per_s
            while pending and pending[0][0] <= clock and emitted < n:
                yield stamp(heapq.heappop(pending)[2])
            if emitted >= n:
                break
            rank = _zipf_index(uniform(), cfg.n_users, cfg.user_zipf)
            user = f"u{rank}"
            device = _DEVICES[self._hash(5, rank) % len(_DEVICES)]
            size = self.catalog_size(clock)
            ts = round(clock, 3)

            if uniform() < cfg.positive_share:
                item = self._organic_item(rank, clock, size, uniform)
                purchase = uniform() < cfg.purchase_share
                yield stamp(
                    {
                        "type": "purchase" if purchase else "like",
                        "user_id": user,
                        "item_id": f"i{item}",
                        "request_id": None,
                        "timestamp": ts,
                        "value": round(1.0 + 99.0 * self._unit(6, item), 2) if purchase else None,
                        "context": {"device": device},
                    }
                )
                continue

            request_id = f"syn{self.seed}-r{requests}"
            requests += 1
            fresh_from = max(cfg.n_items, size - cfg.fresh_window)
            for pos in range(cfg.slate_size):
                if size > fresh_from and uniform() < cfg.fresh_share:
                    item = fresh_from + int(uniform() * (size - fresh_from))
                else:
                    item = _zipf_index(uniform(), size, cfg.item_zipf)
                context: dict[str, str | int | float] = {"device": device, "position": pos}
                if emitted >= n:
                    break
                yield stamp(
                    {
                        "type": "impression",
                        "user_id": user,
                        "item_id": f"i{item}",
                        "request_id": request_id,
                        "timestamp": ts,
                        "value": None,
                        "context": context,
                    }
                )
                if uniform() < self.click_probability(rank, item, clock, pos):
                    delay = 0.5 + uniform() * (cfg.max_click_delay_s - 0.5)
                    click_ts = round(clock + max(delay, 0.001), 3)
                    click = {
                        "type": "click",
                        "user_id": user,
                        "item_id": f"i{item}",
                        "request_id": request_id,
                        "timestamp": click_ts,
                        "value": None,
                        "context": dict(context),
                    }
                    heapq.heappush(pending, (click_ts, sequence, click))
                    sequence += 1

    def _organic_item(self, rank: int, clock: float, size: int, uniform: Any) -> int:
        """An item of the user's currently preferred cluster, popular ones more often."""
        now, nxt, blend = self.preferred_clusters(self._hash(1, rank) % self.config.n_groups, clock)
        want = nxt if uniform() < blend else now
        item = 0
        # About n_groups tries on average; the bound keeps a pathological config finite.
        for _ in range(16 * self.config.n_groups):
            item = _zipf_index(uniform(), size, self.config.item_zipf)
            if self.item_cluster(item) == want:
                break
        return item


class LatentFactorConfig(BaseModel):
    """Shape of a latent-factor world: a catalog whose every item is rated a few times."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_items: int = Field(1_000_000, ge=1, description="Items in the catalog.")
    n_users: int = Field(20_000, ge=2, description="Users in the population.")
    factors: int = Field(16, ge=2, description="Dimension of the hidden user/item factors.")
    topics: int = Field(200, ge=1, description="Topic centres the item factors gather around.")
    topic_spread: float = Field(
        0.5, ge=0.0, description="Spread of an item's factor around its topic centre."
    )
    events_per_item: int = Field(
        2, ge=1, description="Ratings per item on average: one each, the rest by popularity."
    )
    item_zipf: float = Field(1.0, gt=0.0, description="Zipf exponent of item popularity.")
    candidates: int = Field(
        32, ge=1, description="Users considered per rating; the best-matching one rates."
    )
    temperature: float = Field(
        0.5, gt=0.0, description="Noise of the choice among candidates (Gumbel scale)."
    )
    drift_period_s: float = Field(
        3600.0, gt=0.0, description="Event time over which every user's taste moves to a new one."
    )
    events_per_s: float = Field(200.0, gt=0.0, description="Ratings per second of event time.")
    start_time: float = Field(1_600_000_000.0, description="Event time of the first rating.")


class LatentFactorWorld:
    """Users and items with hidden factors; ratings follow their inner product, with drift.

    Item `i<k>` has a factor near one of `topics` centres. User `u<k>` has two factors
    and, at event time `t`, the blend `cos(a) f0 + sin(a) f1` with `a` growing by a quarter
    turn every `drift_period_s`: tastes drift smoothly. Every item is rated once, and
    `events_per_item - 1` ratings per item more go to items drawn by Zipf popularity (a
    few head items get thousands, the tail one): a million-item catalog costs a few
    million events. Each rating goes to the best of `candidates` random users by affinity
    plus Gumbel noise, and its value (1-5) grows with the affinity. Arrays:
    `(n_items, factors)` item factors, `(2, n_users, factors)` user factors, float32.

    Args:
        config: the world's shape; defaults when None.
        seed: equal seeds give equal worlds and streams.
    """

    def __init__(self, config: LatentFactorConfig | None = None, seed: int = 0) -> None:
        self.config = cfg = config or LatentFactorConfig()
        self.seed = seed
        rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK64, 0xFAC7]))
        scale = 1.0 / math.sqrt(cfg.factors)
        centres = rng.standard_normal((cfg.topics, cfg.factors), dtype=np.float32)
        topic = rng.integers(0, cfg.topics, size=cfg.n_items)
        noise = rng.standard_normal((cfg.n_items, cfg.factors), dtype=np.float32)
        self.item_factors = (centres[topic] + cfg.topic_spread * noise) * scale
        shape = (cfg.n_users, cfg.factors)
        user_topic = rng.integers(0, cfg.topics, size=(2, cfg.n_users))
        self.user_factors = (
            centres[user_topic] + cfg.topic_spread * rng.standard_normal((2, *shape))
        ).astype(np.float32) * scale

    def users_at(self, users: npt.NDArray[np.int64], timestamp: float) -> FloatArray:
        """`(B, factors)` drifted factors of `(B,)` user indices at `timestamp`."""
        cfg = self.config
        angle = 0.5 * math.pi * max(0.0, timestamp - cfg.start_time) / cfg.drift_period_s
        first, second = self.user_factors[0][users], self.user_factors[1][users]
        blended: FloatArray = math.cos(angle) * first + math.sin(angle) * second
        return blended

    def rating_blocks(self, block: int = 8192) -> Iterator[list[dict[str, Any]]]:
        """The whole stream, `n_items * events_per_item` ratings, in blocks of `block`.

        Args:
            block: events per yielded list.

        Yields:
            Lists of event dicts in the wire format of `POST /v1/events`, in event-time order.
        """
        cfg = self.config
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & _MASK64, 0x57EA]))
        popular = rng.permutation(cfg.n_items)
        extra = cfg.n_items * (cfg.events_per_item - 1)
        ranks = [_zipf_index(u, cfg.n_items, cfg.item_zipf) for u in rng.random(extra).tolist()]
        order = rng.permutation(np.concatenate([np.arange(cfg.n_items), popular[ranks]]))
        for start in range(0, order.shape[0], block):
            items = order[start : start + block]
            clock = cfg.start_time + start / cfg.events_per_s
            users = rng.integers(0, cfg.n_users, size=(items.shape[0], cfg.candidates))
            factors = self.users_at(users.reshape(-1), clock).reshape(*users.shape, -1)
            affinity = np.einsum("bcf,bf->bc", factors, self.item_factors[items])
            gumbel = -np.log(-np.log(rng.random(affinity.shape) + 1e-12) + 1e-12)
            chosen = np.argmax(affinity / cfg.temperature + gumbel, axis=1)
            rows = np.arange(items.shape[0])
            best = affinity[rows, chosen]
            value = np.clip(np.rint(3.0 + 2.0 * np.tanh(best)), 1, 5)
            who = users[rows, chosen]
            yield [
                {
                    "event_id": f"lf{self.seed}-{start + j}",
                    "type": "rating",
                    "user_id": f"u{int(who[j])}",
                    "item_id": f"i{int(items[j])}",
                    "request_id": None,
                    "timestamp": round(clock + j / cfg.events_per_s, 3),
                    "value": float(value[j]),
                    "context": {},
                }
                for j in range(items.shape[0])
            ]


def synthetic_events(
    n: int, seed: int = 0, config: SyntheticConfig | None = None
) -> Iterator[dict[str, Any]]:
    """The first `n` events of the synthetic world with `seed` (see the module docstring).

    Args:
        n: number of events.
        seed: equal seeds (and configs) give equal streams.
        config: the world's shape; defaults when None.

    Yields:
        Event dicts in the wire format of `POST /v1/events`, in event-time order.
    """
    return SyntheticWorld(config, seed).events(n)


def write_event_file(
    path: Path | str, events: Iterable[Mapping[str, Any]], *, stdout: IO[bytes] | None = None
) -> int:
    """Write events as JSON Lines, the format `read_event_file` reads back.

    Args:
        path: the file; a name ending in `.gz` is gzip-compressed, `-` writes to `stdout`.
        events: event objects in the wire format of `POST /v1/events`.
        stdout: where `-` writes (default: the process's standard output).

    Returns:
        How many events were written.
    """
    name = str(path)
    count = 0
    with contextlib.ExitStack() as stack:
        sink: IO[bytes] | gzip.GzipFile
        if name == "-":
            sink = stdout if stdout is not None else sys.stdout.buffer
        elif name.endswith(".gz"):
            sink = stack.enter_context(gzip.open(name, "wb", compresslevel=5))
        else:
            sink = stack.enter_context(Path(name).open("wb"))
        for event in events:
            sink.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
        sink.flush()
    return count
