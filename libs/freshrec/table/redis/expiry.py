"""Expiry of the Redis store: the Lua scripts and the walk over the expiry index.

Rows are indexed per time bucket (``ns:t:<table>:x:<bucket>``, packed ids appended on write).
Expiring visits the buckets whose rows may have gone, checks each row inside Redis (a Lua
script, `_EXPIRE_CHUNK` rows per call so Redis blocks for milliseconds) and announces the
removed ids on the change feed in the same script. See `docs/specs/table.md`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np
import redis
from redis.client import Pipeline

from freshrec.table.admission import keeps_counts
from freshrec.table.config import TableConfig
from freshrec.table.expiry import bucket_width, event_cutoff, pending_generation
from freshrec.table.records import IdArray
from freshrec.table.redis.keys import TableKeys, unpack_ids

__all__ = ["TOMBSTONES_LUA", "RedisExpiry"]

# Ids per Lua call when expiring, so one call blocks Redis for milliseconds, not seconds.
_EXPIRE_CHUNK = 4096

# Announces the ids in the Lua list `gone` on the change feed (KEYS[1], trimmed to about
# ARGV[2] entries) and counts them in the table's counters (KEYS[2]); shared by both scripts.
TOMBSTONES_LUA = """
if #gone > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'op', 'delete', 'ids',
             table.concat(gone))
  redis.call('HINCRBY', KEYS[2], 'expired_total', #gone)
  redis.call('HINCRBY', KEYS[2], 'rows', -#gone)
end
"""

_EXPIRE_EVENT_LUA = (
    """
local cutoff = tonumber(ARGV[1])
local gone = {}
for i = 3, #KEYS do
  local h = redis.call('GETRANGE', KEYS[i], 8, 15)
  if #h == 8 then
    local t = struct.unpack('<d', h)
    if t < cutoff then
      redis.call('DEL', KEYS[i])
      gone[#gone + 1] = string.sub(KEYS[i], -8)
    end
  end
end
"""
    + TOMBSTONES_LUA
    + """
return table.concat(gone)
"""
)

_EXPIRE_WALL_LUA = (
    """
local deadline = tonumber(ARGV[1])
local gone = {}
local waiting = {}
for i = 3, #KEYS do
  local t = redis.call('PEXPIRETIME', KEYS[i])
  if t == -2 then
    gone[#gone + 1] = string.sub(KEYS[i], -8)
  elseif t >= 0 and t <= deadline then
    waiting[#waiting + 1] = string.sub(KEYS[i], -8)
  end
end
"""
    + TOMBSTONES_LUA
    + """
return {table.concat(gone), table.concat(waiting)}
"""
)


class RedisExpiry:
    """Removes a table's idle rows (event clock) or reports the ones Redis let go (wall clock).

    Args:
        client: the backend's client.
        keys: the table's keys.
        config: the table (its `expiry` is set).
        clock: wall clock (unix seconds).
        feed_maxlen: approximate change-feed length kept (MAXLEN ~).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: TableKeys,
        config: TableConfig,
        clock: Callable[[], float],
        feed_maxlen: int,
    ) -> None:
        self.client = client
        self.keys = keys
        self.config = config
        self.clock = clock
        self.feed_maxlen = feed_maxlen
        self._event_script = client.register_script(_EXPIRE_EVENT_LUA)
        self._wall_script = client.register_script(_EXPIRE_WALL_LUA)

    def _buckets_until(self, last: int) -> list[int]:
        members = cast(list[bytes], self.client.zrangebyscore(self.keys.index_set, "-inf", last))
        return sorted(int(m) for m in members)

    def _scan_bucket(
        self,
        bucket: int,
        process: Callable[[IdArray], None],
        finish: Callable[[Pipeline], None],
    ) -> None:
        """Feed a bucket's ids to `process` in chunks, then run `finish` in a MULTI.

        WATCH makes `finish` (which deletes or rewrites the bucket) fail when a writer
        appended meanwhile; the appended tail is then processed too and `finish` retried.
        """
        key = self.keys.bucket(bucket)
        step = 8 * _EXPIRE_CHUNK
        offset = 0
        with self.client.pipeline(transaction=True) as pipe:
            while True:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                length = pipe.strlen(key)
                for start in range(offset, length, step):
                    raw = cast(bytes, pipe.getrange(key, start, min(start + step, length) - 1))
                    process(unpack_ids(raw[: len(raw) - len(raw) % 8]))
                offset = length
                pipe.multi()
                finish(pipe)
                try:
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def event_clock(self, watermark: float) -> IdArray:
        """Remove rows whose last update is older than `watermark` minus `expire_after`.

        Returns:
            `(E,)` uint64 ids removed (their tombstones are on the change feed).
        """
        expiry = self.config.expiry
        assert expiry is not None
        cutoff = event_cutoff(watermark, expiry)
        width = bucket_width(expiry)
        removed: list[IdArray] = []
        done: set[int] = set()

        def process(ids: IdArray) -> None:
            ids = np.unique(ids)
            ids = ids[[i not in done for i in ids.tolist()]] if done else ids
            if not ids.size:
                return
            gone = self._expire_rows(ids, cutoff)
            done.update(gone.tolist())
            removed.append(gone)

        for bucket in self._buckets_until(math.floor(cutoff / width)):
            full = (bucket + 1) * width <= cutoff

            def finish(pipe: Pipeline, bucket: int = bucket, full: bool = full) -> None:
                if full:
                    pipe.delete(self.keys.bucket(bucket))
                    pipe.zrem(self.keys.index_set, str(bucket))

            self._scan_bucket(bucket, process, finish)
        self._drop_pending_generations(watermark)
        return np.concatenate(removed) if removed else np.zeros(0, dtype=np.uint64)

    def _expire_rows(self, ids: IdArray, cutoff: float) -> IdArray:
        """Remove the rows of unique `ids` last updated before `cutoff`; the ids removed."""
        keys = [self.keys.feed.encode(), self.keys.stats.encode(), *self.keys.rows(ids)]
        out = self._event_script(keys=keys, args=[repr(cutoff), self.feed_maxlen])
        return unpack_ids(cast(bytes, out))

    def _drop_pending_generations(self, watermark: float) -> None:
        expiry = self.config.expiry
        if expiry is None or not keeps_counts(self.config.admission):
            return
        current = self.client.hget(self.keys.stats, "pgen")
        gen = int(cast(bytes, current)) if current is not None else 0
        horizon = min(pending_generation(watermark, expiry), gen) - 2
        old = cast(list[bytes], self.client.zrangebyscore(self.keys.pending_set, "-inf", horizon))
        if old:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(*[self.keys.pending(int(g)) for g in old])
            pipe.zrem(self.keys.pending_set, *old)
            pipe.execute()

    def wall_clock(self) -> IdArray:
        """Report rows Redis dropped since the last call (their deadline passed).

        Returns:
            `(E,)` uint64 ids gone (their tombstones are on the change feed).
        """
        expiry = self.config.expiry
        assert expiry is not None
        width = bucket_width(expiry)
        now_ms = self.clock() * 1000.0
        # A bucket's rows all share one deadline; visit buckets whose deadline has passed.
        last = math.floor((now_ms / 1000.0 - expiry.expire_after_s) / width) - 1
        removed: list[IdArray] = []
        done: set[int] = set()
        for bucket in self._buckets_until(last):
            # The same arithmetic as `wall_deadline`, from the bucket number itself.
            deadline_ms = math.ceil(((bucket + 1) * width + expiry.expire_after_s) * 1000.0)
            if deadline_ms > now_ms:
                continue
            waiting: list[bytes] = []

            def process(
                ids: IdArray, deadline_ms: int = deadline_ms, waiting: list[bytes] = waiting
            ) -> None:
                ids = np.unique(ids)
                ids = ids[[i not in done for i in ids.tolist()]] if done else ids
                if not ids.size:
                    return
                keys = [self.keys.feed.encode(), self.keys.stats.encode(), *self.keys.rows(ids)]
                out = self._wall_script(keys=keys, args=[deadline_ms, self.feed_maxlen])
                gone_raw, waiting_raw = cast(list[bytes], out)
                gone = unpack_ids(gone_raw)
                done.update(gone.tolist())
                removed.append(gone)
                waiting.append(waiting_raw)

            def finish(
                pipe: Pipeline, bucket: int = bucket, waiting: list[bytes] = waiting
            ) -> None:
                rest = b"".join(waiting)
                if rest:
                    # Rows Redis has not dropped yet (clock skew): look again next time.
                    pipe.set(self.keys.bucket(bucket), rest)
                else:
                    pipe.delete(self.keys.bucket(bucket))
                    pipe.zrem(self.keys.index_set, str(bucket))

            self._scan_bucket(bucket, process, finish)
        return np.concatenate(removed) if removed else np.zeros(0, dtype=np.uint64)
